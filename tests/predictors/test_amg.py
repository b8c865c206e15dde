"""Automatic mask generation against the original segment_anything on the same randomised tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from convert_weights.mapping import load_state_dict
from data_pipeline.synthetic import make_scene
from vnsjax.build_sam import MODEL_CONFIGS, build_sam
from vnsjax.predictors.automatic_mask_generator import SamAutomaticMaskGenerator
from vnsjax.utils import amg

torch = pytest.importorskip("torch")
sa = pytest.importorskip("segment_anything")
from segment_anything.utils import amg as ref_amg  # noqa: E402

from tests.torch_ref.sam import build_torch_sam, torch_state_dict  # noqa: E402

# Thresholds 0 keep every scored mask (a random model's IoU predictions are low); box NMS at 0.99 keeps the
# many near-duplicate masks a random model makes apart from exact duplicates, so the set is nontrivial while
# NMS, the crop-edge filter and crop NMS (crop_n_layers=1, also at 0.99) all still decide something.
KW = dict(
    points_per_side=6,
    points_per_batch=16,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=0.99,
    crop_nms_thresh=0.99,
    crop_n_layers=1,
    crop_n_points_downscale_factor=2,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def both():
    cfg = MODEL_CONFIGS["tiny"]
    ref = build_torch_sam(cfg, seed=0)
    model = build_sam(cfg, "sam")
    load_state_dict(model, torch_state_dict(ref))
    image, _ = make_scene("camouflage", np.random.default_rng(0))
    image = np.ascontiguousarray(image[:160, :200])
    with torch.no_grad():
        ref_anns = sa.SamAutomaticMaskGenerator(ref, **KW).generate(image)
    anns = SamAutomaticMaskGenerator(model, **KW).generate(image)
    return image, ref_anns, anns


@pytest.mark.slow
def test_matches_original(both):
    image, ref_anns, anns = both
    assert len(ref_anns) >= 5  # a nontrivial set
    assert len(anns) == len(ref_anns)
    ious = np.array([max(_iou(r["segmentation"], a["segmentation"]) for a in anns) for r in ref_anns])
    assert (ious >= 0.99).mean() >= 0.95, ious
    # Same order (by predicted IoU through NMS) and same per-mask statistics for the matched masks.
    for r, a in zip(ref_anns, anns, strict=True):
        assert a["segmentation"].shape == image.shape[:2] and a["segmentation"].dtype == bool
        assert abs(a["predicted_iou"] - r["predicted_iou"]) < 1e-3
        assert abs(a["stability_score"] - r["stability_score"]) < 1e-2
        assert a["crop_box"] == r["crop_box"]
        np.testing.assert_allclose(a["point_coords"], r["point_coords"], atol=1e-6)
        if _iou(a["segmentation"], r["segmentation"]) >= 0.99:
            np.testing.assert_allclose(a["bbox"], r["bbox"], atol=2)
        assert a["area"] == int(a["segmentation"].sum())


@pytest.mark.slow
def test_rle_modes_and_small_regions(both):
    _, _, anns = both
    masks = np.stack([a["segmentation"] for a in anns])
    rles = amg.mask_to_rle(masks)
    assert rles == ref_amg.mask_to_rle_pytorch(torch.as_tensor(masks))
    for rle, m in zip(rles, masks, strict=True):
        np.testing.assert_array_equal(amg.rle_to_mask(rle), m)
        assert amg.area_from_rle(rle) == m.sum()
    assert amg.coco_encode_rle(rles[0]) == ref_amg.coco_encode_rle(rles[0])
    boxes = np.asarray(amg.mask_to_box_np(masks))
    np.testing.assert_array_equal(boxes, ref_amg.batched_mask_to_box(torch.as_tensor(masks)).numpy())

    # min_mask_region_area: same masks kept and edited as the original's post-processing.
    data = {
        "rles": rles,
        "boxes": boxes.astype(np.int64),
        "iou_preds": np.array([a["predicted_iou"] for a in anns], np.float32),
        "stability_score": np.zeros(len(anns), np.float32),
        "points": np.zeros((len(anns), 2)),
        "crop_boxes": np.zeros((len(anns), 4), np.int64),
    }
    ref_data = ref_amg.MaskData(rles=list(rles), boxes=torch.as_tensor(boxes.copy()))
    ref_out = sa.SamAutomaticMaskGenerator.postprocess_small_regions(ref_data, 400, 0.7)
    out = SamAutomaticMaskGenerator.postprocess_small_regions(data, 400, 0.7)
    got = {tuple(r["counts"]) for r in out["rles"]}
    want = {tuple(r["counts"]) for r in ref_out["rles"]}
    assert got == want


def test_nms_matches_torchvision():
    tv = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], 1).astype(np.float32)
    scores = rng.uniform(size=300).astype(np.float32)
    for thr in (0.3, 0.7):
        want = tv.ops.nms(torch.as_tensor(boxes), torch.as_tensor(scores), thr).numpy()
        np.testing.assert_array_equal(amg.nms(boxes, scores, thr), want)


def test_output_modes_and_grid():
    np.testing.assert_allclose(amg.build_point_grid(5), ref_amg.build_point_grid(5))
    assert amg.generate_crop_boxes((300, 500), 2, 512 / 1500) == ref_amg.generate_crop_boxes((300, 500), 2, 512 / 1500)
    model = build_sam("tiny", "sam")
    image = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    kw = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    gen = SamAutomaticMaskGenerator(model, **kw)
    binary = gen.generate(image)
    gen.output_mode = "uncompressed_rle"  # same generator: reuses its compiled programs
    rle = gen.generate(image)
    gen.output_mode = "coco_rle"
    coco = gen.generate(image)
    assert len(binary) == len(rle) == len(coco) >= 1
    for b, r, c in zip(binary, rle, coco, strict=True):
        np.testing.assert_array_equal(amg.rle_to_mask(r["segmentation"]), b["segmentation"])
        assert c["segmentation"]["size"] == [64, 80] and isinstance(c["segmentation"]["counts"], str)
    with pytest.raises(ValueError):
        SamAutomaticMaskGenerator(model, output_mode="bitmap")
