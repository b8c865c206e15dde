"""SamPredictor.set_images / VnsPredictor / AMG generate_batch: several images in one encoder call give each
image's single-image results, and counts within a bucket share one compiled encoder."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tolerance import assert_close
from vnsjax import SamPredictor, VnsPredictor, build_sam
from vnsjax.predictors.automatic_mask_generator import SamAutomaticMaskGenerator

# Batched and batch-1 encoder calls may reduce in another order: float32 rounding (eps 1.2e-7) compounded over the
# encoder's and decoder's depth (~40 layers) on logits of unit scale stays orders of magnitude below this.
REL = 1e-4
SIZES = [(120, 160), (200, 90), (64, 64)]
BOXES = np.array([[10.0, 12.0, 60.0, 50.0], [5.0, 20.0, 80.0, 60.0]])


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in SIZES]


@pytest.fixture(scope="module")
def sam():
    return build_sam("tiny", "sam", seed=11)


@pytest.mark.parametrize("variant", ["sam", "vns"])
@pytest.mark.slow
def test_set_images_equals_set_image(variant, sam):
    model = sam if variant == "sam" else build_sam("tiny", "vns", seed=12)
    cls = SamPredictor if variant == "sam" else VnsPredictor
    images = _images()
    batched, single = cls(model), cls(model)
    batched.set_images(images)
    assert batched.num_images == 3 and batched.original_sizes == SIZES
    assert len(batched.features.embedding) == 4  # 3 images padded to the bucket of 4
    embeddings = batched.get_image_embedding()
    assert embeddings.shape == (3, 256, 16, 16)
    for i, image in enumerate(images):
        single.set_image(image)
        assert_close(embeddings[i], single.get_image_embedding()[0], rel=REL, err_msg=f"embedding {i}")
        kw = {"point_coords": np.array([[30.0, 40.0]]), "point_labels": np.array([1])}
        for got, want in zip(
            batched.predict(**kw, return_logits=True, image_index=i),
            single.predict(**kw, return_logits=True),
            strict=True,
        ):
            assert got.shape == want.shape
            assert_close(got, want, rel=REL, err_msg=f"image {i}")
        # Every image's prompts in one decoder call equal per-image calls.
        low_single, iou_single = single.predict_low_res(boxes=single.transform_prompts(boxes=BOXES)["boxes"])
        prompts = [batched.transform_prompts(boxes=BOXES[: 1 + j % 2], image_index=j) for j in range(3)]
        low_all, iou_all = batched.predict_low_res_images(prompts)
        assert low_all.shape[:2] == (3, 2)
        n = 1 + i % 2
        assert_close(low_all[i, :n], low_single[:n], rel=REL, err_msg=f"predict_low_res_images {i}")
        assert_close(iou_all[i, :n], iou_single[:n], rel=REL, err_msg=f"scores {i}")


def test_counts_within_a_bucket_compile_once(sam):
    pred = SamPredictor(sam)
    images = _images(1) + _images(2)
    pred.set_images(images[:3])
    compiled = pred._encode._cache_size()
    pred.set_images(images[:4])  # 3 and 4 images: both the bucket of 4
    assert pred._encode._cache_size() == compiled
    pred.set_images(images[1:4])
    assert pred._encode._cache_size() == compiled


def test_image_index_and_sizes_are_checked(sam):
    pred = SamPredictor(sam)
    pred.set_images(_images()[:2])
    with pytest.raises(IndexError, match="image_index 2 is out of range: 2 image"):
        pred.predict(box=BOXES[0], image_index=2)
    with pytest.raises(RuntimeError, match="original_sizes"):
        _ = pred.original_size
    with pytest.raises(ValueError, match="each of the 2 images"):
        pred.predict_low_res_images([{"boxes": BOXES}])
    with pytest.raises(ValueError, match="list of"):
        pred.set_images(_images()[0])
    pred.set_image(_images()[0])
    assert pred.original_size == SIZES[0] and pred.input_size == (192, 256)


@pytest.mark.slow
def test_amg_generate_batch_equals_generate(sam):
    pred = SamPredictor(sam)
    amg = SamAutomaticMaskGenerator(
        pred, points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1
    )
    images = _images(3)[:2]
    batched = amg.generate_batch(images)
    assert len(batched) == 2
    for image, anns in zip(images, batched, strict=True):
        alone = amg.generate(image)
        assert len(anns) == len(alone) > 0
        for a, b in zip(anns, alone, strict=True):
            assert a["crop_box"] == b["crop_box"] and a["point_coords"] == b["point_coords"]
            assert abs(a["predicted_iou"] - b["predicted_iou"]) <= REL * max(1.0, abs(b["predicted_iou"]))
            # Masks are thresholded logits: a pixel within rounding of 0 may differ.
            assert (a["segmentation"] != b["segmentation"]).mean() <= 1e-3
