"""SamPredictor over every variant: per-image features cached once, the caller's model left as it was."""

from __future__ import annotations

from unittest import mock

import jax
import numpy as np
import pytest
from flax import nnx

from vnsjax import SamPredictor, VnsPredictor, build_sam
from vnsjax.modeling.mask_decoder_hq import MaskDecoderHQ
from vnsjax.predictors import sam_predictor

BOX = np.array([20.0, 30.0, 200.0, 150.0])


@pytest.mark.slow
def test_hq_feature_is_computed_once_per_image():
    """HQ-SAM's compressed ViT feature is part of set_image's cache; predict only runs the decoder."""
    model = build_sam("tiny", "hq", seed=5)
    image = np.random.default_rng(0).integers(0, 256, (180, 240, 3), dtype=np.uint8)
    calls = []
    original = MaskDecoderHQ.image_features

    def counted(self, *args, **kwargs):
        # A callback counts executions of the compiled programs, not traces: a cached program recomputing the
        # feature is counted too (eager runs would be exact as well, but compile every op on its own: minutes cold).
        jax.debug.callback(lambda: calls.append(1))
        return original(self, *args, **kwargs)

    def count() -> int:
        jax.effects_barrier()  # the callbacks of everything dispatched so far have run
        return len(calls)

    # The programs are shared per model structure: trace them afresh under the patch, and drop them after it.
    sam_predictor._programs.cache_clear()
    with mock.patch.object(MaskDecoderHQ, "image_features", counted):
        pred = SamPredictor(model)
        pred.set_image(image)
        assert count() == 1
        pred.predict(box=BOX)
        pred.predict(point_coords=np.array([[60.0, 70.0]]), point_labels=np.array([1]), multimask_output=False)
        pred.predict_batch(boxes=np.stack([BOX, BOX / 2]))
        assert count() == 1
        pred.set_image(image[::-1])
        assert count() == 2
    sam_predictor._programs.cache_clear()
    (name, feature), *rest = pred.features.decoder.items()
    assert not rest and name == "hq_features" and feature.shape == (1, 64, 64, 32)  # one small map per image


def _bn_modes(model: nnx.Module) -> set[bool]:
    return {m.use_running_average for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)}


def test_vns_model_is_not_switched_to_eval_mode():
    """The predictor runs an inference view; the model passed in keeps its BatchNorm mode."""
    model = build_sam("tiny", "vns", seed=6)
    assert _bn_modes(model) == {False}
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    sam_pred, vns_pred = SamPredictor(model), VnsPredictor(model)
    assert _bn_modes(model) == {False}
    for p in (sam_pred, vns_pred):
        p.set_image(image)
    # Without an `output=` choice VNS-SAM's prediction is the fused mask, the same through either class.
    a, b = sam_pred.predict(box=BOX / 2, return_logits=True), vns_pred.predict(box=BOX / 2, return_logits=True)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    model.eval()
    ref = SamPredictor(model)
    ref.set_image(image)
    np.testing.assert_array_equal(ref.predict(box=BOX / 2, return_logits=True)[2], a[2])


def test_prompt_errors_are_named():
    pred = SamPredictor(build_sam("tiny", "sam", seed=7))
    pred.set_image(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="point_labels must be supplied"):
        pred.predict(point_coords=np.array([[1.0, 2.0]]))
