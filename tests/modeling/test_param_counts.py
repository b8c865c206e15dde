"""Parameter counts of SAM / HQ-SAM / VNS-SAM at ViT-B/L/H, shapes only (docs/released-code.md#trainable).

One abstract VNS-SAM build per backbone covers SAM too: VNS-SAM = SAM (frozen, decoder included) + its trainable set.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from vnsjax.build_sam import MODEL_CONFIGS, build_sam
from vnsjax.modeling.mask_decoder_hq import MaskDecoderHQ
from vnsjax.params import count, format_table, param_table, trainable_filter

SAM_WHOLE = {"vit_b": 93_735_472, "vit_l": 312_342_832, "vit_h": 641_090_608}
HQ_NEW = {"vit_b": 1_071_104, "vit_l": 1_333_248, "vit_h": 1_595_392}
VNS_TRAINABLE = {"vit_b": 2_476_618, "vit_l": 2_574_922, "vit_h": 2_673_226}
SAM_MASK_DECODER = 4_058_340
# The paper's "Learnable Params (M)" for VNS-SAM (docs/released-code.md#param-units).
PAPER_LEARNABLE = {"vit_b": 9.4, "vit_l": 9.8, "vit_h": 10.2}


@functools.cache
def _vns_sam(model_type: str) -> nnx.Module:
    return nnx.eval_shape(lambda: build_sam(model_type, "vns"))


@pytest.mark.parametrize("model_type", sorted(VNS_TRAINABLE))
@pytest.mark.slow
def test_vns_trainable_and_sam_whole(model_type):
    model = _vns_sam(model_type)
    trainable = count(nnx.state(model, trainable_filter("vns")))
    assert trainable == VNS_TRAINABLE[model_type]
    assert count(nnx.state(model, nnx.Param)) - trainable == SAM_WHOLE[model_type]
    # The filter only selects under mask_decoder (the image encoder also has a `neck`).
    assert count(nnx.state(model.mask_decoder, trainable_filter("vns"))) == trainable


@pytest.mark.parametrize("model_type", sorted(PAPER_LEARNABLE))
@pytest.mark.slow
def test_paper_learnable_params_are_mib_of_float32(model_type):
    trainable = jax.tree.leaves(nnx.state(_vns_sam(model_type), trainable_filter("vns")))
    assert {np.dtype(x.dtype) for x in trainable} == {np.dtype(np.float32)}
    mib = sum(x.size * np.dtype(x.dtype).itemsize for x in trainable) / 2**20
    assert round(mib, 1) == PAPER_LEARNABLE[model_type]
    # Not millions of parameters: that reading is off by the float32 size, 4x.
    millions = sum(x.size for x in trainable) / 1e6
    assert round(millions, 1) != PAPER_LEARNABLE[model_type]


@pytest.mark.parametrize("model_type", sorted(HQ_NEW))
def test_hq_new_params(model_type):
    vit_dim = MODEL_CONFIGS[model_type].encoder_embed_dim
    decoder = nnx.eval_shape(lambda: MaskDecoderHQ(vit_dim=vit_dim, rngs=nnx.Rngs(0)))
    new = count(nnx.state(decoder, trainable_filter("hq")))
    assert new == HQ_NEW[model_type]
    assert count(nnx.state(decoder, nnx.Param)) == SAM_MASK_DECODER + new


@pytest.mark.slow
def test_param_table_totals():
    rows = param_table(_vns_sam("vit_b"), "vns")
    assert sum(r[1] for r in rows) == SAM_WHOLE["vit_b"] + VNS_TRAINABLE["vit_b"]
    assert sum(r[2] for r in rows) == VNS_TRAINABLE["vit_b"]
    assert "mask_decoder.neck" in format_table(rows)
