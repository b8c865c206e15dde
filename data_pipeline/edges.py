"""Edge (boundary) ground truth, as the released code makes it.

Offline (utils/generate_boundary.py): external contours of the mask drawn 5 px thick with value 255.
At load time (utils/dataloader_edge.py): dilated with a 5x5 ones kernel once, then ToTensor scales to [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

_DILATE_KERNEL = np.ones((5, 5), np.uint8)


def boundary_from_mask(mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W) 0/255 boundary map of a mask (any non-zero pixel is foreground, as in cv2.findContours)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boundary = np.zeros_like(mask)
    cv2.drawContours(boundary, contours, -1, 255, 5)
    return boundary


def edge_target(boundary: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1]: the stored boundary dilated by 5x5 ones (1 iteration) and divided by 255."""
    dilated = cv2.dilate(np.ascontiguousarray(boundary, dtype=np.uint8), _DILATE_KERNEL, iterations=1)
    return dilated.astype(np.float32) / np.float32(255.0)
