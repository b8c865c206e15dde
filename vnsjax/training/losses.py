"""Training losses of VNS-SAM as released (MyTrain.py `structure_loss`, `dice_loss_edge`).

All functions are jit-able, batch-first and channels-last: predictions are (B, h, w) or (B, h, w, 1),
targets are (B, H, W) or (B, H, W, 1) in [0, 1] (the released code divides the 0/255 label by 255).
Predictions at a lower resolution (256x256 from the decoder) are bilinearly upsampled to the target
size with `F.interpolate(align_corners=False)` semantics before the loss, as in the released code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vnsjax.modeling.common import resize_bilinear

# F3Net weighting window: avg_pool2d(kernel 31, stride 1, padding 15) with count_include_pad=True.
_POOL = 31


def _nhwc(x: jax.Array) -> jax.Array:
    return x[..., None] if x.ndim == 3 else x


def _to_target_size(pred: jax.Array, target: jax.Array) -> jax.Array:
    if pred.shape[1:3] != target.shape[1:3]:
        pred = resize_bilinear(pred, target.shape[1], target.shape[2])
    return pred


def f3net_weight(target: jax.Array) -> jax.Array:
    """w = 1 + 5 |avgpool31(y) - y| with zero padding counted (always divides by 31 * 31), NHWC."""
    window = (1, _POOL, 1, 1), (1, 1, _POOL, 1)
    half = _POOL // 2
    padding = ((0, 0), (half, half), (0, 0), (0, 0)), ((0, 0), (0, 0), (half, half), (0, 0))
    box = target
    # Two 1-D passes instead of one 31x31 window: 62 adds a pixel instead of 961.
    for win, pad in zip(window, padding, strict=True):
        box = jax.lax.reduce_window(box, 0.0, jax.lax.add, win, (1, 1, 1, 1), pad)
    return 1.0 + 5.0 * jnp.abs(box / (_POOL * _POOL) - target)


def bce_with_logits(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Element-wise binary cross-entropy on logits, numerically stable for large |logits|."""
    return jnp.maximum(logits, 0.0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def structure_loss(logits: jax.Array, target: jax.Array, *, weighted_bce: bool = False) -> jax.Array:
    """F3Net/PraNet structure loss, a scalar.

    weighted_bce=False (default) reproduces the released code: its BCE call passes the legacy
    `reduce='none'`, which PyTorch maps to mean reduction, so the BCE term is the plain mean over the
    whole batch and the F3Net weights cancel. weighted_bce=True gives the paper's / F3Net's form,
    sum(w * bce) / sum(w) per sample. The weighted-IoU term is the same in both.
    """
    target = _nhwc(target).astype(jnp.float32)
    logits = _to_target_size(_nhwc(logits).astype(jnp.float32), target)
    weight = f3net_weight(target)
    bce = bce_with_logits(logits, target)
    axes = (1, 2, 3)
    if weighted_bce:
        bce_term = jnp.sum(weight * bce, axis=axes) / jnp.sum(weight, axis=axes)
    else:
        bce_term = jnp.mean(bce)
    prob = jax.nn.sigmoid(logits)
    inter = jnp.sum(prob * target * weight, axis=axes)
    union = jnp.sum((prob + target) * weight, axis=axes)
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return jnp.mean(bce_term + wiou)


def edge_dice_loss(edge: jax.Array, target: jax.Array, *, from_logits: bool = True) -> jax.Array:
    """Dice loss on edge probabilities, 1 - (2 sum(p t) + 1) / (sum(p^2 + t^2) + 1) per sample, averaged.

    The released decoder applies the sigmoid at 256x256 inside its forward and the loss upsamples the
    probabilities, so with from_logits=True the sigmoid is taken before the resize, in that order.
    Pass from_logits=False when `edge` is already a probability map.
    """
    target = _nhwc(target).astype(jnp.float32)
    prob = _nhwc(edge).astype(jnp.float32)
    if from_logits:
        prob = jax.nn.sigmoid(prob)
    prob = _to_target_size(prob, target)
    axes = (1, 2, 3)
    num = 2.0 * jnp.sum(prob * target, axis=axes) + 1.0
    den = jnp.sum(prob**2 + target**2, axis=axes) + 1.0
    return jnp.mean(1.0 - num / den)


def vns_total_loss(
    final_edge: jax.Array,
    interm_mask: jax.Array,
    interm_edge: jax.Array,
    fused_mask: jax.Array,
    mask_target: jax.Array,
    edge_target: jax.Array,
    *,
    edges_from_logits: bool = True,
    weighted_bce: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Released training objective, all weights 1; returns (total, per-term dict named as in MyTrain.py).

    The final-stage VNS mask has no direct loss (it is supervised through the fusion layer).
    """
    terms = {
        "loss_edge1": edge_dice_loss(final_edge, edge_target, from_logits=edges_from_logits),
        "loss_mask2": structure_loss(interm_mask, mask_target, weighted_bce=weighted_bce),
        "loss_edge2": edge_dice_loss(interm_edge, edge_target, from_logits=edges_from_logits),
        "loss_fusion_mask": structure_loss(fused_mask, mask_target, weighted_bce=weighted_bce),
    }
    return sum(terms.values()), terms
