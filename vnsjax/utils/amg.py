"""Automatic-mask-generation utilities (segment_anything/utils/amg.py), NumPy on the host and JAX where jitted.

The per-batch work (stability score, thresholding, boxes) and NMS run under `jax.jit` on fixed shapes; the
data-dependent filtering between them (how many masks survive) stays on the host in NumPy, as it must.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# ---- point grids and crops ----------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points in [0, 1]x[0, 1], cell centres, x varying fastest (as the original)."""
    offset = 1 / (2 * n_per_side)
    one_side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy) for each layer: the full image, then 2x2, 4x4, ... overlapping crops."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layer_idxs = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w, crop_h = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return boxes, layer_idxs


def uncrop_boxes_xyxy(boxes: np.ndarray, crop_box: list[int]) -> np.ndarray:
    x0, y0, _, _ = crop_box
    return boxes + np.array([x0, y0, x0, y0], dtype=boxes.dtype)


def uncrop_points(points: np.ndarray, crop_box: list[int]) -> np.ndarray:
    x0, y0, _, _ = crop_box
    return points + np.array([x0, y0], dtype=points.dtype)


def uncrop_masks(masks: np.ndarray, crop_box: list[int], orig_h: int, orig_w: int) -> np.ndarray:
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    pad = ((0, 0), (y0, orig_h - y1), (x0, orig_w - x1))
    return np.pad(masks, pad)


def is_box_near_crop_edge(
    boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> np.ndarray:
    """Boxes touching a crop edge that is not also an image edge (those masks are likely cut off)."""
    crop = np.asarray(crop_box, np.float32)[None]
    orig = np.asarray(orig_box, np.float32)[None]
    b = uncrop_boxes_xyxy(boxes, crop_box).astype(np.float32)
    near_crop = np.abs(b - crop) <= atol
    near_image = np.abs(b - orig) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def box_xyxy_to_xywh(box: np.ndarray) -> np.ndarray:
    out = np.array(box, copy=True)
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out


# ---- jitted mask statistics ---------------------------------------------------------------------


def calculate_stability_score(masks: jax.Array, mask_threshold: float, offset: float) -> jax.Array:
    """IoU between the masks thresholded at threshold+offset and threshold-offset, over the last two axes."""
    inter = jnp.sum(masks > (mask_threshold + offset), axis=(-1, -2), dtype=jnp.int32)
    union = jnp.sum(masks > (mask_threshold - offset), axis=(-1, -2), dtype=jnp.int32)
    return inter / union


def batched_mask_to_box(masks: jax.Array) -> jax.Array:
    """(..., H, W) bool -> (..., 4) int32 xyxy with inclusive max edges; empty masks give [0, 0, 0, 0]."""
    h, w = masks.shape[-2:]
    rows = jnp.any(masks, axis=-1)
    cols = jnp.any(masks, axis=-2)

    def edges(m: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        idx = jnp.arange(n, dtype=jnp.int32)
        hi = jnp.max(jnp.where(m, idx, 0), axis=-1)
        lo = jnp.min(jnp.where(m, idx, n), axis=-1)
        return lo, hi

    top, bottom = edges(rows, h)
    left, right = edges(cols, w)
    empty = (right < left) | (bottom < top)
    out = jnp.stack([left, top, right, bottom], axis=-1)
    return jnp.where(empty[..., None], 0, out)


def mask_to_box_np(masks: np.ndarray) -> np.ndarray:
    """NumPy twin of `batched_mask_to_box` for host-side post-processing (few masks, any size)."""
    return np.asarray(batched_mask_to_box(jnp.asarray(masks)))


# ---- NMS ----------------------------------------------------------------------------------------


def _box_area(b: jax.Array) -> jax.Array:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


@jax.jit
def _nms_kernel(boxes: jax.Array, scores: jax.Array, valid: jax.Array, iou_threshold: jax.Array) -> jax.Array:
    """Greedy NMS over a fixed-size candidate set. Returns a (N,) order (by score, valid first) and keep flags.

    Same rule as torchvision.ops.nms: visit boxes by descending score, drop any box whose IoU with an already
    kept box exceeds the threshold. Invalid (padding) slots sort last and are never kept.
    """
    n = boxes.shape[0]
    # Stable sort on (-valid, -score) so padding goes last and equal scores keep their input order.
    order = jnp.lexsort((-scores, ~valid))
    b = boxes[order].astype(jnp.float32)
    v = valid[order]
    area = _box_area(b)
    lt = jnp.maximum(b[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter)
    over = iou > iou_threshold

    def body(i: int, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        keep, suppressed = carry
        k = v[i] & ~suppressed[i]
        keep = keep.at[i].set(k)
        # Only boxes after i can still be affected; over[i] is harmless for earlier ones (already decided).
        suppressed = suppressed | (k & over[i])
        return keep, suppressed

    keep, _ = jax.lax.fori_loop(0, n, body, (jnp.zeros(n, bool), jnp.zeros(n, bool)))
    return jnp.stack([order, keep.astype(order.dtype)])


def _bucket(n: int, minimum: int = 64) -> int:
    return max(minimum, 1 << max(0, int(n - 1).bit_length()))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, sorted by descending score (torchvision.ops.nms / batched_nms with one class).

    Candidates are padded to a power-of-two bucket with a validity mask so the jitted kernel compiles once
    per bucket rather than once per candidate count.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros((0,), np.int64)
    size = _bucket(n)
    pb = np.zeros((size, 4), np.float32)
    ps = np.zeros((size,), np.float32)
    pv = np.zeros((size,), bool)
    pb[:n], ps[:n], pv[:n] = boxes, scores, True
    order, keep = np.asarray(_nms_kernel(pb, ps, pv, jnp.float32(iou_threshold)))
    return order[keep.astype(bool)].astype(np.int64)


# ---- RLE ----------------------------------------------------------------------------------------


def mask_to_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """(B, H, W) bool -> uncompressed RLEs in column-major (COCO) order, as mask_to_rle_pytorch."""
    b, h, w = masks.shape
    flat = np.ascontiguousarray(masks.transpose(0, 2, 1)).reshape(b, h * w)
    diff = flat[:, 1:] ^ flat[:, :-1]
    rows, idx = np.nonzero(diff)
    out = []
    splits = np.searchsorted(rows, np.arange(b + 1))
    for i in range(b):
        cur = np.concatenate([[0], idx[splits[i] : splits[i + 1]] + 1, [h * w]])
        counts = [] if not flat[i, 0] else [0]
        counts.extend(np.diff(cur).tolist())
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = np.arange(len(counts)) % 2 == 1
    mask = np.repeat(values, counts)
    return mask.reshape(w, h).transpose()


def area_from_rle(rle: dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    from pycocotools import mask as mask_utils  # optional dependency, only for output_mode="coco_rle"

    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


# ---- small regions --------------------------------------------------------------------------------


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Removes small disconnected islands or fills small holes (OpenCV, as the original)."""
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = (correct_holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[:, -1][1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not correct_holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:  # every region is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
