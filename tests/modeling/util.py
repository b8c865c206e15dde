"""Helpers for the modeling tests: seeded random weights for a vnsjax model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx


def randomize(model: nnx.Module, seed: int) -> nnx.Module:
    """Overwrites every weight with seeded random values of a sensible scale, in place (as tests/torch_ref does for
    PyTorch): zero-initialised tensors (pos_embed, rel_pos) would hide whole terms from a comparison."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model)

    def draw(path, x):
        x = x[...] if isinstance(x, nnx.Variable) else x
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        leaf, shape = str(path[-1]), x.shape
        if leaf == "var":
            v = 0.5 + rng.uniform(size=shape)
        elif leaf == "scale":
            v = 1.0 + 0.2 * rng.standard_normal(shape)
        elif leaf in ("bias", "mean"):
            v = 0.1 * rng.standard_normal(shape)
        elif leaf in ("pos_embed", "rel_pos_h", "rel_pos_w"):
            v = 0.2 * rng.standard_normal(shape)
        elif leaf in ("embedding", "positional_encoding_gaussian_matrix"):
            v = rng.standard_normal(shape)
        else:  # kernels: (..., in, out) with fan-in = all but the last axis
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        return jnp.asarray(v, x.dtype)

    nnx.update(model, nnx.map_state(draw, state))
    return model
