"""The precision switch: it reaches every layer, "highest" keeps PyTorch parity for every attention implementation,
and "bf16" stays within its documented error bound (docs/precision.md) on randomised tiny SAM / HQ-SAM / VNS-SAM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.modeling.util import randomize
from vnsjax import build_sam
from vnsjax.modeling import image_encoder, transformer
from vnsjax.modeling.common import ConvTranspose2x2
from vnsjax.modeling.image_encoder import set_attention
from vnsjax.modeling.precision import NUMERICS, PRECISIONS, get_precision, set_precision

BF16_U = 2.0**-8


def test_set_precision_reaches_every_layer():
    model = build_sam("tiny", "vns", precision="bf16", attention="xla")
    assert get_precision(model) == "bf16"
    seen = set()
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Linear | nnx.Conv):
            assert (node.dtype, node.precision, node.preferred_element_type) == (
                jnp.bfloat16,
                jax.lax.Precision.DEFAULT,
                jnp.float32,
            )
        elif isinstance(node, nnx.LayerNorm | nnx.BatchNorm):
            assert node.dtype == jnp.bfloat16
        elif isinstance(node, image_encoder.Attention):
            assert node.implementation == "xla"
        if hasattr(node, "numerics"):
            assert node.numerics is NUMERICS["bf16"]
        seen.add(type(node))
    assert {nnx.BatchNorm, ConvTranspose2x2, image_encoder.Attention, transformer.Attention} <= seen
    set_precision(model, "highest")
    assert get_precision(model) == "highest" and model.image_encoder.blocks[0].attn.qkv.dtype is None
    with pytest.raises(ValueError, match=f"'fp8'.*{PRECISIONS}"):
        set_precision(model, "fp8")
    with pytest.raises(ValueError, match="'flash'"):
        set_attention(model, "flash")


def _tiny_inputs(seed: int, prompts: int = 8):
    r = np.random.default_rng(seed)
    x = jnp.asarray(r.standard_normal((1, 256, 256, 3)), jnp.float32)
    xy = r.uniform(0, 200, (prompts, 2))
    boxes = jnp.asarray(np.concatenate([xy, xy + r.uniform(30, 150, (prompts, 2))], 1), jnp.float32)
    points = jnp.asarray(r.uniform(0, 256, (prompts, 2, 2)), jnp.float32)
    labels = jnp.asarray(r.integers(0, 2, (prompts, 2)), jnp.int32)
    return x, boxes, points, labels


@nnx.jit
def _forward(model, x, boxes, points, labels):
    """Encoder, the decoder's per-image features and the decoder: image embedding and every logit map / score."""
    emb, interm = model.image_encoder(x)
    dec = model.mask_decoder
    sparse, sparse_mask, dense = model.prompt_encoder((points, labels), boxes, None)
    out = dec(
        emb,
        model.prompt_encoder.get_dense_pe(),
        sparse,
        dense,
        features=dec.image_features(emb, interm),
        multimask_output=model.variant == "sam",
        sparse_mask=sparse_mask,
    )
    maps = {"masks": out.masks, "iou": out.iou_predictions}
    maps.update({k: v for k, v in out.extras.items() if k != "dense_map"})
    return emb, maps


def rounding_points(model: nnx.Module) -> int:
    """K: tensors a bf16 forward rounds, one per Linear/Conv/norm/ConvTranspose output, two per attention
    (probabilities and output). An upper bound on the roundings along any one path."""
    k = 0
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Linear | nnx.Conv | nnx.LayerNorm | nnx.BatchNorm | ConvTranspose2x2):
            k += 1
        elif isinstance(node, image_encoder.Attention | transformer.Attention):
            k += 2
    return k


def bf16_bound(model: nnx.Module) -> float:
    """Normwise relative error bound of bf16 logits vs float32 (docs/precision.md): 2 u sqrt(K / 3)."""
    return 2 * BF16_U * np.sqrt(rounding_points(model) / 3)


@pytest.mark.parametrize(("variant", "seed"), [("sam", 0), ("hq", 1), ("vns", 2)])
@pytest.mark.slow
def test_bf16_within_bound(variant, seed):
    model = randomize(build_sam("tiny", variant), seed)
    model.eval()
    inputs = _tiny_inputs(seed)
    emb32, out32 = _forward(model, *inputs)
    set_precision(model, "bf16")
    emb16, out16 = _forward(model, *inputs)
    assert emb16.dtype == jnp.bfloat16  # bf16 end to end through the encoder
    bound = bf16_bound(model)
    for name, ref in out32.items():
        a, b = np.asarray(ref), np.asarray(out16[name])
        assert b.dtype == np.float32  # logits and scores come back float32
        # Normwise and max-norm relative errors: the second catches a local blow-up the first would average out.
        rel, rel_max = np.linalg.norm(b - a) / np.linalg.norm(a), np.abs(b - a).max() / np.abs(a).max()
        assert max(rel, rel_max) <= bound, f"{name}: relative error {rel:.4f} / {rel_max:.4f} > bound {bound:.4f}"
        if name != "iou":
            # Mask bits (docs/precision.md): a pixel farther than the bound from the threshold, relative to its own
            # map's largest logit, keeps its bit. The plain IoU is not asserted: random logits cross zero everywhere.
            outside = np.abs(a) > bound * np.abs(a).max((-2, -1), keepdims=True)
            assert ((a > 0) == (b > 0))[outside].all(), f"{name}: a mask bit flipped beyond the margin"
