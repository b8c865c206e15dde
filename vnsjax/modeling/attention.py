"""SAM image-encoder attention with decomposed relative positions, one function, one implementation per backend.

    softmax(scale * q k^T + rel_h[q, k_row] + rel_w[q, k_col]) v,   rel_h = q . R_h[q_row],  rel_w = q . R_w[q_col]

(the rel-pos terms use the unscaled q, as segment_anything does). Global blocks see the whole token grid, window
blocks a batch of windows, which every implementation handles in one batched call.

Implementations:
  chunked    lax.map over heads and 1024-query blocks with the rel-pos add fused: the score block stays in cache.
             The CPU path (~3x faster there than materialising all heads' scores).
  xla        one einsum-softmax-einsum over all heads and queries, rel-pos added as a broadcast; XLA fuses it.
  cudnn      jax.nn.dot_product_attention(implementation="cudnn") with the rel-pos bias materialised (B, N, L, L).
             cuDNN's fused attention takes bf16/fp16 only.
  augmented  the same call with no bias: q' = [scale q, rel_h, rel_w], k' = [k, onehot(k_row), onehot(k_col)],
             so q'.k' is exactly the biased logit; v is zero-padded to q''s width (the public API needs equal
             head dims). Trades a (B, N, L, L) bias in memory for wider QK/AV matmuls.
  pallas     the Pallas TPU flash-attention kernel with the bias as `ab`; token counts that are not a multiple of
             128 (SAM's 14x14 windows) take the xla path.

"auto" (the default) reads VNSJAX_ATTENTION, else picks by backend: CPU chunked; GPU cudnn for bf16/fp16 and xla
for float32; TPU pallas for bf16 and xla for float32 (their fused kernels do not compute true float32).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from vnsjax.modeling.precision import HIGHEST, Numerics

IMPLEMENTATIONS = ("chunked", "xla", "cudnn", "augmented", "pallas")
ENV_VAR = "VNSJAX_ATTENTION"
QUERY_CHUNK = 1024
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def resolve_implementation(implementation: str = "auto", dtype=jnp.float32, backend: str | None = None) -> str:
    """The implementation "auto" stands for (see the module docstring); any other valid name is returned as is."""
    source = "attention implementation"
    if implementation == "auto" and os.environ.get(ENV_VAR):
        implementation, source = os.environ[ENV_VAR], f"environment variable {ENV_VAR}"
    if implementation != "auto" and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown {source} {implementation!r}; expected 'auto' or one of {IMPLEMENTATIONS}.")
    if implementation != "auto":
        return implementation
    backend = backend or jax.default_backend()
    half = jnp.dtype(dtype) in _HALF
    if backend == "cpu":
        return "chunked"
    if backend in ("gpu", "cuda"):
        return "cudnn" if half else "xla"
    if backend == "tpu":
        return "pallas" if half else "xla"
    return "xla"


def rel_pos_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    rel_pos_h: jax.Array | None,
    rel_pos_w: jax.Array | None,
    *,
    scale: float,
    implementation: str = "auto",
    numerics: Numerics = HIGHEST,
) -> jax.Array:
    """q, k, v: (B, H, W, N, D) on an H x W token grid; rel_pos_h (H, H, D), rel_pos_w (W, W, D) are the gathered
    tables (get_rel_pos), or None for no relative positions. Returns (B, H, W, N, D) in the operand dtype."""
    impl = resolve_implementation(implementation, numerics.dtype or q.dtype)
    args = (q, k, v, rel_pos_h, rel_pos_w, scale, numerics)
    if impl == "chunked":
        return _chunked(*args)
    if impl == "xla":
        return _xla(*args)
    if impl == "pallas":
        return _pallas(*args)
    if jnp.dtype(numerics.dtype or q.dtype) not in _HALF:
        raise ValueError(f"Attention {impl!r} runs cuDNN's fused kernel, which needs bf16/fp16: use precision='bf16'.")
    return (_sdpa_bias if impl == "cudnn" else _sdpa_augmented)(*args, sdpa="cudnn")


def _rel_terms(q, rh, rw, numerics, spec_out: str) -> tuple[jax.Array, jax.Array]:
    """float32 rel_h (..., H) and rel_w (..., W) per query, in the layout `spec_out` names (b h w n + key axis)."""
    rel_h = numerics.einsum(f"bhwnd,hkd->{spec_out}", q, rh, out_dtype=jnp.float32)
    rel_w = numerics.einsum(f"bhwnd,wkd->{spec_out}", q, rw, out_dtype=jnp.float32)
    return rel_h, rel_w


def _chunked(q, k, v, rh, rw, scale, numerics):
    b, h, w, nh, hd = q.shape
    q, k, v = (jnp.moveaxis(t, 3, 1) for t in (q, k, v))  # (b, nh, h, w, hd)
    if rh is not None:
        rel_h = numerics.einsum("bnhwd,hxd->bnhwx", q, rh, out_dtype=jnp.float32)
        rel_w = numerics.einsum("bnhwd,wyd->bnhwy", q, rw, out_dtype=jnp.float32)
    else:
        rel_h = jnp.zeros((b, nh, h, w, h), jnp.float32)
        rel_w = jnp.zeros((b, nh, h, w, w), jnp.float32)
    flat = lambda t: t.reshape(b * nh, h * w, t.shape[-1])
    out = _chunked_core(flat(q * scale), flat(k), flat(v), flat(rel_h), flat(rel_w), (h, w), numerics)
    return jnp.moveaxis(out.reshape(b, nh, h, w, hd), 1, 3)


def _chunked_core(q, k, v, rel_h, rel_w, hw: tuple[int, int], numerics: Numerics) -> jax.Array:
    """softmax(q k^T + rel_h + rel_w) v for (heads, L, d) inputs.

    Global blocks have 4096 tokens: one head's full score matrix is 64 MiB, so the scores are computed one head
    and one block of 1024 queries at a time (4 MiB, cache resident). Small (window) problems take one batched step.
    """
    n, L, d = q.shape
    h, w = hw

    def block(qc, rhc, rwc, kk, vv):
        s = numerics.einsum("qd,kd->qk", qc, kk, out_dtype=jnp.float32).reshape(-1, h, w)
        p = jax.nn.softmax((s + rhc[:, :, None] + rwc[:, None, :]).reshape(-1, L), axis=-1)
        return numerics.einsum("qk,kd->qd", p.astype(vv.dtype), vv)

    if L <= QUERY_CHUNK or L % QUERY_CHUNK:
        return jax.vmap(block)(q, rel_h, rel_w, k, v)
    nc = L // QUERY_CHUNK

    def head(args):
        qh, rhh, rwh, kh, vh = args
        chunks = (qh.reshape(nc, QUERY_CHUNK, d), rhh.reshape(nc, QUERY_CHUNK, h), rwh.reshape(nc, QUERY_CHUNK, w))
        return jax.lax.map(lambda c: block(*c, kh, vh), chunks).reshape(L, d)

    return jax.lax.map(head, (q, rel_h, rel_w, k, v))


def _xla(q, k, v, rh, rw, scale, numerics):
    b, h, w, nh, hd = q.shape
    s = numerics.einsum("bhwnd,bxynd->bnhwxy", q, k, out_dtype=jnp.float32) * scale
    if rh is not None:
        rel_h, rel_w = _rel_terms(q, rh, rw, numerics, "bnhwk")
        s = s + rel_h[..., :, None] + rel_w[..., None, :]
    p = jax.nn.softmax(s.reshape(b, nh, h, w, h * w), axis=-1).reshape(s.shape)
    return numerics.einsum("bnhwxy,bxynd->bhwnd", p.astype(v.dtype), v)


def _bias(q, rh, rw, numerics, dtype) -> jax.Array | None:
    """The materialised rel-pos bias (B, N, L, L) in `dtype`."""
    if rh is None:
        return None
    b, h, w, nh, _ = q.shape
    rel_h, rel_w = _rel_terms(q, rh, rw, numerics, "bnhwk")
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, nh, h * w, h * w).astype(dtype)


def _sdpa_bias(q, k, v, rh, rw, scale, numerics, *, sdpa: str):
    b, h, w, nh, hd = q.shape
    dt = numerics.dtype or q.dtype
    tokens = lambda t: t.reshape(b, h * w, nh, hd).astype(dt)
    out = jax.nn.dot_product_attention(
        tokens(q), tokens(k), tokens(v), bias=_bias(q, rh, rw, numerics, dt), scale=scale, implementation=sdpa
    )
    return out.reshape(b, h, w, nh, hd)


def _sdpa_augmented(q, k, v, rh, rw, scale, numerics, *, sdpa: str):
    if rh is None:
        return _sdpa_bias(q, k, v, rh, rw, scale, numerics, sdpa=sdpa)
    b, h, w, nh, hd = q.shape
    dt = numerics.dtype or q.dtype
    rel_h, rel_w = _rel_terms(q, rh, rw, numerics, "bhwnk")
    # One-hot rows/columns of each key pick rel_h[q, k_row] and rel_w[q, k_col] out of q'.k'; exact in any dtype.
    rows = jnp.broadcast_to(jnp.eye(h, dtype=dt)[:, None, None, :], (b, h, w, nh, h))
    cols = jnp.broadcast_to(jnp.eye(w, dtype=dt)[None, :, None, :], (b, h, w, nh, w))
    qa = jnp.concatenate([q.astype(jnp.float32) * scale, rel_h, rel_w], axis=-1).astype(dt)
    ka = jnp.concatenate([k.astype(dt), rows, cols], axis=-1)
    width = -(-qa.shape[-1] // 8) * 8  # cuDNN wants head dims in multiples of 8
    pad = lambda t: jnp.pad(t.astype(dt), [(0, 0)] * 4 + [(0, width - t.shape[-1])]).reshape(b, h * w, nh, width)
    out = jax.nn.dot_product_attention(pad(qa), pad(ka), pad(v), scale=1.0, implementation=sdpa)
    return out[..., :hd].reshape(b, h, w, nh, hd)


def _pallas(q, k, v, rh, rw, scale, numerics):
    b, h, w, nh, hd = q.shape
    L = h * w
    try:
        from jax.experimental.pallas.ops.tpu.flash_attention import BlockSizes, flash_attention
    except ImportError:
        return _xla(q, k, v, rh, rw, scale, numerics)
    block = next((s for s in (512, 256, 128) if L % s == 0), None)
    if block is None:
        return _xla(q, k, v, rh, rw, scale, numerics)
    dt = numerics.dtype or q.dtype
    heads_first = lambda t: jnp.moveaxis(t.reshape(b, L, nh, hd), 2, 1).astype(dt)
    sizes = dict.fromkeys(
        ["block_q", "block_k_major", "block_k", "block_q_major_dkv", "block_k_major_dkv", "block_k_dkv"]
        + ["block_q_dkv", "block_k_major_dq", "block_k_dq", "block_q_dq"],
        block,
    )
    # The kernel adds `ab` before multiplying by sm_scale, so q carries the scale and sm_scale stays 1.
    out = flash_attention(
        heads_first(q.astype(jnp.float32) * scale),
        heads_first(k),
        heads_first(v),
        ab=_bias(q, rh, rw, numerics, dt),
        sm_scale=1.0,
        block_sizes=BlockSizes(block_b=1, **sizes),
    )
    return jnp.moveaxis(out, 1, 2).reshape(b, h, w, nh, hd)
