"""vnsjax.vns_score against a transcription of the released VNS_score2.py (OpenCV + scikit-image GLCM)."""

import csv
import warnings

import cv2
import numpy as np
import pytest
from skimage.feature import graycomatrix, graycoprops

from vnsjax.evaluation import vns_score as V


# ---------------------------------------------------------------- released formula (VNS_score2.py)
def ref_safe_dilate(mask, max_kernel_size=15):
    h, w = mask.shape
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return mask
    x, y, bw, bh = cv2.boundingRect(contours[0])
    k = max(1, min(max_kernel_size, x, w - (x + bw), y, h - (y + bh)))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)), borderType=cv2.BORDER_ISOLATED)


def ref_glcm_contrast(img):
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    glcm = graycomatrix(gray, distances=[1], angles=[0], symmetric=True, normed=True)
    return graycoprops(glcm, "contrast")[0, 0]


def ref_contrast(image, mask):
    local_bg_mask = (ref_safe_dilate(mask) - mask).astype(np.uint8)
    if local_bg_mask.max() == 0:
        local_bg_mask = 1 - mask
    fg = cv2.bitwise_and(image, image, mask=mask)
    bg = cv2.bitwise_and(image, image, mask=local_bg_mask)
    lab_fg, lab_bg = cv2.cvtColor(fg, cv2.COLOR_BGR2LAB), cv2.cvtColor(bg, cv2.COLOR_BGR2LAB)
    color_diff = np.linalg.norm(lab_fg[mask == 1].mean(axis=0) - lab_bg[local_bg_mask == 1].mean(axis=0))
    texture_fg = ref_glcm_contrast(fg) if np.any(mask) else 0
    return (color_diff / 100.0 + np.abs(texture_fg - ref_glcm_contrast(bg)) / 1000.0) / 2.0


def ref_blur(image, mask, ksize=5):
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksize, ksize))
    edge_roi = cv2.dilate(mask, kernel) - cv2.erode(mask, kernel)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    sx, sy = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)
    return 1.0 - np.sqrt(sx**2 + sy**2)[edge_roi > 0].mean() / 255.0


def ref_vns(image_bgr, mask_u8):
    mask = (mask_u8 > 128).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty means -> NaN, as in the released script
        c, b = ref_contrast(image_bgr, mask), ref_blur(image_bgr, mask)
    return c, b, 0.5 * (1 - c) + 0.5 * b


# ---------------------------------------------------------------- cases
def make_case(rng, k):
    h, w = (int(v) for v in rng.integers(24, 110, 2))
    image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (5, 5), 0.5 + k % 4)
    mask = np.zeros((h, w), np.uint8)
    axes = int(rng.integers(2, w // 2)), int(rng.integers(2, h // 2))
    cv2.ellipse(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))), axes, 0, 0, 360, 255, -1)
    if k % 5 == 1:
        mask[:2] = 255  # touches the border: 1x1 kernel, empty band, fallback to the complement
    if k % 6 == 2:
        mask[rng.random((h, w)) > 0.93] = 200  # several components; "first contour" decides the kernel
    if k % 7 == 3:
        mask = cv2.GaussianBlur(mask, (7, 7), 3)  # soft mask binarised at > 128
    return image, mask


def test_matches_released_formula():
    rng = np.random.default_rng(0)
    for k in range(40):
        image, mask = make_case(rng, k)
        c, b, s = ref_vns(image, mask)
        t = V.vns_terms(image, mask)
        np.testing.assert_allclose([t.contrast, t.blur, t.score], [c, b, s], rtol=0, atol=1e-10)
        assert t.contrast == pytest.approx((t.color + t.texture) / 2)


def test_empty_and_full_masks_are_nan_as_released():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    for mask in (np.zeros((32, 40), np.uint8), np.full((32, 40), 255, np.uint8)):
        t = V.vns_terms(image, mask)
        assert np.isnan(t.score) and not t.valid
        assert np.isnan(ref_vns(image, mask)[2])


def test_channel_order():
    rng = np.random.default_rng(2)
    image, mask = make_case(rng, 0)
    rgb = np.ascontiguousarray(image[..., ::-1])
    assert V.vns_score(rgb, mask, channel_order="rgb") == V.vns_score(image, mask)
    assert V.vns_score(rgb, mask) != V.vns_score(image, mask)  # colour term depends on the order
    with pytest.raises(ValueError):
        V.vns_score(image, mask, channel_order="hsv")


def test_glcm_contrast_equals_skimage():
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    gray[:, :20] = 0
    glcm = graycomatrix(gray, distances=[1], angles=[0], symmetric=True, normed=True)
    assert V.glcm_contrast(gray) == pytest.approx(graycoprops(glcm, "contrast")[0, 0], rel=1e-12)


def test_cli_scores_summary_and_selection(tmp_path, capsys):
    rng = np.random.default_rng(4)
    images, masks = tmp_path / "Imgs", tmp_path / "GT"
    images.mkdir()
    masks.mkdir()
    expected = {}
    for k in range(6):
        image, mask = make_case(rng, k)
        if k == 5:
            mask[:] = 0  # NaN score: counted, excluded
        cv2.imwrite(str(images / f"im{k}.png"), image)
        cv2.imwrite(str(masks / f"im{k}.png"), mask)
        expected[f"im{k}.png"] = ref_vns(image, mask)[2]
    (images / "notes.txt").write_text("not an image")

    out = tmp_path / "scores.csv"
    valid = [s for s in expected.values() if 0 <= s <= 1]
    threshold = float(np.median(valid))
    summary = V.main(["--images", str(images), "--masks", str(masks), "--threshold", str(threshold), "--out", str(out)])
    assert "selected (score <= " in capsys.readouterr().out

    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["file"] for r in rows] == sorted(expected)
    for r in rows:
        assert float(r["score"]) == pytest.approx(expected[r["file"]], abs=1e-10, nan_ok=True)
        assert (r["selected"] == "True") == (r["valid"] == "True" and float(r["score"]) <= threshold)
    assert summary["total"] == 6 and summary["nan"] == 1
    assert summary["count"] + summary["nan"] + summary["out_of_range"] == 6
    assert summary["mean"] == pytest.approx(np.mean(valid))
    assert summary["selected"] == sum(s <= threshold for s in valid)


def test_summarize_counts_out_of_range():
    rows = [{"score": s, "valid": V.VnsTerms(0, 0, 0, 0, s).valid} for s in (0.2, 0.6, 1.3, -0.1, float("nan"))]
    summary = V.summarize_scores(rows, threshold=0.5)
    assert (summary["count"], summary["nan"], summary["out_of_range"], summary["selected"]) == (2, 1, 2, 1)
    assert summary["mean"] == pytest.approx(0.4) and summary["std"] == pytest.approx(0.2)


def test_cli_reads_subset_through_data_pipeline(tmp_path):
    rng = np.random.default_rng(5)
    images, masks = tmp_path / "COD/TestDataset/CAMO/Imgs", tmp_path / "COD/TestDataset/CAMO/GT"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for k in range(3):
        image, mask = make_case(rng, k)
        cv2.imwrite(str(images / f"camo{k}.jpg"), image)
        cv2.imwrite(str(masks / f"camo{k}.png"), mask)
    out = tmp_path / "camo.csv"
    summary = V.main(["--data", str(tmp_path), "--subset", "camo", "--out", str(out)])
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["file"] for r in rows] == ["camo0.jpg", "camo1.jpg", "camo2.jpg"] and summary["total"] == 3
    image = cv2.imread(str(images / "camo1.jpg"))
    mask = cv2.imread(str(masks / "camo1.png"), cv2.IMREAD_GRAYSCALE)
    assert float(rows[1]["score"]) == pytest.approx(ref_vns(image, mask)[2], abs=1e-10, nan_ok=True)
