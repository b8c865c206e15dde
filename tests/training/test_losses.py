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
