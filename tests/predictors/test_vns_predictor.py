"""VnsPredictor: SamPredictor API over VNS-SAM, cached NSFM features, batched prompts."""

import jax
import numpy as np
import pytest

from tests.tolerance import assert_close
from vnsjax import SamPredictor, VnsPredictor, build_sam
from vnsjax.modeling.sam import eval_view
from vnsjax.predictors.prompts import pack_prompts


@pytest.fixture(scope="module")
def setup():
    model = build_sam("tiny", "vns", seed=4)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    pred = VnsPredictor(model)
    pred.set_image(image)
    return model, pred, image


@pytest.mark.slow
def test_predict_matches_direct_model_call(setup):
    model, pred, image = setup
    box = np.array([20.0, 30.0, 200.0, 150.0])
    masks, scores, low_res = pred.predict(box=box, multimask_output=False)
    assert masks.shape == (1, 180, 240) and masks.dtype == bool
    assert scores.shape == (1,) and low_res.shape == (1, 64, 64)
    # Same computation without the predictor: resize, encode, NSFM, decode.
    resized = pred.transform.apply_image(image)
    padded = np.zeros((1, 256, 256, 3), np.float32)
    padded[0, : resized.shape[0], : resized.shape[1]] = resized
    live = eval_view(model)
    feats = live.image_features(padded, np.array([resized.shape[:2]]))
    prompts, _ = pack_prompts(boxes=pred.transform.apply_boxes(box[None], (180, 240)), mask_size=(64, 64))
    fused, iou, out = live.decode(feats, prompts)
    assert np.abs(np.asarray(fused[0]) - low_res).max() <= 1e-5
    assert np.abs(np.asarray(iou[0]) - scores).max() <= 1e-5
    assert set(pred.features.decoder) == {"nsfm_m", "nsfm_g"}  # NSFM cached with the image


def test_batched_equals_one_at_a_time(setup):
    _, pred, _ = setup
    boxes = np.array([[20, 30, 200, 150], [0, 0, 60, 60], [100, 50, 239, 179]], np.float64)
    points = np.array([[[50, 60], [70, 80]], [[10, 10], [30, 40]], [[150, 100], [200, 160]]], np.float64)
    labels = np.array([[1, 0], [1, 1], [0, 1]])
    masks, scores, low = pred.predict_batch(points, labels, boxes)
    assert masks.shape == (3, 1, 180, 240)
    for i in range(3):
        m, s, lr = pred.predict(points[i], labels[i], boxes[i])
        assert np.abs(lr - low[i]).max() <= 1e-4
        assert (m == masks[i]).mean() >= 0.999


def test_outputs(setup):
    model, _, image = setup
    box = np.array([20.0, 30.0, 200.0, 150.0])
    results = {}
    for output in ("fused", "sam", "vns", "edge", "results_fusion"):
        p = VnsPredictor(model, output=output)
        p.set_image(image)
        results[output] = p.predict(box=box, return_logits=True)[2]
    assert_close(results["results_fusion"], results["fused"] + results["sam"], rel=1e-6)
    assert not np.allclose(results["vns"], results["fused"])
    p = VnsPredictor(model, output="edge")
    p.set_image(image)
    edge = p.predict(box=box)[0]
    assert edge.dtype == np.float32 and 0.0 <= edge.min() and edge.max() <= 1.0


@pytest.mark.slow
def test_wrong_model_or_option():
    sam = build_sam("tiny", "sam")
    with pytest.raises(ValueError, match="VnsPredictor runs"):
        VnsPredictor(sam)
    with pytest.raises(ValueError, match="output must be one of"):
        VnsPredictor(sam, output="nope")
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(sam).predict(box=np.array([0, 0, 10, 10]))
    jax.clear_caches()
