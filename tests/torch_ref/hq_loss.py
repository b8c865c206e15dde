"""sam-hq's training loss (train/utils/loss_mask.py), rebuilt in PyTorch from its behaviour.

The PyPI package segment_anything_hq ships only the model, not the training utilities, so this module restates
what the released `loss_masks` computes: grid_sample reads (align_corners=False, zero padding) of the 256x256
logits and of the full-resolution label at normalised points, points drawn PointRend-style (3x oversampled
uniform candidates, the 75% with the smallest |logit| kept, the rest fresh uniform; 112 * 112 points), then
BCE averaged over points plus dice (+1 smoothing), each summed over masks and divided by the number of masks.
`point_coords` may be passed in so that a test feeds the same points to both implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """maps (N, C, H, W), coords (N, P, 2) xy in [0, 1] -> (N, C, P)."""
    return F.grid_sample(maps, 2.0 * coords[:, :, None] - 1.0, align_corners=False)[..., 0]


def uncertain_point_coords(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float, generator=None
) -> torch.Tensor:
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_ratio * num_points)
    cand = torch.rand(n, num_sampled, 2, generator=generator)
    uncertainty = -point_sample(logits, cand)[:, 0].abs()
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    picked = torch.gather(cand, 1, idx[..., None].expand(-1, -1, 2))
    rand = torch.rand(n, num_points - num_uncertain, 2, generator=generator)
    return torch.cat([picked, rand], dim=1)


def loss_masks(
    src_masks: torch.Tensor,
    target_masks: torch.Tensor,
    num_masks: float,
    oversample_ratio: float = 3.0,
    point_coords: torch.Tensor | None = None,
    generator=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE, dice) of src_masks (N, 1, h, w) logits against target_masks (N, 1, H, W) in [0, 1]."""
    with torch.no_grad():
        if point_coords is None:
            point_coords = uncertain_point_coords(src_masks, 112 * 112, oversample_ratio, 0.75, generator)
        labels = point_sample(target_masks, point_coords)[:, 0]
    logits = point_sample(src_masks, point_coords)[:, 0]
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * labels).sum(-1) + 1) / (prob.sum(-1) + labels.sum(-1) + 1)
    return bce, dice.sum() / num_masks
