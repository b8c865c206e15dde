"""The predictors refuse images and prompts they cannot take, instead of casting them or returning NaN scores."""

import numpy as np
import pytest

from vnsjax import SamPredictor, VnsPredictor, build_sam


@pytest.fixture(scope="module")
def predictor():
    pred = SamPredictor(build_sam("tiny", "sam", seed=0))
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pred.set_image(image)
    return pred, image


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (np.full((40, 60, 3), 0.5, np.float32), r"got dtype float32; for floats in \[0, 1\] pass \(image \* 255\)"),
        (np.full((40, 60, 3), 300, np.int16), "got dtype int16; convert it to 0..255"),
        (np.full((40, 60, 3), 40000, np.uint16), r"got dtype uint16; for 16-bit images .* \(image / 257\)"),
        (np.zeros((40, 60), np.uint8), r"grey \(H, W\) one .* np.repeat"),
        (np.zeros((40, 60, 4), np.uint8), r"got shape \(40, 60, 4\); drop alpha"),
        (np.zeros((40, 60, 2), np.uint8), r"got shape \(40, 60, 2\)"),
        (np.zeros((0, 60, 3), np.uint8), "empty image"),
    ],
)
def test_bad_image_is_refused_and_leaves_no_image_set(predictor, bad, expected):
    pred, image = predictor
    pred.set_image(image)
    assert pred.is_image_set
    with pytest.raises(ValueError, match=expected):
        pred.set_image(bad)
    # The previous image is dropped too: predict must not silently run on it.
    assert not pred.is_image_set
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(box=np.array([1.0, 1.0, 20.0, 20.0]))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"point_coords": [[10.0, 10.0]], "point_labels": [-5]}, "point_labels must be 1 .* got -5"),
        ({"point_coords": [[10.0, 10.0]], "point_labels": [2]}, "point_labels must be 1 .* got 2"),
        ({"point_coords": [[np.nan, 10.0]], "point_labels": [1]}, "point_coords must be finite"),
        ({"point_coords": [[10.0, np.inf]], "point_labels": [1]}, "point_coords must be finite"),
        ({"box": [np.nan, 0.0, 10.0, 10.0]}, "box must be finite"),
        ({"box": [20.0, 0.0, 10.0, 10.0]}, "x0 <= x1 and y0 <= y1"),
        ({"box": [0.0, 0.0, 10.0, 10.0], "mask_input": np.full((1, 64, 64), np.nan)}, "mask_input must be finite"),
    ],
)
def test_bad_prompt_is_refused(predictor, kwargs, expected):
    pred, image = predictor
    pred.set_image(image)
    with pytest.raises(ValueError, match=expected):
        pred.predict(**{k: np.asarray(v) for k, v in kwargs.items()})
    # The prompt was refused, the image stays usable.
    masks, scores, _ = pred.predict(box=np.array([1.0, 1.0, 20.0, 20.0]), multimask_output=False)
    assert masks.shape == (1, 40, 60) and np.isfinite(scores).all()


def test_padding_label_still_accepted_in_batches(predictor):
    # -1 (SAM's not-a-point) pads rows with fewer points, as in the original predict_torch.
    pred, image = predictor
    pred.set_image(image)
    coords = np.array([[[10.0, 10.0], [20.0, 20.0]], [[30.0, 15.0], [0.0, 0.0]]])
    masks, scores, _ = pred.predict_batch(coords, np.array([[1, 0], [1, -1]]), multimask_output=False)
    assert masks.shape == (2, 1, 40, 60) and np.isfinite(scores).all()


def test_vns_predictor_refuses_float_image():
    pred = VnsPredictor(build_sam("tiny", "vns", seed=0))
    with pytest.raises(ValueError, match="got dtype float64"):
        pred.set_image(np.random.default_rng(0).random((40, 60, 3)))
    assert not pred.is_image_set
