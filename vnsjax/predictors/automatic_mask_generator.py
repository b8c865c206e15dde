"""SamAutomaticMaskGenerator (segment_anything/automatic_mask_generator.py) on the JAX predictors.

Static shapes throughout the device work: every point batch is padded to `points_per_batch` (one compiled
decoder + post-processing program per crop size), the masks that pass the score filters are gathered with
indices padded to a power of two, and NMS runs jitted over a power-of-two candidate set with a validity
mask. Only the data-dependent bookkeeping (which masks survive) runs on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vnsjax.modeling.sam import Sam
from vnsjax.predictors.prompts import bucket
from vnsjax.predictors.sam_predictor import SamPredictor
from vnsjax.utils import amg

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@partial(jax.jit, static_argnames=("mask_threshold", "offset"))
def _batch_stats(masks: jax.Array, *, mask_threshold: float, offset: float):
    """(B, C, H, W) logits at the crop size -> flattened (B*C) bool masks, stability scores, boxes."""
    masks = masks.reshape(-1, *masks.shape[2:])
    stability = amg.calculate_stability_score(masks, mask_threshold, offset)
    binary = masks > mask_threshold
    return binary, stability, amg.batched_mask_to_box(binary)


@jax.jit
def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take(x, idx, axis=0)


class SamAutomaticMaskGenerator:
    def __init__(
        self,
        model: Sam | SamPredictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grids must be provided.")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"Unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}.")
        if output_mode == "coco_rle":
            import pycocotools  # noqa: F401  (fail early, as the original)
        if points_per_side is not None:
            self.point_grids = amg.build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = point_grids
        # A predictor passed in decides the output (e.g. a VnsPredictor's edge map); a model gets its prediction.
        self.predictor = model if isinstance(model, SamPredictor) else SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    # ---- public API ------------------------------------------------------------------------------

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """HWC uint8 RGB image -> one dict per mask (segmentation, area, bbox XYWH, predicted_iou, point_coords,
        stability_score, crop_box XYWH), sorted as the original (by score through NMS)."""
        return self.generate_batch([image])[0]

    def generate_batch(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """`generate` for several images, their crops encoded together in one encoder call (`set_images`): one
        list of mask dicts per image, equal to `generate` on each."""
        images = [np.asarray(image) for image in images]
        crops = [
            amg.generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio) for image in images
        ]
        jobs = [
            (i, box, layer) for i, (boxes, layers) in enumerate(crops) for box, layer in zip(boxes, layers, strict=True)
        ]
        self.predictor.set_images([images[i][box[1] : box[3], box[0] : box[2], :] for i, box, _ in jobs])
        parts: list[list[dict[str, Any]]] = [[] for _ in images]
        for index, (i, box, layer) in enumerate(jobs):
            parts[i].append(self._process_crop(index, box, layer, images[i].shape[:2]))
        self.predictor.reset_image()
        return [self._annotations(self._merge_crops(p, len(c[0]))) for p, c in zip(parts, crops, strict=True)]

    def _annotations(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if self.min_mask_region_area > 0:
            data = self.postprocess_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        if self.output_mode == "coco_rle":
            segs = [amg.coco_encode_rle(r) for r in data["rles"]]
        elif self.output_mode == "binary_mask":
            segs = [amg.rle_to_mask(r) for r in data["rles"]]
        else:
            segs = data["rles"]
        anns = []
        for i, seg in enumerate(segs):
            anns.append(
                {
                    "segmentation": seg,
                    "area": amg.area_from_rle(data["rles"][i]),
                    "bbox": amg.box_xyxy_to_xywh(data["boxes"][i]).tolist(),
                    "predicted_iou": float(data["iou_preds"][i]),
                    "point_coords": [data["points"][i].tolist()],
                    "stability_score": float(data["stability_score"][i]),
                    "crop_box": amg.box_xyxy_to_xywh(np.asarray(data["crop_boxes"][i])).tolist(),
                }
            )
        return anns

    # ---- internals -------------------------------------------------------------------------------

    def _merge_crops(self, parts: list[dict[str, Any]], num_crops: int) -> dict[str, Any]:
        data = _cat(parts)
        if num_crops > 1 and len(data["rles"]):
            # Prefer masks from smaller crops (finer detail) where crops overlap.
            crop = data["crop_boxes"].astype(np.float32)
            scores = 1.0 / ((crop[:, 2] - crop[:, 0]) * (crop[:, 3] - crop[:, 1]))
            data = _filter(data, amg.nms(data["boxes"], scores, self.crop_nms_thresh))
        return data

    def _process_crop(
        self, image_index: int, crop_box: list[int], layer_idx: int, orig_size: tuple[int, int]
    ) -> dict[str, Any]:
        """The points of one crop, set in the predictor as image `image_index`."""
        crop_size = self.predictor.original_sizes[image_index]
        points = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        parts = [
            self._process_batch(points[i : i + self.points_per_batch], image_index, crop_box, orig_size)
            for i in range(0, len(points), self.points_per_batch)
        ]
        data = _cat(parts)
        data = _filter(data, amg.nms(data["boxes"], data["iou_preds"], self.box_nms_thresh))
        data["boxes"] = amg.uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = amg.uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = np.array([crop_box] * len(data["rles"]), np.int64).reshape(-1, 4)
        return data

    def _process_batch(
        self, points: np.ndarray, image_index: int, crop_box: list[int], orig_size: tuple[int, int]
    ) -> dict[str, Any]:
        p = self.predictor
        n = len(points)
        # Pad the last batch to the fixed batch size (repeat the first point) so one program serves all batches.
        padded = np.concatenate([points, np.repeat(points[:1], self.points_per_batch - n, axis=0)])
        in_points = p.transform.apply_coords(padded, p.original_sizes[image_index])
        low_res, iou = p.predict_low_res(
            in_points[:, None, :], np.ones((len(padded), 1), np.int32), multimask_output=True, image_index=image_index
        )
        binary, stability, boxes = _batch_stats(
            p.postprocess_masks(low_res, image_index=image_index),
            mask_threshold=float(p.model.mask_threshold),
            offset=float(self.stability_score_offset),
        )
        c = low_res.shape[1]
        iou = np.asarray(iou)[:n, :c].reshape(-1)
        stability = np.asarray(stability)[: n * c]
        boxes = np.asarray(boxes)[: n * c]
        pts = np.repeat(points, c, axis=0)
        keep = np.ones(n * c, bool)
        if self.pred_iou_thresh > 0.0:
            keep &= iou > self.pred_iou_thresh
        if self.stability_score_thresh > 0.0:
            keep &= stability >= self.stability_score_thresh
        orig_h, orig_w = orig_size
        keep &= ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        idx = np.nonzero(keep)[0]
        # Gather only the survivors off the device, with the index count bucketed to bound recompilation.
        idx_padded = np.zeros(bucket(max(len(idx), 1)), np.int32)
        idx_padded[: len(idx)] = idx
        masks = np.asarray(_take(binary, jnp.asarray(idx_padded)))[: len(idx)]
        masks = amg.uncrop_masks(masks, crop_box, orig_h, orig_w)
        return {
            "rles": amg.mask_to_rle(masks),
            "iou_preds": iou[idx].astype(np.float32),
            "stability_score": stability[idx].astype(np.float32),
            "boxes": boxes[idx].astype(np.int64),
            "points": pts[idx].astype(np.float64),
        }

    @staticmethod
    def postprocess_small_regions(data: dict[str, Any], min_area: int, nms_thresh: float) -> dict[str, Any]:
        """Removes small islands and holes, then NMS preferring unchanged masks (as the original)."""
        if len(data["rles"]) == 0:
            return data
        masks, scores = [], []
        for rle in data["rles"]:
            mask = amg.rle_to_mask(rle)
            mask, changed_holes = amg.remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = amg.remove_small_regions(mask, min_area, mode="islands")
            masks.append(mask)
            scores.append(float(not (changed_holes or changed_islands)))
        stacked = np.stack(masks)
        boxes = amg.mask_to_box_np(stacked)
        keep = amg.nms(boxes, np.asarray(scores, np.float32), nms_thresh)
        data = dict(data)
        data["rles"] = list(data["rles"])
        data["boxes"] = np.array(data["boxes"], copy=True)
        for i in keep:
            if scores[i] == 0.0:  # recompute what changed
                data["rles"][i] = amg.mask_to_rle(stacked[i : i + 1])[0]
                data["boxes"][i] = boxes[i]
        return _filter(data, keep)


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rles": [r for p in parts for r in p["rles"]]}
    for key, shape in (("iou_preds", ()), ("stability_score", ()), ("boxes", (4,)), ("points", (2,))):
        arrs = [p[key] for p in parts]
        out[key] = np.concatenate(arrs) if arrs else np.zeros((0, *shape))
    if all("crop_boxes" in p for p in parts) and parts:
        out["crop_boxes"] = np.concatenate([p["crop_boxes"] for p in parts])
    return out


def _filter(data: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    return {k: [v[i] for i in keep] if isinstance(v, list) else v[keep] for k, v in data.items()}
