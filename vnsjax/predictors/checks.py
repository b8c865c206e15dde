"""Argument checks at the predictors' public boundary: an image or prompt the model cannot take is refused with a
message saying what was expected, instead of being cast (a float image in [0, 1] cast to uint8 is black; int16
wraps modulo 256) or decoded into a NaN score.
"""

from __future__ import annotations

import numpy as np

# 1 foreground, 0 background; -1 is SAM's "not a point", which callers use to pad rows with fewer points.
POINT_LABELS = (-1, 0, 1)

_CONVERT_HINT = {
    "f": "for floats in [0, 1] pass (image * 255).round().astype(np.uint8); for floats in 0..255, "
    "image.round().clip(0, 255).astype(np.uint8)",
    "u": "for 16-bit images (0..65535) pass (image / 257).round().astype(np.uint8)",
    "i": "convert it to 0..255 and pass image.astype(np.uint8)",
}


def check_image(image: np.ndarray) -> np.ndarray:
    """`image` as a uint8 (H, W, 3) array, or a ValueError saying how to convert what was given."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        hint = _CONVERT_HINT.get(image.dtype.kind, "convert it to uint8 RGB 0..255")
        raise ValueError(f"set_image expects uint8 pixels 0..255, got dtype {image.dtype}; {hint}")
    if image.ndim == 2:
        raise ValueError(
            f"set_image expects an (H, W, 3) image, got a grey (H, W) one {image.shape}; "
            "pass np.repeat(image[..., None], 3, axis=2)"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        alpha = "; drop alpha with image[..., :3]" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise ValueError(f"set_image expects an (H, W, 3) image, got shape {image.shape}{alpha}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"set_image got an empty image, shape {image.shape}")
    return image


def _finite(name: str, x: np.ndarray | None) -> np.ndarray | None:
    if x is None:
        return None
    try:
        arr = np.asarray(x, np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, got {x!r}") from e
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {np.asarray(x).tolist() if arr.size <= 16 else 'NaN/inf'}")
    return arr


def check_prompts(point_coords, point_labels, boxes, mask_input) -> None:
    """Finite coordinates, boxes and mask logits; labels in POINT_LABELS; boxes with x0 <= x1 and y0 <= y1.

    Shapes are checked where the prompts are packed (`prompts.pack_prompts`).
    """
    _finite("point_coords", point_coords)
    if point_coords is not None and point_labels is None:
        raise ValueError("point_labels must be supplied if point_coords is supplied.")
    if point_labels is not None:
        labels = _finite("point_labels", point_labels)
        bad = labels[~np.isin(labels, POINT_LABELS)]
        if bad.size:
            raise ValueError(
                f"point_labels must be 1 (foreground), 0 (background) or -1 (not a point, padding), got {bad[0]:g}"
            )
    bx = _finite("box", boxes)
    if bx is not None and bx.shape[-1:] == (4,) and ((bx[..., 2] < bx[..., 0]) | (bx[..., 3] < bx[..., 1])).any():
        raise ValueError(f"box must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1, got {bx.tolist()}")
    _finite("mask_input", mask_input)
