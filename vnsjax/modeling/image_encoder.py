"""ViT image encoder of SAM (segment_anything/modeling/image_encoder.py), channels-last."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vnsjax.modeling.attention import IMPLEMENTATIONS, rel_pos_attention, resolve_implementation
from vnsjax.modeling.common import LayerNorm2d, MLPBlock, gelu, layer_norm, torch_conv, torch_linear
from vnsjax.modeling.precision import HIGHEST, Numerics


class PatchEmbed(nnx.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.proj = torch_conv(in_chans, embed_dim, patch_size, stride=patch_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


def get_rel_pos(q_size: int, k_size: int, rel_pos: jax.Array) -> jax.Array:
    """Relative positional embeddings for every (query, key) pair: (q_size, k_size, head_dim)."""
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        # Only reached for inputs other than 1024: the original interpolates the table linearly.
        rel_pos = jax.image.resize(rel_pos, (max_rel_dist, rel_pos.shape[1]), method="linear", antialias=False)
    q_coords = jnp.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = jnp.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.astype(jnp.int32)]


class Attention(nnx.Module):
    """Multi-head attention with decomposed relative positions (MViTv2); `implementation` as in attention.py."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        *,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        implementation: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = torch_linear(dim, dim * 3, use_bias=qkv_bias, rngs=rngs)
        self.proj = torch_linear(dim, dim, rngs=rngs)
        self.use_rel_pos = use_rel_pos
        self.implementation = implementation
        self.numerics: Numerics = HIGHEST
        if use_rel_pos:
            # PyTorch inits these to zero; checkpoints always carry them.
            self.rel_pos_h = nnx.Param(jnp.asarray(np.zeros((2 * input_size[0] - 1, head_dim), np.float32)))
            self.rel_pos_w = nnx.Param(jnp.asarray(np.zeros((2 * input_size[1] - 1, head_dim), np.float32)))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        nh, hd = self.num_heads, c // self.num_heads
        # [q | k | v] along the output axis, heads contiguous inside each part.
        qkv = self.qkv(x).reshape(b, h, w, 3, nh, hd)
        q, k, v = (qkv[..., i, :, :] for i in range(3))  # (b, h, w, nh, hd)
        rh = rw = None
        if self.use_rel_pos:
            rh = get_rel_pos(h, h, self.rel_pos_h[...])
            rw = get_rel_pos(w, w, self.rel_pos_w[...])
        out = rel_pos_attention(
            q, k, v, rh, rw, scale=self.scale, implementation=self.implementation, numerics=self.numerics
        )
        return self.proj(out.reshape(b, h, w, c))


def window_partition(x: jax.Array, window_size: int) -> tuple[jax.Array, tuple[int, int]]:
    """Zero-pads bottom/right to a multiple of the window and splits into windows."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(windows: jax.Array, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :]


class Block(nnx.Module):
    """Pre-norm transformer block with window (window_size > 0) or global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
        *,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.norm1 = layer_norm(dim, 1e-6, rngs=rngs)
        self.attn = Attention(
            dim,
            num_heads,
            input_size if window_size == 0 else (window_size, window_size),
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            implementation=attention,
            rngs=rngs,
        )
        self.norm2 = layer_norm(dim, 1e-6, rngs=rngs)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), gelu, rngs=rngs)
        self.window_size = window_size
        self.adapter: nnx.Module | None = nnx.data(None)  # vnsjax.modeling.adapter.add_adapters

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            # Padding happens after norm1, so padded tokens are exact zeros that attend as keys.
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        if self.adapter is not None:
            x = self.adapter(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nnx.Module):
    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
        attention: str = "auto",
        rngs: nnx.Rngs,
    ):
        """attention: the attention implementation of every block (vnsjax.modeling.attention)."""
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, rngs=rngs)
        self.pos_embed = (
            nnx.Param(jnp.asarray(np.zeros((1, grid, grid, embed_dim), np.float32))) if use_abs_pos else None
        )
        self.blocks = nnx.List(
            [
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    0 if i in global_attn_indexes else window_size,
                    (grid, grid),
                    qkv_bias=qkv_bias,
                    use_rel_pos=use_rel_pos,
                    attention=attention,
                    rngs=rngs,
                )
                for i in range(depth)
            ]
        )
        # Rematerialise each block in the backward pass (training through the encoder): the saved activations are
        # the blocks' inputs, not their insides, for one extra forward. Static; set by the trainer.
        self.remat = False
        self.neck = nnx.Sequential(
            torch_conv(embed_dim, out_chans, 1, use_bias=False, rngs=rngs),
            LayerNorm2d(out_chans, rngs=rngs),
            torch_conv(out_chans, out_chans, 3, padding=1, use_bias=False, rngs=rngs),
            LayerNorm2d(out_chans, rngs=rngs),
        )

    def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """x: (B, 1024, 1024, 3) normalised and padded. Returns (B, 64, 64, 256) and the global-block outputs."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed[...].astype(x.dtype)
        if self.remat:
            x, interm = self._remat_blocks(x)
        else:
            interm = []
            for blk in self.blocks:
                x = blk(x)
                if blk.window_size == 0:
                    interm.append(x)
        return self.neck(x), interm

    def _remat_blocks(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """The blocks with each one rematerialised, as a scan over the repeating [window x k, global] groups.

        Unrolled checkpoints leave the compiler free to schedule every recomputation early (XLA:CPU does, and
        then keeps all activations alive); inside a scan the recomputation must happen in its backward
        iteration. SAM's encoders all repeat one group (global blocks at k, 2k+1, ...); any other layout falls
        back to unrolled checkpoints.
        """
        period = next(i for i, b in enumerate(self.blocks) if b.window_size == 0) + 1
        groups = len(self.blocks) // period
        pattern = [b.window_size == 0 for b in self.blocks]
        if groups * period != len(self.blocks) or pattern != ([False] * (period - 1) + [True]) * groups:
            interm = []
            for blk in self.blocks:
                x = _remat_block(blk, x)
                if blk.window_size == 0:
                    interm.append(x)
            return x, interm
        graphdefs = [nnx.split(self.blocks[j])[0] for j in range(period)]
        # Position j of every group, stacked on a leading group axis (the scanned axis).
        stacked = [
            jax.tree.map(lambda *xs: jnp.stack(xs), *(nnx.state(self.blocks[g * period + j]) for g in range(groups)))
            for j in range(period)
        ]

        def group(x: jax.Array, states: list) -> tuple[jax.Array, jax.Array]:
            for graphdef, state in zip(graphdefs, states, strict=True):
                x = jax.checkpoint(lambda s, h, gd=graphdef: nnx.merge(gd, s)(h))(state, x)
            return x, x  # the group's last block is global: its output is an interm embedding

        x, interm = jax.lax.scan(group, x, stacked)
        return x, list(interm)


_remat_block = nnx.remat(lambda blk, x: blk(x))


def set_attention(model: nnx.Module, implementation: str) -> nnx.Module:
    """Sets the attention implementation (vnsjax.modeling.attention) of every encoder block in `model`, in place."""
    if implementation != "auto" and implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"Unknown attention implementation {implementation!r}; expected 'auto' or one of {IMPLEMENTATIONS}."
        )
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Attention):
            node.implementation = implementation
    return model


def get_attention(model: nnx.Module, dtype: Any = None) -> str:
    """The attention implementation `model`'s encoder runs on this backend ("auto" resolved), for logs.

    dtype: the compute dtype when the parameters were cast rather than the precision set (the trainer's
    encoder_dtype); by default the model's own precision decides.
    """
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Attention):
            return resolve_implementation(node.implementation, node.numerics.dtype or dtype or jnp.float32)
    raise ValueError(f"{type(model).__name__} has no encoder attention")
