"""Bottleneck adapters for the image encoder (SAM-Med2D / Medical-SAM-Adapter style), for parameter-efficient tuning.

One adapter per ViT block, on the attention branch before it joins the residual stream:
`x + attn(norm1(x))` becomes `x + a + up(gelu(down(a)))` with `a = attn(norm1(x))`. The down-projection keeps
PyTorch's default init and the up-projection starts at zero, so a model with fresh adapters computes exactly
what its base computes, and training moves it away from the base only as far as the loss asks.
Enabled by `ModelConfig.encoder_adapter_ratio` (hidden width = ratio * block width; 0 = no adapters), which
model directories record, so a trained adapter model loads like any other.
"""

from __future__ import annotations

import jax
from flax import nnx

from vnsjax.modeling.common import EXACT, Linear, gelu, torch_linear


class Adapter(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.down = torch_linear(dim, hidden, rngs=rngs)
        self.up = Linear(hidden, dim, kernel_init=nnx.initializers.zeros, rngs=rngs, **EXACT)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.up(gelu(self.down(x)))


def add_adapters(encoder: nnx.Module, ratio: float, *, rngs: nnx.Rngs) -> None:
    """Gives every block of `encoder` (an ImageEncoderViT) an adapter of hidden width round(ratio * dim), in place."""
    if not 0 < ratio <= 1:
        raise ValueError(f"encoder adapter ratio must be in (0, 1], got {ratio}")
    for blk in encoder.blocks:
        dim = blk.norm1.scale.shape[-1]
        blk.adapter = Adapter(dim, max(1, round(ratio * dim)), rngs=rngs)
