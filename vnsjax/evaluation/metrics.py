"""Per-image evaluation metrics of VNS-SAM, on the host (NumPy/OpenCV/SciPy), as released.

Conventions (MyTrain.py `evaluate`, utils/misc.py):
- `pred` for IoU / BIoU is logits at the ground truth's resolution (binarised at > 0) or a bool mask;
  `gt` is the uint8 0-255 mask (binarised at > 128) or a bool mask.
- E-measure and weighted F-measure take the same inputs as PySODMetrics: a uint8 0-255 prediction map
  (see `logits_to_uint8`) and a uint8 0-255 mask; they reproduce PySODMetrics (1.4-1.6) `Emeasure`
  (mean over the 256-threshold curve, "meanEm") and `WeightedFmeasure` (beta 1).
Dataset-level averaging lives in `vnsjax.report`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

# MATLAB's eps, which PySODMetrics uses in every denominator.
_EPS = np.spacing(1)


def binarize_pred(pred: np.ndarray) -> np.ndarray:
    """Logits -> bool at > 0 (bool input passes through)."""
    pred = np.asarray(pred)
    return pred if pred.dtype == bool else pred > 0


def binarize_gt(gt: np.ndarray) -> np.ndarray:
    """0-255 mask -> bool at > 128 (bool input passes through)."""
    gt = np.asarray(gt)
    return gt if gt.dtype == bool else gt > 128


def logits_to_uint8(logits: np.ndarray) -> np.ndarray:
    """Prediction map fed to E-measure / wFm, as released: sigmoid, min-max (+1e-8), x255, truncation.

    `logits` should already be at the ground truth's resolution. The arithmetic stays in float32 as in
    the released code (torch float32 tensor -> numpy), so the truncation lands on the same integers.
    """
    prob = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32)))
    prob = (prob - prob.min()) / (prob.max() - prob.min() + np.float32(1e-8))
    return (prob * np.float32(255)).astype(np.uint8)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mask IoU; 0.0 when the ground truth is empty (misc.mask_iou)."""
    p, g = binarize_pred(pred), binarize_gt(gt)
    if not g.any():
        return 0.0
    return float(np.count_nonzero(p & g) / np.count_nonzero(p | g))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient as logged by the released evaluation; 0.0 when both masks are empty."""
    p, g = binarize_pred(pred), binarize_gt(gt)
    total = np.count_nonzero(p) + np.count_nonzero(g)
    return float(2.0 * np.count_nonzero(p & g) / total) if total else 0.0


def boundary_band(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary band: mask minus its erosion by d = max(1, round(ratio * diagonal)) 3x3 steps.

    Pixels outside the image count as background (the released code pads a 1-px zero border, and the
    erosion propagates it), so d iterated 3x3 erosions equal one (2d+1)-square erosion with a zero border.
    """
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    m = mask.astype(np.uint8)
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    eroded = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return m > eroded


def boundary_iou(pred: np.ndarray, gt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of the two inner bands; NaN when both bands are empty, as released (0 / 0)."""
    gb = boundary_band(binarize_gt(gt), dilation_ratio)
    pb = boundary_band(binarize_pred(pred), dilation_ratio)
    union = np.count_nonzero(gb | pb)
    return float(np.count_nonzero(gb & pb) / union) if union else float("nan")


def _normalize_sod(pred_u8: np.ndarray, gt_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PySODMetrics `prepare_data`: im2double then mapminmax on the prediction, GT > 128."""
    if pred_u8.shape != gt_u8.shape:
        raise ValueError(f"shape mismatch: prediction {pred_u8.shape} vs ground truth {gt_u8.shape}")
    pred = np.asarray(pred_u8) / 255
    lo, hi = pred.min(), pred.max()
    if hi != lo:
        pred = (pred - lo) / (hi - lo)
    return pred, np.asarray(gt_u8) > 128


def e_measure_curve(pred_u8: np.ndarray, gt_u8: np.ndarray) -> np.ndarray:
    """Enhanced-alignment measure at the 256 thresholds 255..0 (PySODMetrics `changeable_ems`)."""
    pred, gt = _normalize_sod(pred_u8, gt_u8)
    levels = (pred * 255).astype(np.uint8)
    size = gt.size
    gt_fg = np.count_nonzero(gt)
    # Pixels predicted foreground at threshold t are those with level >= t; reversed cumulative counts.
    fg_fg = np.cumsum(np.bincount(levels[gt], minlength=256)[::-1]).astype(np.float64)
    fg_bg = np.cumsum(np.bincount(levels[~gt], minlength=256)[::-1]).astype(np.float64)
    pred_fg = fg_fg + fg_bg
    pred_bg = size - pred_fg
    if gt_fg == 0:
        enhanced = pred_bg
    elif gt_fg == size:
        enhanced = pred_fg
    else:
        bg_fg = gt_fg - fg_fg
        bg_bg = pred_bg - bg_fg
        mean_pred = pred_fg / size
        mean_gt = gt_fg / size
        enhanced = np.zeros_like(pred_fg)
        for count, dp, dg in (
            (fg_fg, 1 - mean_pred, 1 - mean_gt),
            (fg_bg, 1 - mean_pred, -mean_gt),
            (bg_fg, -mean_pred, 1 - mean_gt),
            (bg_bg, -mean_pred, -mean_gt),
        ):
            align = 2 * (dp * dg) / (dp**2 + dg**2 + _EPS)
            enhanced = enhanced + (align + 1) ** 2 / 4 * count
    return enhanced / (size - 1 + _EPS)


def mean_e_measure(pred_u8: np.ndarray, gt_u8: np.ndarray) -> float:
    """Mean E-measure over the threshold curve ("meanEm" of the released tables)."""
    return float(e_measure_curve(pred_u8, gt_u8).mean())


def _gauss7x7_sigma5() -> np.ndarray:
    """MATLAB fspecial('gaussian', 7, 5)."""
    y, x = np.ogrid[-3:4, -3:4]
    h = np.exp(-(x * x + y * y) / (2.0 * 5 * 5))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h / h.sum()


def weighted_f_measure(pred_u8: np.ndarray, gt_u8: np.ndarray, beta: float = 1.0) -> float:
    """Weighted F-measure (Margolin et al. 2014) as in PySODMetrics; 0.0 when the ground truth is empty.

    PySODMetrics writes the combination as (1 + beta) R P / (R + beta P); the paper's beta^2 form is the
    same for the beta = 1 that is used everywhere.
    """
    pred, gt = _normalize_sod(pred_u8, gt_u8)
    if not gt.any():
        return 0.0
    # Background pixels take the error of their nearest foreground pixel (scipy's tie-breaking, as the
    # reference implementation uses the same EDT).
    dist, (iy, ix) = ndimage.distance_transform_edt(~gt, return_indices=True)
    err = np.abs(pred - gt)
    err_t = err[iy, ix]
    err_a = ndimage.convolve(err_t, _gauss7x7_sigma5(), mode="constant", cval=0.0)
    min_e = np.where(gt & (err_a < err), err_a, err)
    importance = np.where(gt, 1.0, 2.0 - np.exp(np.log(0.5) / 5 * dist))
    ew = min_e * importance
    ew_fg = ew[gt]
    tpw = np.count_nonzero(gt) - ew_fg.sum()
    fpw = ew[~gt].sum()
    recall = 1.0 - ew_fg.mean()
    precision = tpw / (tpw + fpw + _EPS)
    return float((1 + beta) * recall * precision / (recall + beta * precision + _EPS))


def evaluate_image(logits: np.ndarray, gt_u8: np.ndarray) -> dict[str, float]:
    """All per-image metrics of the released evaluation from original-resolution logits and a 0-255 mask."""
    gt_u8 = np.asarray(gt_u8, dtype=np.uint8)
    pred_u8 = logits_to_uint8(logits)
    return {
        "iou": iou(logits, gt_u8),
        "biou": boundary_iou(logits, gt_u8),
        "em": mean_e_measure(pred_u8, gt_u8),
        "wfm": weighted_f_measure(pred_u8, gt_u8),
        "dice": dice(logits, gt_u8),
    }


def _coco_annotations(masks: np.ndarray, categories: np.ndarray, image_id: int) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_utils

    anns = []
    for m, c in zip(masks, categories, strict=True):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "image_id": image_id,
                "category_id": int(c),
                "segmentation": rle,
                "iscrowd": 0,
                "area": float(mask_utils.area(rle)),
                "bbox": mask_utils.toBbox(rle).tolist(),
            }
        )
    return anns


def instance_ap(
    gt_masks: Sequence[np.ndarray],
    pred_masks: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    gt_categories: Sequence[np.ndarray] | None = None,
    pred_categories: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """COCO mask AP, AP50, AP75 (pycocotools `COCOeval`, iouType 'segm') over a set of images.

    Per image i: gt_masks[i] (N, H, W) bool, pred_masks[i] (M, H, W) bool, pred_scores[i] (M,).
    Categories default to a single class. pycocotools is imported lazily (an optional dependency).
    Returns 0.0 for all three when there is no detection at all (pycocotools cannot load an empty list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for i, (gms, pms, scores) in enumerate(zip(gt_masks, pred_masks, pred_scores, strict=True)):
        gms, pms = np.asarray(gms, dtype=bool), np.asarray(pms, dtype=bool)
        images.append({"id": i, "height": int(gms.shape[-2]), "width": int(gms.shape[-1])})
        gcats = np.ones(len(gms), int) if gt_categories is None else np.asarray(gt_categories[i])
        pcats = np.ones(len(pms), int) if pred_categories is None else np.asarray(pred_categories[i])
        annotations += _coco_annotations(gms, gcats, i)
        for det, score in zip(_coco_annotations(pms, pcats, i), np.asarray(scores, float), strict=True):
            # Only the segmentation: with a bbox present, loadRes would take the box area as the mask area.
            keep = ("image_id", "category_id", "segmentation")
            detections.append({k: det[k] for k in keep} | {"score": float(score)})
    if not detections:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    for k, ann in enumerate(annotations, start=1):
        ann["id"] = k
    categories = sorted({a["category_id"] for a in annotations + detections})
    coco_gt = COCO()
    coco_gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(detections), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2])}
