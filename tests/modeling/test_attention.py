"""Every encoder-attention implementation against a float64 NumPy transcription of segment_anything's attention.

cudnn and augmented run their jax.nn.dot_product_attention call with implementation="xla" here (CPU); pallas runs
the TPU kernel in Pallas' interpret mode.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerance import assert_close
from vnsjax import MODEL_CONFIGS, build_sam
from vnsjax.modeling import attention as attn
from vnsjax.modeling.image_encoder import set_attention
from vnsjax.modeling.precision import NUMERICS

F32_U = 2.0**-24  # unit roundoff
BF16_U = 2.0**-8

# (batch, grid h, grid w, heads, head dim): one window batch, one global grid below the query-chunk size and a
# non-square one with two 1024-query chunks (the lax.map branch of `chunked`).
SHAPES = {"windows": (3, 6, 6, 2, 8), "global": (1, 16, 16, 2, 8), "chunked": (1, 64, 32, 2, 8)}


def _inputs(shape, seed, rel_pos=True):
    b, h, w, n, d = shape
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, h, w, n, d)) for _ in range(3))
    rh = 0.5 * rng.standard_normal((h, h, d)) if rel_pos else None
    rw = 0.5 * rng.standard_normal((w, w, d)) if rel_pos else None
    return q, k, v, rh, rw, d**-0.5


def _reference(q, k, v, rh, rw, scale):
    """segment_anything Attention.forward after the qkv projection, in float64."""
    b, h, w, n, d = q.shape
    qf, kf, vf = (np.moveaxis(t, 3, 1).reshape(b * n, h * w, d) for t in (q, k, v))
    logits = (qf * scale) @ kf.transpose(0, 2, 1)
    bias = 0.0
    if rh is not None:
        r_q = qf.reshape(b * n, h, w, d)
        rel_h = np.einsum("bhwc,hkc->bhwk", r_q, rh)
        rel_w = np.einsum("bhwc,wkc->bhwk", r_q, rw)
        bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b * n, h * w, h * w)
    logits = logits + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = (p @ vf).reshape(b, n, h, w, d)
    return np.moveaxis(out, 1, 3), np.abs(logits).max()


def _tolerance(ref, max_logit, vmax, u):
    """First-order error of softmax(s) v: a logit error ds moves the output by at most 2 max|ds| max|v|.

    Each logit carries about one rounding unit of its own size, |ds| ~ u max|s| (float32: the scaled dot and the
    bias adds; bf16: q, k, the rel tables and the bias each rounded once, independent errors); the bf16 output
    is rounded once more (u max|out|). Measured errors are 0.03-0.4 u max|s| max|v|.
    """
    return 2 * u * max_logit * vmax + u * np.abs(ref).max()


def _run(impl, q, k, v, rh, rw, scale, numerics):
    args = (q, k, v, rh, rw, scale, numerics)
    if impl in ("cudnn", "augmented"):
        fn = attn._sdpa_bias if impl == "cudnn" else attn._sdpa_augmented
        return jax.jit(lambda *a: fn(*a[:5], scale, numerics, sdpa="xla"))(*args[:5])
    ctx = contextlib.nullcontext()
    if impl == "pallas":
        from jax.experimental.pallas import tpu as pltpu

        ctx = pltpu.force_tpu_interpret_mode()
    with ctx:
        return jax.jit(lambda *a: attn.rel_pos_attention(*a, scale=scale, implementation=impl, numerics=numerics))(
            *args[:5]
        )


# Pallas' interpret mode runs the 2048-token kernel block by block in Python: ~15 s.
CASES = [
    pytest.param(impl, shape, marks=[pytest.mark.slow] if (impl, shape) == ("pallas", "chunked") else [])
    for impl in attn.IMPLEMENTATIONS
    for shape in SHAPES
]


@pytest.mark.parametrize("precision", ["highest", "bf16"])
@pytest.mark.parametrize(("impl", "shape_name"), CASES)
def test_matches_reference(impl, shape_name, precision):
    shape = SHAPES[shape_name]
    q, k, v, rh, rw, scale = _inputs(shape, seed=list(SHAPES).index(shape_name))
    numerics = NUMERICS[precision]
    dt = jnp.bfloat16 if precision == "bf16" else jnp.float32
    cast = lambda t: jnp.asarray(t, dt)
    q, k, v = (np.asarray(cast(t), np.float64) for t in (q, k, v))  # the reference sees the rounded inputs
    ref, max_logit = _reference(q, k, v, rh, rw, scale)
    out = _run(
        impl, cast(q), cast(k), cast(v), jnp.asarray(rh, jnp.float32), jnp.asarray(rw, jnp.float32), scale, numerics
    )
    assert out.shape == ref.shape and out.dtype == dt
    tol = _tolerance(ref, max_logit, np.abs(v).max(), F32_U if precision == "highest" else BF16_U)
    err = np.abs(np.asarray(out, np.float64) - ref).max()
    assert err <= tol, f"{impl} {shape_name} {precision}: error {err:.3g} > bound {tol:.3g}"


@pytest.mark.parametrize("impl", attn.IMPLEMENTATIONS)
def test_without_rel_pos(impl):
    shape = SHAPES["global"]
    q, k, v, _, _, scale = _inputs(shape, seed=7, rel_pos=False)
    ref, max_logit = _reference(q, k, v, None, None, scale)
    f = lambda t: jnp.asarray(t, jnp.float32)
    out = _run(impl, f(q), f(k), f(v), None, None, scale, NUMERICS["highest"])
    tol = _tolerance(ref, max_logit, np.abs(v).max(), F32_U)
    assert np.abs(np.asarray(out, np.float64) - ref).max() <= tol


def test_a_dropped_rel_pos_term_is_caught():
    """Even the bf16 bound sees the rel-pos bias: dropping rel_w exceeds it 3x over (the float32 bound 10^5x)."""
    shape = SHAPES["global"]
    q, k, v, rh, rw, scale = _inputs(shape, seed=3)
    ref, max_logit = _reference(q, k, v, rh, rw, scale)
    f = lambda t: jnp.asarray(t, jnp.float32)
    out = _run("xla", f(q), f(k), f(v), f(rh), f(0 * rw), scale, NUMERICS["highest"])
    tol = _tolerance(ref, max_logit, np.abs(v).max(), BF16_U)
    assert np.abs(np.asarray(out) - ref).max() > 3 * tol


def test_auto_selection(monkeypatch):
    monkeypatch.delenv(attn.ENV_VAR, raising=False)
    r = attn.resolve_implementation
    assert r("auto", jnp.float32, "cpu") == r("auto", jnp.bfloat16, "cpu") == "chunked"
    assert r("auto", jnp.bfloat16, "gpu") == "cudnn" and r("auto", jnp.float32, "gpu") == "xla"
    assert r("auto", jnp.bfloat16, "tpu") == "pallas" and r("auto", jnp.float32, "tpu") == "xla"
    assert r("auto", jnp.float32) == r("auto", jnp.float32, jax.default_backend())
    monkeypatch.setenv(attn.ENV_VAR, "xla")
    assert r("auto", jnp.float32, "cpu") == "xla"
    assert r("chunked", jnp.float32, "gpu") == "chunked"  # an explicit choice wins over the environment
    monkeypatch.setenv(attn.ENV_VAR, "flash")
    with pytest.raises(ValueError, match=f"{attn.ENV_VAR}.*'flash'"):
        r("auto")
    with pytest.raises(ValueError, match="'fast'"):
        r("fast")


def test_cudnn_refuses_float32():
    q = jnp.zeros((1, 4, 4, 2, 8), jnp.float32)
    with pytest.raises(ValueError, match="precision='bf16'"):
        attn.rel_pos_attention(q, q, q, None, None, scale=1.0, implementation="cudnn")


@pytest.fixture(scope="module")
def tiny_pair():
    """The official PyTorch encoder at the tiny config and the same weights in vnsjax, every tensor randomised."""
    torch = pytest.importorskip("torch")
    from convert_weights.mapping import load_state_dict
    from tests.torch_ref.sam import build_torch_sam, torch_state_dict

    ref = build_torch_sam(MODEL_CONFIGS["tiny"], seed=4)
    model = build_sam("tiny", precision="highest")
    load_state_dict(model, torch_state_dict(ref))
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    outs = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: outs.append(o.numpy()))
        for b in ref.image_encoder.blocks
        if b.window_size == 0
    ]
    with torch.no_grad():
        emb = ref.image_encoder(x).numpy().transpose(0, 2, 3, 1)
    for h in hooks:
        h.remove()
    return model, x.numpy().transpose(0, 2, 3, 1), [emb, *outs]


@pytest.mark.parity
@pytest.mark.parametrize("impl", ["chunked", "xla", "pallas"])
def test_encoder_parity_with_segment_anything(tiny_pair, impl):
    """Whole tiny encoder (window padding 16 -> 18, four global blocks) per implementation, precision "highest".

    Tolerance 1e-5 of the output scale ~ 170 u: ~20 u of float32 rounding per block (two LayerNorms, matmuls of
    width <= 128, softmax) over 8 blocks; measured errors are ~1e-6.
    """
    model, x, refs = tiny_pair
    set_attention(model, impl)
    ctx = contextlib.nullcontext()
    if impl == "pallas":
        from jax.experimental.pallas import tpu as pltpu

        ctx = pltpu.force_tpu_interpret_mode()
    with ctx:
        emb, interm = nnx.jit(lambda m, x: m.image_encoder(x))(model, jnp.asarray(x))
    for i, (ref, out) in enumerate(zip(refs, [emb, *interm], strict=True)):
        assert_close(out, ref, rel=1e-5, err_msg=f"{impl} output {i}")
