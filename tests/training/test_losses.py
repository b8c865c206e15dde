"""vnsjax.losses against float64 NumPy references and the released PyTorch functions."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnsjax.training import losses

torch = pytest.importorskip("torch", reason="parity against PyTorch needs the [dev] extra")
F = torch.nn.functional

# Eager dispatch of the many small ops is slower on CPU than one compile; reuse compiled functions.
structure = jax.jit(losses.structure_loss, static_argnames="weighted_bce")
dice = jax.jit(losses.edge_dice_loss, static_argnames="from_logits")


def np_resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """F.interpolate(bilinear, align_corners=False) on (B, H, W): half-pixel centres, negatives clamped to 0."""

    def axis_weights(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis_weights(x.shape[1], out_h)
    x0, x1, lx = axis_weights(x.shape[2], out_w)
    rows = x[:, y0] * (1 - ly)[None, :, None] + x[:, y1] * ly[None, :, None]
    return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx


def np_weight(y: np.ndarray) -> np.ndarray:
    pad = np.pad(y, ((0, 0), (15, 15), (15, 15)))
    c = np.cumsum(np.cumsum(np.pad(pad, ((0, 0), (1, 0), (1, 0))), axis=1), axis=2)
    box = c[:, 31:, 31:] - c[:, :-31, 31:] - c[:, 31:, :-31] + c[:, :-31, :-31]
    return 1 + 5 * np.abs(box / 961.0 - y)


def np_structure(logits: np.ndarray, y: np.ndarray, weighted_bce: bool) -> float:
    x = np_resize_bilinear(logits.astype(np.float64), *y.shape[1:])
    w = np_weight(y)
    bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    bce_term = (w * bce).sum((1, 2)) / w.sum((1, 2)) if weighted_bce else bce.mean()
    p = 1 / (1 + np.exp(-x))
    inter = (p * y * w).sum((1, 2))
    union = ((p + y) * w).sum((1, 2))
    return float(np.mean(bce_term + 1 - (inter + 1) / (union - inter + 1)))


def np_dice(logits: np.ndarray, t: np.ndarray) -> float:
    p = np_resize_bilinear(1 / (1 + np.exp(-logits.astype(np.float64))), *t.shape[1:])
    num = 2 * (p * t).sum((1, 2)) + 1
    den = (p**2 + t**2).sum((1, 2)) + 1
    return float(np.mean(1 - num / den))


def soft_target(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """Blob masks, bilinearly smoothed like the augmented labels (soft at the edges)."""
    coarse = (rng.random((b, size // 8, size // 8)) > 0.6).astype(np.float64)
    return np.clip(np_resize_bilinear(coarse, size, size), 0, 1)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(3, 16, 16)) * 4).astype(np.float32)
    return logits, soft_target(rng, 3, 64).astype(np.float32)


@pytest.mark.parametrize("weighted_bce", [False, True])
def test_structure_loss_matches_numpy(case, weighted_bce):
    logits, y = case
    got = structure(logits, y, weighted_bce=weighted_bce)
    assert abs(float(got) - np_structure(logits, y, weighted_bce)) < 1e-5


def test_weighted_and_plain_bce_differ(case):
    logits, y = case
    assert abs(float(structure(logits, y)) - float(structure(logits, y, weighted_bce=True))) > 1e-4


def test_f3net_weight_counts_zero_padding():
    y = np.ones((1, 40, 40), np.float32)
    w = np.asarray(losses.f3net_weight(jnp.asarray(y)[..., None]))[0, ..., 0]
    np.testing.assert_allclose(w, np_weight(y.astype(np.float64))[0], atol=1e-6)
    # Corner: 16x16 of the 31x31 window inside the image, so avgpool = 256/961 and w = 1 + 5 * (1 - 256/961).
    assert w[0, 0] == pytest.approx(1 + 5 * (1 - 256 / 961), abs=1e-6)


def test_edge_dice_matches_numpy(case):
    logits, y = case
    assert abs(float(dice(logits, y)) - np_dice(logits, y)) < 1e-5
    prob = 1 / (1 + np.exp(-logits))
    assert float(dice(prob, y, from_logits=False)) == pytest.approx(np_dice(logits, y), abs=1e-5)


def test_layouts_agree(case):
    logits, y = case
    assert float(structure(logits, y)) == pytest.approx(float(structure(logits[..., None], y[..., None])), abs=1e-7)


def test_matches_released_torch_at_training_resolution():
    """256 -> 1024 as in training, against MyTrain.py's functions verbatim (legacy reduce='none' included)."""
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(1, 256, 256)) * 3).astype(np.float32)
    edge_logits = (rng.normal(size=(1, 256, 256)) * 3).astype(np.float32)
    y = soft_target(rng, 1, 1024).astype(np.float32)
    edges = (rng.random((1, 1024, 1024)) > 0.9).astype(np.float32)

    pred, mask = torch.from_numpy(logits)[:, None], torch.from_numpy(y)[:, None]
    pred = F.interpolate(pred, size=mask.shape[2:], mode="bilinear", align_corners=False)
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy `reduce` argument warns
        wbce = F.binary_cross_entropy_with_logits(pred, mask, reduce="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    p = torch.sigmoid(pred)
    inter = ((p * mask) * weit).sum(dim=(2, 3))
    union = ((p + mask) * weit).sum(dim=(2, 3))
    torch_structure = float((wbce + 1 - (inter + 1) / (union - inter + 1)).mean())

    ep = F.interpolate(
        torch.sigmoid(torch.from_numpy(edge_logits)[:, None]), size=(1024, 1024), mode="bilinear", align_corners=False
    ).flatten(1)
    et = torch.from_numpy(edges).flatten(1)
    torch_dice = float((1 - (2 * (ep * et).sum(1) + 1) / ((ep**2 + et**2).sum(1) + 1)).mean())

    assert abs(float(structure(logits, y)) - torch_structure) < 1e-5
    assert abs(float(dice(edge_logits, edges)) - torch_dice) < 1e-5


def test_gradients_finite_for_extreme_logits():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.choice([-200.0, -30.0, 0.0, 30.0, 200.0], size=(2, 8, 8)), jnp.float32)
    y = jnp.asarray(soft_target(rng, 2, 32), jnp.float32)

    def total(x):
        loss, _ = losses.vns_total_loss(x, x, x, x, y, y)
        return loss

    loss, grad = jax.jit(jax.value_and_grad(total))(logits)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)


def test_total_loss_is_sum_of_terms(case):
    logits, y = case
    total, terms = jax.jit(losses.vns_total_loss)(logits, logits, logits, logits, y, y)
    assert set(terms) == {"loss_edge1", "loss_mask2", "loss_edge2", "loss_fusion_mask"}
    assert float(total) == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-6)


# --- SAM's loss against a PyTorch reference (torchvision's focal loss) ---


def torch_sam_loss(logits, iou_pred, target, supervise_all_iou=True):
    """SAM's loss as the SAM paper states it, in PyTorch: focal 20 : dice 1, min over multimask outputs, IoU MSE."""
    from torchvision.ops import sigmoid_focal_loss

    logits, iou_pred, target = (torch.from_numpy(np.asarray(a, np.float64)) for a in (logits, iou_pred, target))
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    t = target[:, None].expand_as(up)
    focal = sigmoid_focal_loss(up, t, alpha=0.25, gamma=2, reduction="none").flatten(2).mean(-1)
    p, tt = up.sigmoid().flatten(2), t.flatten(2)
    dice = 1 - (2 * (p * tt).sum(-1) + 1) / (p.sum(-1) + tt.sum(-1) + 1)
    pred, gt = (up > 0).flatten(2), (t > 0.5).flatten(2)
    actual = (pred & gt).sum(-1) / (pred | gt).sum(-1).clamp(min=1)
    mse = (iou_pred - actual) ** 2
    best = (20 * focal + dice).argmin(1)
    rows = torch.arange(len(best))
    iou = mse.mean(1) if supervise_all_iou else mse[rows, best]
    terms = {"loss_focal": focal[rows, best].mean(), "loss_dice": dice[rows, best].mean(), "loss_iou": iou.mean()}
    return float(20 * terms["loss_focal"] + terms["loss_dice"] + terms["loss_iou"]), {
        k: float(v) for k, v in terms.items()
    }


sam = jax.jit(losses.sam_loss, static_argnames=("supervise_all_iou", "focal_weight", "dice_weight", "iou_weight"))


@pytest.mark.parity
@pytest.mark.parametrize("num_masks,supervise_all_iou", [(1, True), (3, True), (3, False)])
def test_sam_loss_matches_torch(num_masks, supervise_all_iou):
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(4, num_masks, 16, 16)) * 3).astype(np.float32)
    iou_pred = rng.random((4, num_masks)).astype(np.float32)
    y = soft_target(rng, 4, 64).astype(np.float32)
    got, terms = sam(logits, iou_pred, y, supervise_all_iou=supervise_all_iou)
    want, want_terms = torch_sam_loss(logits, iou_pred, y, supervise_all_iou)
    assert float(got) == pytest.approx(want, rel=1e-5)
    for k, v in want_terms.items():
        assert float(terms[k]) == pytest.approx(v, rel=1e-5, abs=1e-7), k


def test_sam_loss_multimask_trains_only_the_best_mask():
    """Multimask: the mask terms reach only the lowest-loss mask of each prompt; the others get no gradient."""
    rng = np.random.default_rng(4)
    y = soft_target(rng, 2, 32).astype(np.float32)
    logits = (rng.normal(size=(2, 3, 32, 32))).astype(np.float32)
    logits[0, 2] = (y[0] - 0.5) * 8  # prompt 0: mask 2 nearly right
    logits[1, 0] = (y[1] - 0.5) * 8  # prompt 1: mask 0 nearly right
    iou_pred = np.zeros((2, 3), np.float32)
    grad = jax.grad(lambda x: sam(x, iou_pred, y, iou_weight=0.0)[0])(jnp.asarray(logits))
    touched = np.abs(np.asarray(grad)).sum(axis=(2, 3)) > 0
    np.testing.assert_array_equal(touched, [[False, False, True], [True, False, False]])


def test_sam_loss_iou_term_regresses_actual_iou_without_touching_masks():
    rng = np.random.default_rng(5)
    y = (rng.random((2, 16, 16)) > 0.5).astype(np.float32)
    logits = jnp.asarray(rng.normal(size=(2, 3, 16, 16)), jnp.float32)
    iou_pred = jnp.asarray(rng.random((2, 3)), jnp.float32)

    def iou_only(x, s):
        return sam(x, s, y, focal_weight=0.0, dice_weight=0.0)[0]

    g_masks, g_scores = jax.grad(iou_only, argnums=(0, 1))(logits, iou_pred)
    assert not np.any(np.asarray(g_masks))
    pred, gt = np.asarray(logits) > 0, y[:, None] > 0.5
    actual = (pred & gt).sum((2, 3)) / np.maximum((pred | gt).sum((2, 3)), 1)
    np.testing.assert_allclose(g_scores, 2 * (np.asarray(iou_pred) - actual) / 6, rtol=1e-5, atol=1e-7)


def test_sam_loss_candidates_select_outputs_per_prompt():
    """SAM's four-token training: token 0 for an unambiguous prompt, the min over tokens 1-3 for a single point."""
    rng = np.random.default_rng(10)
    logits = (rng.normal(size=(2, 4, 16, 16)) * 3).astype(np.float32)
    iou_pred = rng.random((2, 4)).astype(np.float32)
    y = soft_target(rng, 2, 32).astype(np.float32)
    cand = np.array([[True, False, False, False], [False, True, True, True]])
    got, terms = sam(logits, iou_pred, y, candidates=cand)
    one, one_terms = sam(logits[:1, :1], iou_pred[:1, :1], y[:1])
    multi, multi_terms = sam(logits[1:, 1:], iou_pred[1:, 1:], y[1:])
    assert float(got) == pytest.approx((float(one) + float(multi)) / 2, rel=1e-6)
    for k in terms:
        assert float(terms[k]) == pytest.approx((float(one_terms[k]) + float(multi_terms[k])) / 2, rel=1e-6), k


def test_sam_loss_finite_for_extreme_logits():
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.choice([-200.0, -30.0, 0.0, 30.0, 200.0], size=(2, 3, 8, 8)), jnp.float32)
    y = jnp.asarray(soft_target(rng, 2, 32), jnp.float32)
    loss, grad = jax.value_and_grad(lambda x: sam(x, jnp.zeros((2, 3)), y)[0])(logits)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)


# --- HQ-SAM's point-sampled loss against the rebuilt sam-hq loss_mask.py ---


@pytest.fixture(scope="module")
def hq_ref():
    from tests.torch_ref import hq_loss

    return hq_loss


def test_point_sample_matches_grid_sample(hq_ref):
    rng = np.random.default_rng(7)
    maps = rng.normal(size=(2, 12, 20)).astype(np.float32)
    coords = rng.random((2, 50, 2)).astype(np.float32)
    coords[:, :6] = [[0, 0], [1, 1], [0, 1], [1, 0], [0.01, 0.5], [0.5, 0.995]]  # corners and border half-pixels
    got = losses.point_sample(jnp.asarray(maps), jnp.asarray(coords))
    want = hq_ref.point_sample(torch.from_numpy(maps)[:, None], torch.from_numpy(coords))[:, 0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parity
def test_hq_loss_matches_sam_hq_on_fixed_points(hq_ref):
    """Training resolution (256 logits, 1024 label): the same points fed to both implementations."""
    rng = np.random.default_rng(8)
    logits = (rng.normal(size=(3, 1, 256, 256)) * 4).astype(np.float32)
    y = soft_target(rng, 3, 1024).astype(np.float32)
    coords = rng.random((3, losses.HQ_NUM_POINTS, 2)).astype(np.float32)
    total, terms = jax.jit(losses.hq_point_loss)(logits, y, coords)
    bce, dice_t = hq_ref.loss_masks(
        torch.from_numpy(logits), torch.from_numpy(y)[:, None], 3, point_coords=torch.from_numpy(coords)
    )
    assert float(terms["loss_mask"]) == pytest.approx(float(bce), rel=1e-5)
    assert float(terms["loss_dice"]) == pytest.approx(float(dice_t), rel=1e-5)
    assert float(total) == pytest.approx(float(bce + dice_t), rel=1e-5)


def ramp_logits(b: int = 2, size: int = 256) -> np.ndarray:
    """Logits 20 (x - 0.5): uncertainty depends on x only, largest on the vertical midline."""
    x = (np.arange(size) + 0.5) / size
    return np.broadcast_to(20 * (x - 0.5), (b, 1, size, size)).astype(np.float32).copy()


def test_uncertain_sampler_statistics(hq_ref):
    """3x oversampling keeping 75%: the kept candidates are the 25% with the smallest sampled |logit|.

    On the ramp that is |x - 0.5| < 1/8, i.e. |logit| < 2.5, except in the half pixel along the top and bottom
    borders, where zero padding halves the logit (sampled there, the points are genuinely more uncertain).
    """
    n = losses.HQ_NUM_POINTS
    n_unc = int(0.75 * n)
    logits = ramp_logits()
    coords = np.asarray(losses.uncertain_point_coords(jax.random.key(0), jnp.asarray(logits[:, 0])))
    ref = hq_ref.uncertain_point_coords(torch.from_numpy(logits), n, 3.0, 0.75, torch.Generator().manual_seed(0))
    for c in (coords, ref.numpy()):
        assert c.shape == (2, n, 2) and c.min() >= 0 and c.max() <= 1
        sampled = np.abs(np.asarray(losses.point_sample(jnp.asarray(logits[:, 0]), jnp.asarray(c))))
        # The kept share is an empirical 25% quantile of 3n uniform draws: 2.5 within a few of its std (~0.04).
        assert 2.3 < sampled[:, :n_unc].max() < 2.7
        assert np.mean(sampled[:, n_unc:] < sampled[:, :n_unc].max()) < 0.3  # the rest is not selected
        dist = np.abs(c[..., 0] - 0.5)
        random = dist[:, n_unc:]
        assert abs(np.mean(random < 0.125) - 0.25) < 0.03  # the rest is uniform: a quarter near the midline
        assert abs(np.mean(random) - 0.25) < 0.01  # |x - 0.5| of a uniform x averages 1/4
        assert abs(np.mean(c[..., 1]) - 0.5) < 0.01  # y carries no uncertainty signal
    frac = [np.mean(np.abs(c[..., 0] - 0.5) < 0.125) for c in (coords, ref.numpy())]
    assert frac[0] == pytest.approx(0.75 + 0.25 * 0.25, abs=0.01) and frac[1] == pytest.approx(frac[0], abs=0.01)


def test_hq_loss_with_sampler_agrees_with_sam_hq_in_distribution(hq_ref):
    """Different random streams, same sampling law: the two losses agree to the Monte-Carlo error of 12544 points."""
    rng = np.random.default_rng(9)
    logits = (rng.normal(size=(2, 1, 64, 64)) * 4).astype(np.float32)
    y = soft_target(rng, 2, 256).astype(np.float32)
    total, _ = jax.jit(losses.hq_loss)(logits, y, jax.random.key(1))
    bce, dice_t = hq_ref.loss_masks(
        torch.from_numpy(logits), torch.from_numpy(y)[:, None], 2, generator=torch.Generator().manual_seed(1)
    )
    assert float(total) == pytest.approx(float(bce + dice_t), rel=0.03)


def test_hq_loss_rejects_multimask():
    with pytest.raises(ValueError, match="one mask per prompt"):
        losses.hq_loss(jnp.zeros((1, 3, 8, 8)), jnp.zeros((1, 32, 32)), jax.random.key(0))
