"""ResizeLongestSide (segment_anything/utils/transforms.py), NumPy side."""

from __future__ import annotations

import numpy as np
from PIL import Image


def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
    scale = long_side_length * 1.0 / max(oldh, oldw)
    return int(oldh * scale + 0.5), int(oldw * scale + 0.5)


class ResizeLongestSide:
    """Resizes images so the longest side is `target_length`, and prompts to match."""

    def __init__(self, target_length: int):
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HWC uint8 -> resized HWC uint8. PIL bilinear, as the original (torchvision resize on a PIL image)."""
        h, w = get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)
