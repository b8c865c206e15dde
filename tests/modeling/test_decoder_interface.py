"""The decoder interface every variant in the registry keeps: per-image features, one call, one output type."""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest
from flax import nnx

from vnsjax.build_sam import DECODERS, build_sam
from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.sam import eval_view
from vnsjax.predictors.prompts import pack_prompts


@pytest.mark.parametrize("variant", sorted(DECODERS))
def test_registry_decoder_keeps_the_interface(variant):
    cls = DECODERS[variant]
    call = inspect.signature(cls.__call__).parameters
    # Every declared option is a keyword-only argument of the call, so Sam.decode can pass it by name.
    assert all(call[name].kind is inspect.Parameter.KEYWORD_ONLY for name in cls.OPTIONS)

    graphdef, state = nnx.split(eval_view(build_sam("tiny", variant, seed=1)))

    @jax.jit
    def run(state, images, prompts):
        model = nnx.merge(graphdef, state)
        features = model.image_features(images)
        return features, model.decode(features, prompts, multimask_output=True)

    images = np.random.default_rng(0).uniform(0, 255, (1, 256, 256, 3)).astype(np.float32)
    prompts, _ = pack_prompts(boxes=np.array([[10.0, 20.0, 200.0, 180.0]]), mask_size=(64, 64))
    features, out = run(state, images, prompts)
    assert sorted(features.decoder) == sorted(cls.FEATURES)
    assert isinstance(out, DecoderOutput)
    c = out.masks.shape[1]
    assert out.masks.shape == (1, c, 64, 64) and out.iou_predictions.shape == (1, c)
    assert np.isfinite(np.asarray(out.masks)).all()
    for name, value in out.extras.items():
        assert getattr(out, name) is value  # extras read as attributes
    with pytest.raises(AttributeError, match="no field or extra"):
        _ = out.no_such_output
