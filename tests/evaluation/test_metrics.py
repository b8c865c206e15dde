"""vnsjax.metrics against PySODMetrics, the released misc.py functions and hand-computed cases."""

import cv2
import numpy as np
import pytest

from vnsjax.evaluation import metrics as M

py_sod_metrics = pytest.importorskip("py_sod_metrics", reason="PySODMetrics comes with the [dev] extra")
torch = pytest.importorskip("torch", reason="parity against PyTorch needs the [dev] extra")


def released_mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """utils/misc.py mask_to_boundary, verbatim apart from names."""
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    new_mask_erode = cv2.erode(new_mask, np.ones((3, 3), dtype=np.uint8), iterations=dilation)
    return mask - new_mask_erode[1 : h + 1, 1 : w + 1]


def released_boundary_iou(gt: np.ndarray, logits: np.ndarray) -> float:
    g = released_mask_to_boundary((gt > 128).astype(np.uint8))
    d = released_mask_to_boundary((logits > 0).astype(np.uint8))
    with np.errstate(invalid="ignore"):
        return ((g * d) > 0).sum() / ((g + d) > 0).sum()


def pysod(pred_u8: np.ndarray, gt_u8: np.ndarray) -> tuple[float, float]:
    em, wfm = py_sod_metrics.Emeasure(), py_sod_metrics.WeightedFmeasure()
    em.step(pred=pred_u8, gt=gt_u8)
    wfm.step(pred=pred_u8, gt=gt_u8)
    return float(em.get_results()["em"]["curve"].mean()), float(wfm.get_results()["wfm"])


def random_case(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = (1, 9) if k % 17 == 0 else tuple(rng.integers(4, 90, 2))
    kind = k % 6
    if kind == 0:
        gt = (rng.random((h, w)) > 0.5) * 255
    elif kind == 1:
        gt = np.zeros((h, w))
        gt[h // 4 : h // 2 + 1, w // 3 : w // 2 + 1] = 255
    elif kind == 2:
        gt = rng.integers(0, 256, (h, w))  # non-binary GT: thresholded at 128 inside
    elif kind == 3:
        gt = np.zeros((h, w)) if k % 12 == 3 else np.full((h, w), 255)  # empty / full GT
    elif kind == 4:
        gt = (rng.random((h, w)) > 0.97) * 255  # sparse GT, far background pixels
    else:
        gt = cv2.GaussianBlur((rng.random((h, w)) > 0.5).astype(np.float64), (5, 5), 2) * 255
    pred = rng.integers(0, 256, (h, w))
    if k % 4 == 0:
        pred = M.logits_to_uint8(rng.normal(size=(h, w)) * 6)
    if k % 7 == 0:
        pred = np.full((h, w), pred.flat[0])  # constant map: no min-max rescaling
    if k % 9 == 0:
        pred = np.where(gt > 128, 255, 0)  # perfect map
    return pred.astype(np.uint8), gt.astype(np.uint8)


def test_e_measure_and_wfm_equal_pysodmetrics():
    rng = np.random.default_rng(0)
    worst_em = worst_wfm = 0.0
    for k in range(240):
        pred, gt = random_case(rng, k)
        em_ref, wfm_ref = pysod(pred, gt)
        worst_em = max(worst_em, abs(M.mean_e_measure(pred, gt) - em_ref))
        worst_wfm = max(worst_wfm, abs(M.weighted_f_measure(pred, gt) - wfm_ref))
    assert worst_em < 1e-6 and worst_wfm < 1e-6, (worst_em, worst_wfm)


def test_e_measure_curve_equals_pysodmetrics_curve():
    rng = np.random.default_rng(1)
    pred, gt = random_case(rng, 5)
    ref = py_sod_metrics.Emeasure()
    ref.step(pred=pred, gt=gt)
    np.testing.assert_allclose(M.e_measure_curve(pred, gt), ref.get_results()["em"]["curve"], rtol=0, atol=1e-12)


def test_boundary_iou_equals_released():
    rng = np.random.default_rng(2)
    for k in range(40):
        h, w = (400, 300) if k % 10 == 0 else tuple(rng.integers(3, 120, 2))
        gt = np.zeros((h, w), np.uint8)
        cv2.circle(gt, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(1, max(h, w))), 255, -1)
        logits = cv2.GaussianBlur(rng.normal(size=(h, w)), (0, 0), 3) * 50
        if k % 5 == 0:
            logits = np.where(gt > 128, 1.0, -1.0) + rng.normal(size=(h, w)) * (k % 2)
        got, ref = M.boundary_iou(logits, gt), released_boundary_iou(gt, logits)
        assert got == pytest.approx(ref, abs=1e-12, nan_ok=True)


def test_boundary_band_is_inner_band_of_width_d():
    mask = np.zeros((100, 100), bool)  # diagonal 141.4 -> d = round(2.83) = 3
    mask[20:60, 30:80] = True
    band = M.boundary_band(mask)
    assert band.sum() == 40 * 50 - 34 * 44
    full = np.ones((10, 10), bool)  # touching the border: the image border counts as background
    assert M.boundary_band(full).sum() == 100 - 8 * 8


def test_perfect_prediction():
    gt = np.zeros((60, 80), np.uint8)
    gt[10:40, 20:70] = 255
    logits = np.where(gt > 128, 9.0, -9.0)
    pred_u8 = M.logits_to_uint8(logits)
    assert M.iou(logits, gt) == 1.0
    assert M.boundary_iou(logits, gt) == 1.0
    assert M.weighted_f_measure(pred_u8, gt) == 1.0
    assert M.e_measure_curve(pred_u8, gt).max() >= 1.0  # maxEm
    # meanEm of a perfect map is not 1 in PySODMetrics: at threshold 0 every pixel is foreground, where the
    # enhanced alignment is 1/4; the other 255 thresholds give N / (N - 1).
    n = gt.size
    assert M.mean_e_measure(pred_u8, gt) == pytest.approx((255 * n / (n - 1) + 0.25 * n / (n - 1)) / 256, abs=1e-12)
    assert M.mean_e_measure(pred_u8, gt) == pytest.approx(pysod(pred_u8, gt)[0], abs=1e-12)


def test_empty_ground_truth_as_released():
    gt = np.zeros((30, 30), np.uint8)
    empty, blob = np.full((30, 30), -5.0), np.full((30, 30), -5.0)
    blob[5:10, 5:10] = 5.0
    assert M.iou(empty, gt) == 0.0 and M.iou(blob, gt) == 0.0
    assert np.isnan(M.boundary_iou(empty, gt))  # 0 / 0 as released
    assert M.boundary_iou(blob, gt) == 0.0
    for logits in (empty, blob):
        pred_u8 = M.logits_to_uint8(logits)
        assert M.weighted_f_measure(pred_u8, gt) == 0.0
        assert M.mean_e_measure(pred_u8, gt) == pytest.approx(pysod(pred_u8, gt)[0], abs=1e-12)


def test_iou_and_dice_by_hand():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 255  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True  # 6 pixels, 4 shared
    assert M.iou(pred, gt) == pytest.approx(4 / 6)
    assert M.dice(pred, gt) == pytest.approx(8 / 10)
    assert M.iou(np.where(pred, 0.1, -0.1), gt) == M.iou(pred, gt)  # logits binarised at 0
    assert M.iou(pred, np.where(gt > 0, 129, 128).astype(np.uint8)) == M.iou(pred, gt)  # GT at > 128


def test_logits_to_uint8_matches_released_pipeline():
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(120, 90)) * 4).astype(np.float32)
    res = torch.from_numpy(logits).sigmoid().numpy()
    res = (res - res.min()) / (res.max() - res.min() + 1e-8)
    ref = np.uint8(res * 255)
    got = M.logits_to_uint8(logits)
    assert got.dtype == np.uint8 and got.shape == logits.shape
    # Same formula; torch's and NumPy's float32 exp may differ in the last bit, which can move a
    # truncation by one level on rare pixels.
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_evaluate_image_keys():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 255
    out = M.evaluate_image(np.where(gt > 0, 3.0, -3.0), gt)
    assert set(out) == {"iou", "biou", "em", "wfm", "dice"}
    assert out["iou"] == 1.0 and out["dice"] == 1.0


def test_instance_ap():
    gt = np.zeros((2, 64, 64), bool)
    gt[0, 5:25, 5:25] = True
    gt[1, 30:60, 30:60] = True
    assert M.instance_ap([gt], [gt], [np.array([0.9, 0.8])]) == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    # Each prediction shifted to IoU ~0.6: a match at 0.50 but not at 0.75.
    shifted = np.stack([np.roll(gt[0], 5, axis=1), np.roll(gt[1], 8, axis=1)])
    res = M.instance_ap([gt], [shifted], [np.array([0.9, 0.8])])
    assert res["AP50"] == pytest.approx(1.0) and res["AP75"] == pytest.approx(0.0)
    assert M.instance_ap([gt], [np.zeros((0, 64, 64), bool)], [np.zeros(0)]) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
