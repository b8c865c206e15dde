"""Encoder adapters: a fresh adapter model computes what its base computes, adapters train, and they survive model
directories and the PyTorch round trip of the converter."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convert_weights.convert import convert_state_dict
from convert_weights.mapping import export_state_dict
from vnsjax import MODEL_CONFIGS, load_model
from vnsjax.build_sam import build_sam
from vnsjax.model_dir import save_model

TINY_ADAPTER = dataclasses.replace(MODEL_CONFIGS["tiny"], encoder_adapter_ratio=0.25)


def is_adapter(path, _value) -> bool:
    return "adapter" in [str(k) for k in path]


def n_params(state) -> int:
    return sum(x.size for x in jax.tree.leaves(state))


@pytest.fixture(scope="module")
def image():
    return jnp.asarray(np.random.default_rng(0).normal(size=(1, 256, 256, 3)), jnp.float32)


def test_fresh_adapters_leave_the_model_equal_to_its_base(image):
    with_adapter, base = build_sam(TINY_ADAPTER, "vns", seed=3), build_sam("tiny", "vns", seed=3)
    base_state = dict(nnx.to_flat_state(nnx.state(base)))
    shared = [(p, v) for p, v in nnx.to_flat_state(nnx.state(with_adapter)) if not is_adapter(p, v)]
    assert len(shared) == len(base_state)
    for path, var in shared:  # adapters are drawn last: the base weights are those of the same seed
        np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(base_state[path].get_value()))
    (ea, ia), (eb, ib) = with_adapter.image_encoder(image), base.image_encoder(image)
    np.testing.assert_array_equal(np.asarray(ea), np.asarray(eb))
    for a, b in zip(ia, ib, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("model_type,expected", [("vit_b", 3_550_464), ("vit_l", 12_613_632)])
@pytest.mark.slow
def test_adapter_parameter_count(model_type, expected):
    """One d -> d/4 -> d bottleneck (with biases) per block: depth * (2 d h + h + d), h = d / 4."""
    cfg = dataclasses.replace(MODEL_CONFIGS[model_type], encoder_adapter_ratio=0.25)
    d, h = cfg.encoder_embed_dim, cfg.encoder_embed_dim // 4
    assert expected == cfg.encoder_depth * (2 * d * h + h + d)
    model = nnx.eval_shape(lambda: build_sam(cfg, "vns"))
    assert n_params(nnx.state(model, is_adapter)) == expected


@pytest.mark.slow
def test_adapters_receive_gradients_and_change_the_output(image):
    model = build_sam(TINY_ADAPTER, "sam", seed=1)
    graphdef, adapters, rest = nnx.split(model, is_adapter, ...)
    target = jnp.asarray(np.random.default_rng(1).normal(size=(1, 16, 16, 256)), jnp.float32)

    def loss(a):
        m = nnx.merge(graphdef, a, rest)
        return jnp.mean((m.image_encoder(image)[0] - target) ** 2)

    grads = jax.grad(loss)(adapters)
    ups = [np.asarray(g) for p, g in nnx.to_flat_state(grads) if "up" in [str(k) for k in p]]
    assert ups and all(np.any(u != 0) for u in ups)  # zero-initialised up-projections still learn
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    stepped = jax.tree.map(lambda a, g: a - 0.01 * g / norm, adapters, grads)
    assert float(loss(stepped)) < float(loss(adapters))


@pytest.mark.slow
def test_model_directory_and_converter_keep_adapters(tmp_path, image):
    model = build_sam(TINY_ADAPTER, "vns", seed=2)
    # Non-zero up-projections, as after training, so that a dropped adapter would show in the output.
    for _, var in nnx.to_flat_state(nnx.state(model, is_adapter)):
        var.set_value(var.get_value() + 0.05)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == TINY_ADAPTER
    want = np.asarray(model.image_encoder(image)[0])
    np.testing.assert_array_equal(np.asarray(loaded.image_encoder(image)[0]), want)

    sd = export_state_dict(model)
    assert "image_encoder.blocks.0.adapter.down.weight" in sd
    converted, info = convert_state_dict(sd)
    assert converted.config.encoder_adapter_ratio == 0.25 and info["unmapped"] == [] and info["missing"] == []
    np.testing.assert_allclose(np.asarray(converted.image_encoder(image)[0]), want, rtol=0, atol=0)


@pytest.mark.slow
def test_remat_changes_memory_not_results(image):
    """ImageEncoderViT.remat (jax.checkpoint per block) recomputes activations in the backward pass: same values."""
    model = build_sam(TINY_ADAPTER, "sam", seed=4)
    graphdef, params = nnx.split(model)

    def loss(p, remat):
        m = nnx.merge(graphdef, p)
        m.image_encoder.remat = remat
        emb, interm = m.image_encoder(image)
        return jnp.mean(emb**3) + sum(jnp.mean(t**2) for t in interm)

    (l0, g0), (l1, g1) = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, r) for r in (False, True))
    assert float(l0) == float(l1)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * float(np.abs(a).max()) + 1e-12)
