"""Prompt sampling of the released code (utils/misc.py, MyTrain.py), on masks with values 0..255.

Everything thresholds the (possibly soft, after resizing) mask at > 128. Random draws use a NumPy generator
instead of torch's global generators: same distributions, not the same numbers.
"""

from __future__ import annotations

import numpy as np

from data_pipeline.transforms import resize_bilinear

NUM_POINTS = 10
MASK_INPUT_SIZE = 256
BOX_NOISE_SCALE = 0.1
# masks_to_boxes on an empty mask: min over a 1e8-filled tensor, max over zeros.
EMPTY_BOX = np.array([1e8, 1e8, 0.0, 0.0], np.float32)
PROMPT_BOX, PROMPT_POINTS, PROMPT_MASK = 0, 1, 2


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box of pixels > 128, inclusive max indices, float32 (4,); ``EMPTY_BOX`` when none."""
    fg = mask > 128
    cols, rows = np.flatnonzero(fg.any(axis=0)), np.flatnonzero(fg.any(axis=1))
    if cols.size == 0:
        return EMPTY_BOX.copy()
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.float32)


def sample_points(mask: np.ndarray, rng: np.random.Generator, k: int = NUM_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """k foreground (> 128) pixels without replacement, xy float32 (k, 2), labels int32 (k,) all 1.

    With fewer than k foreground pixels the released sampler returns fewer points; here the missing rows are
    (0, 0) with label -1, SAM's padding-point label, so shapes stay static.
    """
    flat = np.flatnonzero(mask > 128)
    n = min(k, flat.size)
    chosen = flat[rng.choice(flat.size, size=n, replace=False)] if n else flat[:0]
    points = np.zeros((k, 2), np.float32)
    points[:n, 0] = chosen % mask.shape[1]
    points[:n, 1] = chosen // mask.shape[1]
    labels = np.full((k,), -1, np.int32)
    labels[:n] = 1
    return points, labels


def _incoherent(mask01: np.ndarray, factor: int = 8) -> np.ndarray:
    """Pixels where the mask differs by >= 0.01 from its bilinear /factor down-up reconstruction."""
    h, w = mask01.shape
    recovered = resize_bilinear(resize_bilinear(mask01, (h // factor, w // factor)), (h, w))
    return np.abs(mask01 - recovered) >= 0.01


def noisy_mask(mask: np.ndarray, rng: np.random.Generator, size: int = MASK_INPUT_SIZE) -> np.ndarray:
    """masks_noise of the bilinearly downsampled mask: float32 (size, size) with values 0 / 255.

    Gaussian noise (std 1) is added only on incoherent pixels of mask/255, then thresholded at 0.5.
    """
    m01 = resize_bilinear(mask, (size, size)) / np.float32(255.0)
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noisy = m01 + noise * _incoherent(m01).astype(np.float32)
    return (noisy > 0.5).astype(np.float32) * np.float32(255.0)


def noisy_box(
    box: np.ndarray, rng: np.random.Generator, scale: float = BOX_NOISE_SCALE, limit: float = 1024.0
) -> np.ndarray:
    """box_noise: in (cx, cy, w, h) add U(-1, 1) * (w/2, h/2, w, h) * scale, back to xyxy, clamp to [0, limit]."""
    f32 = np.float32
    x0, y0, x1, y1 = np.asarray(box, f32)
    cxcywh = np.array([(x0 + x1) / f32(2), (y0 + y1) / f32(2), x1 - x0, y1 - y0], f32)
    diff = np.concatenate([cxcywh[2:] / f32(2), cxcywh[2:]])
    u = rng.random(4, dtype=f32) * f32(2) - f32(1)
    cx, cy, w, h = cxcywh + u * diff * f32(scale)
    out = np.array([cx - f32(0.5) * w, cy - f32(0.5) * h, cx + f32(0.5) * w, cy + f32(0.5) * h], f32)
    return np.clip(out, f32(0), f32(limit))


def sample_train_prompts(masks: np.ndarray, rng: np.random.Generator, k: int = NUM_POINTS) -> dict[str, np.ndarray]:
    """Prompts for a batch of augmented masks (B, 1024, 1024), 0..255, as MyTrain.py's training loop draws them.

    Each sample picks uniformly among box / points / noisy mask. As in the release, points are removed from the
    choices of the whole batch when any sample has fewer than k foreground pixels (there the per-image samples
    cannot be stacked). An empty mask (object cropped away) keeps the released degenerate box ``EMPTY_BOX``.
    Every field is filled for every sample, whatever its ``prompt_type``, so batch shapes are static.
    """
    b = masks.shape[0]
    points = np.zeros((b, k, 2), np.float32)
    labels = np.full((b, k), -1, np.int32)
    for i in range(b):
        points[i], labels[i] = sample_points(masks[i], rng, k)
    choices = [PROMPT_BOX, PROMPT_POINTS, PROMPT_MASK] if (labels == 1).all() else [PROMPT_BOX, PROMPT_MASK]
    return {
        "box": np.stack([box_from_mask(m) for m in masks]),
        "points": points,
        "point_labels": labels,
        "mask_input": np.stack([noisy_mask(m, rng) for m in masks]),
        "prompt_type": rng.choice(np.array(choices, np.int32), size=b),
    }
