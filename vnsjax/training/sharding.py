"""Mesh and shardings for training: a data-parallel ("data",) mesh, replicated state, optional FSDP-style encoder.

Multi-process safe: `put` and `to_host` work where `jax.device_put` / `np.asarray` cannot reach non-addressable
devices.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh() -> Mesh:
    """Data-parallel mesh over every device of every process. Auto axes: the SAM port relies on reshapes and
    einsums whose shardings XLA should propagate."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Every training-batch array is split on its leading (batch) axis."""
    return NamedSharding(mesh, P("data"))


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = 2**18) -> P:
    """Last axis over "data" for large kernels whose last dimension divides by the mesh size; else replicated."""
    if n > 1 and len(shape) >= 2 and math.prod(shape) >= min_size and shape[-1] % n == 0:
        return P(*([None] * (len(shape) - 1)), "data")
    return P()


def state_shardings(state: nnx.State, mesh: Mesh, *, shard_encoder: bool = False, min_size: int = 2**18) -> Any:
    """A sharding tree for `state`: replicated, or (shard_encoder) FSDP-style for the frozen encoder's kernels."""
    n = mesh.shape["data"]

    def spec(path: tuple, x: Any) -> NamedSharding:
        if shard_encoder and path_keys(path)[:1] == ["image_encoder"]:
            return NamedSharding(mesh, fsdp_spec(tuple(x.shape), n, min_size))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(spec, state)


def path_keys(path: tuple) -> list[str]:
    """A pytree path as strings: ("image_encoder", "blocks", "0", ...)."""
    return [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]


def put(tree: Any, shardings: Any) -> Any:
    """Places host-identical values on (possibly multi-process) shardings; works where device_put cannot reach
    non-addressable devices."""

    def one(x: Any, s: NamedSharding) -> jax.Array:
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    return jax.tree.map(one, tree, shardings)


def put_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's part of a global batch -> global arrays split on the batch axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated (possibly multi-process) array -> NumPy, from this process's first shard."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_shards[0].data)
    return np.asarray(x)
