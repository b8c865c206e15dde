"""Image/mask/edge transforms of the released training and evaluation loaders (utils/dataloader_edge.py).

All resizes mirror ``F.interpolate(mode="bilinear", align_corners=False)`` without antialias (cv2 INTER_LINEAR on
float32 uses the same half-pixel source coordinates and edge clamping). Image arithmetic stays float32 until the
final truncating cast to uint8, as the released code does before the image enters SAM.
"""

from __future__ import annotations

import cv2
import numpy as np

OUTPUT_SIZE = 1024
PAD_IMAGE = 128.0  # raw pixel value; normalisation happens inside SAM
PAD_TARGET = 0.0


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 bilinear resize of (H, W) or (H, W, C) to ``size`` = (height, width), torch semantics."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[:2] == tuple(size):
        return x.copy()  # torch's scale-1 bilinear is the identity
    return cv2.resize(x, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def hflip(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flips each (H, W[, C]) array left-right (RandomHFlip flips image, label and edge together)."""
    return tuple(np.ascontiguousarray(a[:, ::-1]) for a in arrays)


def random_hflip(rng: np.random.Generator, *arrays: np.ndarray, prob: float = 0.5) -> tuple[np.ndarray, ...]:
    """RandomHFlip: flips when ``random() >= prob`` (the released comparison; p = 0.5 either way)."""
    return hflip(*arrays) if rng.random() >= prob else arrays


def jitter_size(
    height: int, width: int, u: float, *, output_size: int = OUTPUT_SIZE, scale_min: float = 0.1, scale_max: float = 2.0
) -> tuple[int, int]:
    """Scaled (height, width) of LargeScaleJitter for a uniform draw ``u`` in [0, 1).

    Replays the released float32 tensor arithmetic, rounding half to even like torch.round:
    target = round((u * (max - min) + min) * 1024); scale = min(target / h, target / w); size = round(hw * scale).
    """
    f32 = np.float32
    random_scale = f32(u) * f32(scale_max - scale_min) + f32(scale_min)
    target = np.round(random_scale * f32(output_size))
    scale = min(target / f32(height), target / f32(width))
    return int(np.round(f32(height) * scale)), int(np.round(f32(width) * scale))


def _crop_pad(x: np.ndarray, y0: int, x0: int, size: int, value: float) -> np.ndarray:
    """Crops at most size x size at (y0, x0), then pads bottom/right to size x size with ``value``."""
    crop = x[y0 : y0 + size, x0 : x0 + size]
    out = np.full((size, size) + x.shape[2:], value, np.float32)
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


def large_scale_jitter(
    image: np.ndarray,
    mask: np.ndarray,
    edge: np.ndarray,
    rng: np.random.Generator,
    *,
    output_size: int = OUTPUT_SIZE,
    scale_min: float = 0.1,
    scale_max: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LargeScaleJitter on image (H, W, 3), mask (H, W) 0..255 and edge (H, W) in [0, 1].

    Random long-side scale U(min, max) x 1024 keeping aspect, bilinear resize, random crop to at most
    output_size^2, pad bottom/right with 128 (image) / 0 (mask, edge). Returns the image truncated to uint8 and
    float32 mask (0..255, soft at resized borders) and edge.
    """
    h, w = mask.shape
    nh, nw = jitter_size(h, w, rng.random(), output_size=output_size, scale_min=scale_min, scale_max=scale_max)
    # The released code draws the crop offsets with np.random.randint(0, margin + 1) after the scale.
    y0 = int(rng.integers(0, max(nh - output_size, 0) + 1))
    x0 = int(rng.integers(0, max(nw - output_size, 0) + 1))
    image = _crop_pad(resize_bilinear(image, (nh, nw)), y0, x0, output_size, PAD_IMAGE)
    mask = _crop_pad(resize_bilinear(mask, (nh, nw)), y0, x0, output_size, PAD_TARGET)
    edge = _crop_pad(resize_bilinear(edge, (nh, nw)), y0, x0, output_size, PAD_TARGET)
    return image.astype(np.uint8), mask, edge


def eval_resize(image: np.ndarray, mask: np.ndarray, size: int = OUTPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation Resize: both to exactly size x size (aspect not kept, no padding); image truncated to uint8."""
    return resize_bilinear(image, (size, size)).astype(np.uint8), resize_bilinear(mask, (size, size))
