"""PyTorch state_dict <-> Flax NNX parameter mapping.

A PyTorch key names a path of attributes; the Flax modules use the same attribute names, so the
path is walked as is (an nnx.Sequential keeps its children under `.layers`, which PyTorch does not
spell). What changes is the leaf: the table below says, per layer kind, which Flax field each
PyTorch tensor lands in and which named layout change it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vnsjax.modeling.common import ConvTranspose2x2

# Named layout changes, PyTorch -> Flax, with their inverses.
LAYOUTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "identity": (lambda w: w, lambda w: w),
    "linear_transpose": (lambda w: w.T, lambda w: w.T),  # (out, in) -> (in, out)
    "conv_oihw_to_hwio": (lambda w: w.transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1)),
    "conv_transpose_iohw_to_hwio": (lambda w: w.transpose(2, 3, 0, 1), lambda w: w.transpose(2, 3, 0, 1)),
    "conv1d_oik_to_kio": (lambda w: w.transpose(2, 1, 0), lambda w: w.transpose(2, 1, 0)),
}

DROP = None  # PyTorch tensors with no Flax counterpart (BatchNorm's num_batches_tracked)

# layer kind -> {pytorch leaf name: (flax field, layout name) or DROP}
LEAF_TABLE: dict[type, dict[str, tuple[str, str] | None]] = {
    nnx.Linear: {"weight": ("kernel", "linear_transpose"), "bias": ("bias", "identity")},
    ConvTranspose2x2: {"weight": ("kernel", "conv_transpose_iohw_to_hwio"), "bias": ("bias", "identity")},
    nnx.LayerNorm: {"weight": ("scale", "identity"), "bias": ("bias", "identity")},
    nnx.Embed: {"weight": ("embedding", "identity")},
    nnx.BatchNorm: {
        "weight": ("scale", "identity"),
        "bias": ("bias", "identity"),
        "running_mean": ("mean", "identity"),
        "running_var": ("var", "identity"),
        "num_batches_tracked": DROP,
    },
}


def _conv_leaves(conv: nnx.Conv) -> dict[str, tuple[str, str] | None]:
    layout = "conv1d_oik_to_kio" if len(conv.kernel_size) == 1 else "conv_oihw_to_hwio"
    return {"weight": ("kernel", layout), "bias": ("bias", "identity")}


def leaf_rules(module: object) -> dict[str, tuple[str, str] | None]:
    if isinstance(module, nnx.Conv):
        return _conv_leaves(module)
    for kind, rules in LEAF_TABLE.items():
        if isinstance(module, kind):
            return rules
    # Bare tensors owned directly by a module (pos_embed, rel_pos_h, the PE matrix, hf_token...).
    return {}


class MappingError(ValueError):
    pass


def resolve(root: nnx.Module, key: str) -> tuple[nnx.Variable, str] | None:
    """Finds the Flax variable a PyTorch key maps to, and its layout. None means: drop this key."""
    parts = key.split(".")
    node: object = root
    for part in parts[:-1]:
        if isinstance(node, nnx.Sequential):
            node = node.layers
        if part.isdigit() and isinstance(node, nnx.List | list):
            idx = int(part)
            if idx >= len(node):
                raise MappingError(f"{key}: index {idx} out of range at {part!r}")
            node = node[idx]
        elif isinstance(node, nnx.Module) and hasattr(node, part) and not part.isdigit():
            node = getattr(node, part)
        else:
            raise MappingError(f"{key}: no Flax attribute {part!r} on {type(node).__name__}")
    leaf = parts[-1]
    rules = leaf_rules(node)
    if leaf in rules:
        rule = rules[leaf]
        if rule is DROP:
            return None
        field, layout = rule
    elif not rules and isinstance(getattr(node, leaf, None), nnx.Variable):
        field, layout = leaf, "identity"
    else:
        raise MappingError(f"{key}: {type(node).__name__} has no rule for PyTorch tensor {leaf!r}")
    var = getattr(node, field, None)
    if not isinstance(var, nnx.Variable):
        raise MappingError(f"{key}: {type(node).__name__}.{field} is not a Flax variable")
    return var, layout


def iter_modules(root: nnx.Module, prefix: str = "") -> Iterator[tuple[str, nnx.Module]]:
    """Every submodule with its PyTorch name (`nnx.Sequential`'s `.layers` is not spelled in PyTorch)."""
    for path, node in nnx.iter_graph(root):
        if isinstance(node, nnx.Module):
            yield prefix + ".".join(_torch_path(root, path)), node


def iter_torch_keys(root: nnx.Module, prefix: str = "") -> Iterator[tuple[str, nnx.Variable, str]]:
    """Every (PyTorch key, Flax variable, layout) of a module: the inverse walk of `resolve`."""
    for name, node in iter_modules(root, prefix):
        rules = leaf_rules(node)
        head = name + "." if name != prefix else name
        if rules:
            for leaf, rule in rules.items():
                if rule is not DROP and isinstance(getattr(node, rule[0], None), nnx.Variable):
                    yield head + leaf, getattr(node, rule[0]), rule[1]
        else:
            for attr, value in vars(node).items():
                if isinstance(value, nnx.Variable):
                    yield head + attr, value, "identity"


def _torch_path(root: nnx.Module, path: tuple) -> list[str]:
    names, node = [], root
    for part in path:
        child = node[part] if isinstance(node, nnx.List | list) else getattr(node, part)
        if not (isinstance(node, nnx.Sequential) and part == "layers"):
            names.append(str(part))
        node = child
    return names


def load_state_dict(
    model: nnx.Module, state_dict: dict[str, np.ndarray], *, prefix: str = "", strict: bool = True
) -> tuple[list[str], list[str]]:
    """Copies a PyTorch state_dict into `model` in place.

    Returns (unmapped PyTorch keys, Flax-side keys missing from the state_dict). With strict=True
    any of either, or any shape mismatch, raises with the offending keys named.
    """
    expected = {k: (v, layout) for k, v, layout in iter_torch_keys(model, prefix)}
    unmapped, seen = [], set()
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            unmapped.append(key)
            continue
        try:
            target = resolve(model, key[len(prefix) :])
        except MappingError:
            unmapped.append(key)
            continue
        if target is None:
            continue
        var, layout = target
        arr = LAYOUTS[layout][0](np.asarray(value))
        if arr.shape != var.shape:
            raise MappingError(
                f"shape mismatch for {key}: checkpoint {tuple(np.shape(value))} -> {arr.shape} after {layout}, "
                f"but the model expects {var.shape}"
            )
        var.set_value(jnp.asarray(arr, dtype=var.dtype))
        seen.add(key)
    missing = sorted(k for k in expected if k not in seen)
    if strict and (unmapped or missing):
        raise MappingError(_report(unmapped, missing))
    return unmapped, missing


def export_state_dict(model: nnx.Module, prefix: str = "") -> dict[str, np.ndarray]:
    """Flax parameters back under their PyTorch names and layouts."""
    return {k: LAYOUTS[layout][1](np.asarray(v.get_value())) for k, v, layout in iter_torch_keys(model, prefix)}


def _report(unmapped: list[str], missing: list[str], limit: int = 20) -> str:
    lines = []
    if unmapped:
        lines.append(f"{len(unmapped)} checkpoint keys have no place in the model: " + ", ".join(unmapped[:limit]))
    if missing:
        lines.append(f"{len(missing)} model tensors are missing from the checkpoint: " + ", ".join(missing[:limit]))
    return "\n".join(lines)
