"""Prompt packing for the predictors: B prompts in the model's input frame -> one bucketed `Prompts`.

Prompt counts are rounded up to powers of two so that varying numbers of prompts reuse compiled programs;
the padding is masked inside the decoder, so results equal the unpadded prompt.
"""

from __future__ import annotations

import numpy as np

from vnsjax.modeling.prompt_encoder import PAD_LABEL
from vnsjax.modeling.sam import Prompts


def bucket(n: int) -> int:
    """Rounds up to a power of two so that varying prompt counts reuse compiled programs."""
    return 1 << max(0, int(n - 1).bit_length())


def pack_prompts(
    *,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
    mask_size: tuple[int, int] = (256, 256),
    num_prompts: int | None = None,
    num_points: int | None = None,
) -> tuple[Prompts, int]:
    """B prompts (already in the model's input frame) -> a bucketed `Prompts` of NumPy arrays and B.

    point_coords (B, N, 2) + point_labels (B, N); boxes (B, 4); mask_input (B, 1, 4h, 4w). Rows without a
    box get SAM's not-a-point token after their points, as the original prompt encoder does. num_prompts /
    num_points: padded sizes to use instead of the buckets (at least B and N + 1), to stack several images' prompts.
    """
    counts = [len(x) for x in (point_coords, boxes, mask_input) if x is not None]
    if len(set(counts)) > 1:
        raise ValueError(f"point_coords, boxes and mask_input must have the same batch size, got {counts}")
    b = counts[0] if counts else 1
    n = 0 if point_coords is None else np.shape(point_coords)[1]
    bb, nb = num_prompts or bucket(b), num_points or bucket(n + 1)
    if bb < b or nb < n + 1:
        raise ValueError(f"num_prompts / num_points {bb} / {nb} are below the {b} prompts of {n} points (+1)")
    coords = np.zeros((bb, nb, 2), np.float32)
    labels = np.full((bb, nb), PAD_LABEL, np.int32)
    box_arr = np.zeros((bb, 4), np.float32)
    box_valid = np.zeros((bb,), bool)
    masks = np.zeros((bb, *mask_size), np.float32)
    mask_valid = np.zeros((bb,), bool)
    if point_coords is not None:
        pc, pl = np.asarray(point_coords), np.asarray(point_labels) if point_labels is not None else None
        if pl is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied.")
        if pc.ndim != 3 or pc.shape[-1] != 2 or pl.shape != pc.shape[:2]:
            raise ValueError(f"point_coords must be (B, N, 2) with point_labels (B, N); got {pc.shape}, {pl.shape}")
        coords[:b, :n] = pc
        labels[:b, :n] = pl
    if boxes is not None:
        bx = np.asarray(boxes)
        if bx.shape != (b, 4):
            raise ValueError(f"boxes must be (B, 4) xyxy, got {bx.shape}")
        box_arr[:b] = bx
        box_valid[:b] = True
    elif point_coords is not None:
        labels[:b, n] = -1
    if mask_input is not None:
        mi = np.asarray(mask_input, np.float32)
        if mi.shape != (b, 1, *mask_size):
            raise ValueError(f"mask_input must be {(b, 1, *mask_size)} low-res logits, got {mi.shape}")
        masks[:b] = mi[:, 0]
        mask_valid[:b] = True
    return Prompts(coords, labels, box_arr, box_valid, masks, mask_valid), b
