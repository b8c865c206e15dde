"""SAM's two-way transformer (segment_anything/modeling/transformer.py), with VNS-SAM's multi-stage option.

`key_mask` (B, T) marks which prompt tokens are real. Masked tokens are removed as attention keys
everywhere (token self-attention and image->token attention), so bucket padding never changes a
real output; without a mask this is exactly the original.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import MLPBlock, layer_norm, relu, torch_linear
from vnsjax.modeling.precision import HIGHEST, Numerics


class Attention(nnx.Module):
    """Attention with optional down-projection of the embedding size after q/k/v."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, *, rngs: nnx.Rngs):
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0, "num_heads must divide embedding_dim // downsample_rate."
        self.q_proj = torch_linear(embedding_dim, self.internal_dim, rngs=rngs)
        self.k_proj = torch_linear(embedding_dim, self.internal_dim, rngs=rngs)
        self.v_proj = torch_linear(embedding_dim, self.internal_dim, rngs=rngs)
        self.out_proj = torch_linear(self.internal_dim, embedding_dim, rngs=rngs)
        self.numerics: Numerics = HIGHEST

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        b, nq, _ = q.shape
        nk = k.shape[1]
        nh, hd = self.num_heads, self.internal_dim // self.num_heads
        q = self.q_proj(q).reshape(b, nq, nh, hd)
        k = self.k_proj(k).reshape(b, nk, nh, hd)
        v = self.v_proj(v).reshape(b, nk, nh, hd)
        logits = self.numerics.einsum("bqhd,bkhd->bhqk", q, k, out_dtype=jnp.float32) / jnp.sqrt(jnp.float32(hd))
        if key_mask is not None:
            logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = self.numerics.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, nq, self.internal_dim)
        return self.out_proj(out)


class TwoWayAttentionBlock(nnx.Module):
    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        self.self_attn = Attention(embedding_dim, num_heads, rngs=rngs)
        self.norm1 = layer_norm(embedding_dim, 1e-5, rngs=rngs)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate, rngs=rngs)
        self.norm2 = layer_norm(embedding_dim, 1e-5, rngs=rngs)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, relu, rngs=rngs)
        self.norm3 = layer_norm(embedding_dim, 1e-5, rngs=rngs)
        self.norm4 = layer_norm(embedding_dim, 1e-5, rngs=rngs)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate, rngs=rngs)
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(
        self, queries: jax.Array, keys: jax.Array, query_pe: jax.Array, key_pe: jax.Array, key_mask: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, key_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, key_mask)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, key_mask))
        return queries, keys


class TransformerOutput(NamedTuple):
    queries: jax.Array  # final tokens (B, T, C)
    keys: jax.Array  # final image embedding (B, HW, C)
    interm_queries: jax.Array | None = None  # multi-stage only: tokens after the internal attention
    interm_keys: jax.Array | None = None  # multi-stage only: image embedding after layer 0


class TwoWayTransformer(nnx.Module):
    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        multi_stage: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        self.layers = nnx.List(
            [
                TwoWayAttentionBlock(
                    embedding_dim,
                    num_heads,
                    mlp_dim,
                    attention_downsample_rate,
                    skip_first_layer_pe=(i == 0),
                    rngs=rngs,
                )
                for i in range(depth)
            ]
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate, rngs=rngs)
        self.norm_final_attn = layer_norm(embedding_dim, 1e-5, rngs=rngs)
        self.multi_stage = multi_stage
        if multi_stage:
            # VNS-SAM: an extra token->image attention after layer 0 gives the intermediate tokens.
            self.internal_attn_token_to_image = Attention(
                embedding_dim, num_heads, attention_downsample_rate, rngs=rngs
            )
            self.norm_internal_attn = layer_norm(embedding_dim, 1e-5, rngs=rngs)

    def __call__(
        self,
        image_embedding: jax.Array,
        image_pe: jax.Array,
        point_embedding: jax.Array,
        key_mask: jax.Array | None = None,
    ) -> TransformerOutput:
        """image_embedding, image_pe: (B, h, w, C); point_embedding: (B, T, C); key_mask: (B, T)."""
        b, h, w, c = image_embedding.shape
        keys = image_embedding.reshape(b, h * w, c)
        key_pe = jnp.broadcast_to(image_pe, image_embedding.shape).reshape(b, h * w, c)
        queries = point_embedding
        interm_q = interm_k = None
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, key_mask)
            if self.multi_stage and i == 0:
                interm_k = keys
                a = self.internal_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
                interm_q = self.norm_internal_attn(queries + a)
        a = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + a)
        return TransformerOutput(queries, keys, interm_q, interm_k)
