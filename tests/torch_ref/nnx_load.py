"""Minimal PyTorch state_dict -> Flax NNX loader for parity tests (the real converter lives in convert_weights/).

It resolves a PyTorch key by walking the NNX module along the key's components (attribute names are equal by
design; an index under an nnx.Sequential goes through `.layers[i]`, under an nnx.List directly), then renames and
re-lays-out the leaf by the layer kind it lands on. This keeps the parity tests independent of the converter while
checking the same one-to-one key -> path property.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vnsjax.modeling.common import ConvTranspose2x2

Path = tuple[str | int, ...]

# Buffers PyTorch keeps that have no Flax counterpart.
SKIPPED_LEAVES = frozenset({"num_batches_tracked"})


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    # (out, in, *spatial) -> (*spatial, in, out); covers Conv1d (1,1,3) -> (3,1,1) and Conv2d -> HWIO.
    return w.transpose(*range(2, w.ndim), 1, 0)


def _identity(w: np.ndarray) -> np.ndarray:
    return w


# layer kind -> {torch leaf: (flax leaf, layout transform)}
_LEAF_RULES: dict[type, dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]] = {
    nnx.Conv: {"weight": ("kernel", _conv_kernel), "bias": ("bias", _identity)},
    ConvTranspose2x2: {"weight": ("kernel", lambda w: w.transpose(2, 3, 0, 1)), "bias": ("bias", _identity)},
    nnx.Linear: {"weight": ("kernel", lambda w: w.T), "bias": ("bias", _identity)},
    nnx.LayerNorm: {"weight": ("scale", _identity), "bias": ("bias", _identity)},
    nnx.BatchNorm: {
        "weight": ("scale", _identity),
        "bias": ("bias", _identity),
        "running_mean": ("mean", _identity),
        "running_var": ("var", _identity),
    },
    nnx.Embed: {"weight": ("embedding", _identity)},
}


def resolve(module: nnx.Module, key: str) -> tuple[Path, nnx.Variable, Callable[[np.ndarray], np.ndarray]] | None:
    """PyTorch key -> (Flax path, the Variable at that path, layout transform); None for skipped buffers."""
    *parents, leaf = key.split(".")
    if leaf in SKIPPED_LEAVES:
        return None
    obj, path = module, ()
    for part in parents:
        if part.isdigit():
            if isinstance(obj, nnx.Sequential):
                obj, path = obj.layers[int(part)], (*path, "layers", int(part))
            else:
                obj, path = obj[int(part)], (*path, int(part))
        else:
            obj, path = getattr(obj, part), (*path, part)
    rules = next((r for kind, r in _LEAF_RULES.items() if isinstance(obj, kind)), None)
    if rules is None or leaf not in rules:
        raise KeyError(f"{key}: no rule for leaf {leaf!r} on {type(obj).__name__}")
    name, transform = rules[leaf]
    return (*path, name), getattr(obj, name), transform


def load_torch_state_dict(module: nnx.Module, state_dict: Mapping[str, object]) -> set[Path]:
    """Copy every tensor of `state_dict` into `module` in place; returns the Flax paths written.

    Raises on unknown keys or shape mismatches; the caller checks that the returned paths cover the module.
    """
    written: set[Path] = set()
    for key, tensor in state_dict.items():
        hit = resolve(module, key)
        if hit is None:
            continue
        path, var, transform = hit
        value = transform(np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor))
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{key} -> {path}: shape {value.shape} != {var.shape}")
        if path in written:
            raise ValueError(f"{key} -> {path}: path written twice")
        var.set_value(jnp.asarray(value, dtype=var.dtype))
        written.add(path)
    return written


def flax_paths(module: nnx.Module) -> set[Path]:
    """All Variable paths of a module (params and batch stats)."""
    return {path for path, _ in nnx.to_flat_state(nnx.state(module))}
