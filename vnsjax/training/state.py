"""Pieces of VNS-SAM training that are not the loop: base weights, the frozen/trainable split, optimizer, shardings.

The model is split once into four nnx states:
  trainable  METI + NSFM parameters (`vns_decoder.TRAINABLE`): differentiated, Adam state, checkpointed;
  batch_stats NSFM BatchNorm running statistics: updated every step (train mode), checkpointed;
  frozen     everything else (image encoder, prompt encoder, SAM's decoder weights): never differentiated,
             no optimizer state, not checkpointed (rebuilt from `sam_checkpoint` or the seed on resume).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vnsjax.build_sam import build_sam
from vnsjax.model_dir import load_model
from vnsjax.modeling.sam import Sam


class Split(NamedTuple):
    """A model split for functional training; `merge(graphdef, trainable, batch_stats, frozen)` rebuilds it."""

    train_graphdef: Any  # BatchNorm in train mode (batch statistics)
    eval_graphdef: Any  # BatchNorm in eval mode (running statistics)
    trainable: nnx.State
    batch_stats: nnx.State
    frozen: nnx.State


def load_sam_base(model: Sam, directory: str | Path) -> dict[str, int]:
    """Copies a converted SAM model's encoder, prompt encoder and mask-decoder weights into a VNS-SAM `model`.

    The VNS decoder holds SAM's decoder modules under the same names (transformer, output_upscaling, mask
    tokens, hypernetworks, IoU head), so every leaf whose path and shape exist in both is copied; the VNS-only
    modules keep their initialisation, as the released code loads SAM's decoder with strict=False.
    Returns counts of copied leaves per top-level module.
    """
    sam = load_model(directory)
    if sam.config.encoder_embed_dim != model.config.encoder_embed_dim or sam.img_size != model.img_size:
        raise ValueError(f"{directory} holds a {sam.config.name} model, the VNS model is {model.config.name}")
    counts = {}
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        src = dict(nnx.to_flat_state(nnx.state(getattr(sam, name))))
        dst_state = nnx.state(getattr(model, name))
        copied = 0
        for path, var in nnx.to_flat_state(dst_state):
            other = src.get(path)
            if other is not None and other.shape == var.shape:
                var.set_value(other.get_value())
                copied += 1
        nnx.update(getattr(model, name), dst_state)
        counts[name] = copied
    if counts["image_encoder"] != len(nnx.to_flat_state(nnx.state(sam.image_encoder))):
        raise ValueError("image encoder weights were not all copied; model configs differ")
    return counts


def build_model(model_type: str, seed: int, sam_checkpoint: str = "", variant: str = "vns") -> Sam:
    model = build_sam(model_type, variant, seed=seed)
    if sam_checkpoint:
        load_sam_base(model, sam_checkpoint)
    return model


def split_model(model: Sam) -> Split:
    model.eval()
    trainable = type(model.mask_decoder).TRAINABLE
    eval_graphdef = nnx.split(model, trainable, nnx.BatchStat, ...)[0]
    model.train()  # released training: NSFM BatchNorm uses batch statistics (docs/released-code.md#nsfm-batchnorm)
    graphdef, trainable, batch_stats, frozen = nnx.split(model, trainable, nnx.BatchStat, ...)
    return Split(graphdef, eval_graphdef, trainable, batch_stats, frozen)


def cast_encoder(frozen: nnx.State, dtype: Any) -> nnx.State:
    """Frozen image-encoder float weights -> `dtype` (bf16 compute). They are never updated, so no master copy."""
    if dtype is None or jnp.dtype(dtype) == jnp.float32:
        return frozen

    def cast(path: tuple, x: Any) -> Any:
        if _keys(path)[:1] == ["image_encoder"] and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree_util.tree_map_with_path(cast, frozen)


def _keys(path: tuple) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]


def learning_rate_schedule(config: Any, steps_per_epoch: int) -> optax.Schedule:
    """Released StepLR(step_size=decay_epochs, gamma) stepped per epoch, expressed in optimizer steps.

    Update number s (0-based, = Adam's count) belongs to epoch s // steps_per_epoch.
    """
    boundary = config.lr_decay_epochs * steps_per_epoch
    base, gamma = config.lr, config.lr_decay

    def schedule(count: jax.Array) -> jax.Array:
        return base * jnp.where(count >= boundary, gamma, 1.0)

    return schedule


def make_optimizer(config: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(config, steps_per_epoch)
    return optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps), schedule


# ----------------------------------------------------------------------------------------------------------------
# Shardings
# ----------------------------------------------------------------------------------------------------------------


def make_mesh() -> Mesh:
    """Data-parallel mesh over every device of every process. Auto axes: the SAM port relies on reshapes and
    einsums whose shardings XLA should propagate."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = 2**18) -> P:
    """Last axis over "data" for large kernels whose last dimension divides by the mesh size; else replicated."""
    if n > 1 and len(shape) >= 2 and math.prod(shape) >= min_size and shape[-1] % n == 0:
        return P(*([None] * (len(shape) - 1)), "data")
    return P()


def state_shardings(state: nnx.State, mesh: Mesh, *, shard_encoder: bool = False, min_size: int = 2**18) -> Any:
    """A sharding tree for `state`: replicated, or (shard_encoder) FSDP-style for the frozen encoder's kernels."""
    n = mesh.shape["data"]

    def spec(path: tuple, x: Any) -> NamedSharding:
        if shard_encoder and _keys(path)[:1] == ["image_encoder"]:
            return NamedSharding(mesh, fsdp_spec(tuple(x.shape), n, min_size))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(spec, state)


def put(tree: Any, shardings: Any) -> Any:
    """Places host-identical values on (possibly multi-process) shardings; works where device_put cannot reach
    non-addressable devices."""

    def one(x: Any, s: NamedSharding) -> jax.Array:
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    return jax.tree.map(one, tree, shardings)


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated (possibly multi-process) array -> NumPy, from this process's first shard."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_shards[0].data)
    return np.asarray(x)


def count_leaves(tree: Any) -> tuple[int, int]:
    """(number of array leaves, number of elements)."""
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
    return len(leaves), int(sum(math.prod(x.shape) for x in leaves))
