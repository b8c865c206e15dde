"""Training losses: VNS-SAM as released (MyTrain.py `structure_loss`, `dice_loss_edge`), SAM's loss and HQ-SAM's.

All functions are jit-able and batch-first. The VNS-SAM losses take channels-last predictions (B, h, w) or
(B, h, w, 1); `sam_loss` and `hq_loss` take the decoder's own layout, (B, K, h, w) mask logits. Targets are
(B, H, W) or (B, H, W, 1) in [0, 1] (the released code divides the 0/255 label by 255). Predictions at a lower
resolution (256x256 from the decoder) are bilinearly upsampled to the target size with
`F.interpolate(align_corners=False)` semantics before the dense losses, as in the released code; `hq_loss`
instead samples both at the same normalised points, so it never upsamples.
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
    final_edge: jax.Array | None,
    interm_mask: jax.Array | None,
    interm_edge: jax.Array | None,
    fused_mask: jax.Array,
    mask_target: jax.Array,
    edge_target: jax.Array,
    *,
    edges_from_logits: bool = True,
    weighted_bce: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Released training objective, all weights 1; returns (total, per-term dict named as in MyTrain.py).

    The final-stage VNS mask has no direct loss (it is supervised through the fusion layer). For an ablation
    decoder (docs/training.md#vns-ablations) `fused_mask` is its prediction, and an output it lacks (None: no
    edge head, no intermediate stage) has no term.
    """
    outputs = {
        "loss_edge1": (final_edge, edge_dice_loss),
        "loss_mask2": (interm_mask, structure_loss),
        "loss_edge2": (interm_edge, edge_dice_loss),
        "loss_fusion_mask": (fused_mask, structure_loss),
    }
    terms = {}
    for name, (pred, loss) in outputs.items():
        if pred is None:
            continue
        if loss is edge_dice_loss:
            terms[name] = edge_dice_loss(pred, edge_target, from_logits=edges_from_logits)
        else:
            terms[name] = structure_loss(pred, mask_target, weighted_bce=weighted_bce)
    return sum(terms.values()), terms


# --- SAM's loss (focal 20 : dice 1 on the masks + MSE of the IoU prediction; docs/training.md#losses) ---


def sigmoid_focal_loss(logits: jax.Array, target: jax.Array, *, alpha: float = 0.25, gamma: float = 2.0) -> jax.Array:
    """Element-wise focal loss on logits (RetinaNet; torchvision.ops.sigmoid_focal_loss with reduction="none").

    alpha < 0 disables the class weighting.
    """
    prob = jax.nn.sigmoid(logits)
    p_t = prob * target + (1.0 - prob) * (1.0 - target)
    loss = bce_with_logits(logits, target) * (1.0 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1.0 - alpha) * (1.0 - target)) * loss
    return loss


def soft_dice_loss(prob: jax.Array, target: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """1 - (2 sum(p t) + 1) / (sum p + sum t + 1) over `axes`: SAM's and HQ-SAM's dice (the edge dice squares p, t)."""
    num = 2.0 * jnp.sum(prob * target, axis=axes) + 1.0
    den = jnp.sum(prob, axis=axes) + jnp.sum(target, axis=axes) + 1.0
    return 1.0 - num / den


def mask_iou(logits: jax.Array, target: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """IoU of the binarised prediction (logit > 0) with the target (> 0.5); an empty union counts as IoU 0."""
    pred, gt = logits > 0, target > 0.5
    inter = jnp.sum(pred & gt, axis=axes).astype(jnp.float32)
    union = jnp.sum(pred | gt, axis=axes).astype(jnp.float32)
    return inter / jnp.maximum(union, 1.0)


def sam_loss(
    mask_logits: jax.Array,
    iou_pred: jax.Array,
    target: jax.Array,
    *,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
    supervise_all_iou: bool = True,
    candidates: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SAM's training loss; returns (total, per-term dict of the unweighted terms).

    mask_logits (B, K, h, w) and iou_pred (B, K) as the decoder returns them; target (B, H, W[, 1]). Each mask's
    loss is `focal_weight * focal + dice_weight * dice` (focal averaged over pixels). With K > 1 (multimask
    output) only the mask with the lowest loss counts, as in SAM, so the three outputs can specialise on the
    ambiguous whole / part / subpart readings of a prompt. The IoU head regresses the actual IoU of each
    binarised mask (no gradient flows into the masks through it); supervise_all_iou=False trains only the
    chosen mask's score. Averaged over the batch.

    candidates (B, K) bool restricts, per prompt, which outputs compete and have their score trained: SAM runs
    all four mask tokens and uses token 0 for unambiguous prompts, tokens 1-3 for a single point.
    """
    target = _nhwc(target).astype(jnp.float32)
    logits = _to_target_size(jnp.moveaxis(mask_logits, 1, -1).astype(jnp.float32), target)
    axes = (1, 2)
    focal = jnp.mean(sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma), axis=axes)  # (B, K)
    dice = soft_dice_loss(jax.nn.sigmoid(logits), target, axes)
    iou_mse = (iou_pred.astype(jnp.float32) - jax.lax.stop_gradient(mask_iou(logits, target, axes))) ** 2
    if candidates is None:
        candidates = jnp.ones(focal.shape, bool)
    mask_loss = jnp.where(candidates, focal_weight * focal + dice_weight * dice, jnp.inf)
    best = jnp.argmin(mask_loss, axis=1)[:, None]  # K = 1: always 0

    def pick(x: jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, best, axis=1)[:, 0]

    if supervise_all_iou:
        iou_term = jnp.sum(jnp.where(candidates, iou_mse, 0.0), axis=1) / jnp.sum(candidates, axis=1)
    else:
        iou_term = pick(iou_mse)
    terms = {"loss_focal": jnp.mean(pick(focal)), "loss_dice": jnp.mean(pick(dice)), "loss_iou": jnp.mean(iou_term)}
    total = focal_weight * terms["loss_focal"] + dice_weight * terms["loss_dice"] + iou_weight * terms["loss_iou"]
    return total, terms


# --- HQ-SAM's released loss: BCE + dice on points sampled by uncertainty (PointRend-style) ---

HQ_NUM_POINTS = 112 * 112
HQ_OVERSAMPLE_RATIO = 3.0
HQ_IMPORTANCE_SAMPLE_RATIO = 0.75


def point_sample(x: jax.Array, coords: jax.Array) -> jax.Array:
    """Bilinear samples of maps x (B, H, W) at coords (B, P, 2), xy in [0, 1] of the whole map -> (B, P).

    F.grid_sample(align_corners=False, padding_mode="zeros") at 2 * coords - 1: pixel centres sit at
    (i + 0.5) / size and the half pixel outside the border blends with zeros, so one set of normalised points
    reads maps of different resolutions (256 logits, 1024 labels) at the same places.
    """
    b, h, w = x.shape
    px = coords[..., 0] * w - 0.5
    py = coords[..., 1] * h - 0.5
    x0, y0 = jnp.floor(px), jnp.floor(py)
    fx, fy = px - x0, py - y0
    flat = x.reshape(b, h * w)
    out = jnp.zeros(coords.shape[:2], x.dtype)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = (x0 + dx).astype(jnp.int32), (y0 + dy).astype(jnp.int32)
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
            out = out + jnp.where(inside, jnp.take_along_axis(flat, idx, axis=1), 0.0) * wx * wy
    return out


def uncertain_point_coords(
    key: jax.Array,
    logits: jax.Array,
    num_points: int = HQ_NUM_POINTS,
    oversample_ratio: float = HQ_OVERSAMPLE_RATIO,
    importance_sample_ratio: float = HQ_IMPORTANCE_SAMPLE_RATIO,
) -> jax.Array:
    """PointRend training sampler on logits (B, h, w) -> (B, num_points, 2) xy in [0, 1], no gradient.

    Draws num_points * oversample_ratio uniform candidates, keeps the importance_sample_ratio share whose
    sampled logit is closest to 0 (uncertainty -|logit| at the point, not interpolated from per-pixel
    uncertainties), and fills the rest with fresh uniform points.
    """
    b = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    k_cand, k_rand = jax.random.split(key)
    cand = jax.random.uniform(k_cand, (b, num_sampled, 2))
    uncertainty = -jnp.abs(point_sample(jax.lax.stop_gradient(logits), cand))
    _, idx = jax.lax.top_k(uncertainty, num_uncertain)
    coords = jnp.take_along_axis(cand, idx[..., None], axis=1)
    rand = jax.random.uniform(k_rand, (b, num_points - num_uncertain, 2))
    return jnp.concatenate([coords, rand], axis=1)


def hq_point_loss(
    mask_logits: jax.Array, target: jax.Array, coords: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BCE (mean over points) + dice of mask_logits (B, 1, h, w) against target (B, H, W[, 1]) at coords (B, P, 2).

    Both maps are read at the same normalised points; the loss is summed over masks and divided by their
    number (the batch), i.e. a batch mean, as sam-hq's loss_masks with num_masks = len(masks).
    """
    if mask_logits.shape[1] != 1:
        raise ValueError(f"hq loss takes one mask per prompt, (B, 1, h, w); got mask logits {mask_logits.shape}")
    logits = mask_logits[:, 0].astype(jnp.float32)
    target = _nhwc(target)[..., 0].astype(jnp.float32)
    point_logits = point_sample(logits, coords)
    point_labels = jax.lax.stop_gradient(point_sample(target, coords))
    terms = {
        "loss_mask": jnp.mean(bce_with_logits(point_logits, point_labels)),
        "loss_dice": jnp.mean(soft_dice_loss(jax.nn.sigmoid(point_logits), point_labels, (1,))),
    }
    return terms["loss_mask"] + terms["loss_dice"], terms


def hq_loss(
    mask_logits: jax.Array,
    target: jax.Array,
    key: jax.Array,
    *,
    num_points: int = HQ_NUM_POINTS,
    oversample_ratio: float = HQ_OVERSAMPLE_RATIO,
    importance_sample_ratio: float = HQ_IMPORTANCE_SAMPLE_RATIO,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """HQ-SAM's released training loss: `hq_point_loss` at points drawn by `uncertain_point_coords`."""
    coords = uncertain_point_coords(key, mask_logits[:, 0], num_points, oversample_ratio, importance_sample_ratio)
    return hq_point_loss(mask_logits, target, coords)
