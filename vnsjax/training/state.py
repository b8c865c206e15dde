"""The training state: one pytree, made by `init_train_state`, stepped by `step.train_step`, saved as it is.

The model is split once into
  trainable    the parameters `config.trainable` selects (released: METI + NSFM): differentiated, Adam state;
  batch_stats  NSFM BatchNorm running statistics: updated every step (train mode);
  frozen       everything else (image encoder, prompt encoder, SAM's decoder weights): never differentiated,
               no optimizer state, not checkpointed (rebuilt from `sam_checkpoint` or the seed on resume).
`TrainState` holds the first two with the optimizer state, the step and the run's RNG key; `frozen` is passed
beside it; the static half (graphdefs, optimizer, shardings) is a `TrainSetup`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from vnsjax.build_sam import build_sam
from vnsjax.model_dir import load_model
from vnsjax.modeling.sam import Sam
from vnsjax.training import optim, sharding


class TrainState(NamedTuple):
    trainable: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer updates applied so far
    # The run's base key (key data). Nothing in the current model is stochastic (prompts are drawn by the data
    # pipeline, whose state is checkpointed separately); kept so that a stochastic recipe resumes exactly.
    rng: jax.Array


class TrainSetup(NamedTuple):
    """Everything static about a run's state: closed over by the jitted step, never traced."""

    graphdef: nnx.GraphDef  # BatchNorm in train mode (batch statistics)
    eval_graphdef: nnx.GraphDef  # BatchNorm in eval mode (running statistics)
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    encoder_dtype: Any
    shardings: TrainState  # a NamedSharding per leaf of the state
    mesh: Mesh


class Split(NamedTuple):
    """A model split for functional training; `nnx.merge(graphdef, trainable, batch_stats, frozen)` rebuilds it."""

    train_graphdef: nnx.GraphDef
    eval_graphdef: nnx.GraphDef
    trainable: nnx.State
    batch_stats: nnx.State
    frozen: nnx.State


def init_train_state(
    config: mlc.ConfigDict, mesh: Mesh, steps_per_epoch: int
) -> tuple[TrainState, nnx.State, TrainSetup]:
    """Builds the model (random or `config.sam_checkpoint` base), splits it, and places state and frozen base.

    Returns (state at step 0, frozen base, setup). The state is replicated; the frozen encoder is cast to
    `config.encoder_dtype` and, with `config.shard_encoder`, FSDP-sharded.
    """
    model = build_model(config.model_type, config.seed, config.sam_checkpoint, config.variant)
    split = split_model(model, config.trainable)
    dtype = jnp.dtype(config.encoder_dtype)
    frozen_shardings = sharding.state_shardings(
        split.frozen, mesh, shard_encoder=config.shard_encoder, min_size=config.shard_encoder_min_size
    )
    frozen = sharding.put(cast_encoder(split.frozen, dtype), frozen_shardings)
    tx, schedule = optim.make_optimizer(config, steps_per_epoch)
    host = TrainState(
        trainable=split.trainable,
        batch_stats=split.batch_stats,
        opt_state=tx.init(split.trainable),
        step=np.zeros((), np.int32),
        rng=np.asarray(jax.random.key_data(jax.random.key(config.seed))),
    )
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), host)
    state = sharding.put(host, shardings)
    return state, frozen, TrainSetup(split.train_graphdef, split.eval_graphdef, tx, schedule, dtype, shardings, mesh)


def eval_model(setup: TrainSetup, state: TrainState, frozen: nnx.State) -> Sam:
    """The model being trained, in eval mode (BatchNorm running statistics), sharing the state's arrays."""
    return nnx.merge(setup.eval_graphdef, state.trainable, state.batch_stats, frozen)


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


def split_model(model: Sam, trainable: str = "released") -> Split:
    """(train graphdef, eval graphdef, trainable, batch_stats, frozen); `trainable` is `config.trainable`."""
    wrt = optim.trainable_filter(trainable)
    model.eval()
    eval_graphdef = nnx.split(model, wrt, nnx.BatchStat, ...)[0]
    model.train()  # released training: NSFM BatchNorm uses batch statistics (docs/released-code.md#nsfm-batchnorm)
    graphdef, params, batch_stats, frozen = nnx.split(model, wrt, nnx.BatchStat, ...)
    parts = [trainable] if trainable == "released" else [p.strip() for p in trainable.split(",") if p.strip()]
    for part in parts:  # a mistyped path would otherwise silently train less
        if not jax.tree.leaves(nnx.state(model, optim.trainable_filter(part))):
            raise ValueError(f"config.trainable: {part!r} selects no parameter of the {model.config.name} model")
    return Split(graphdef, eval_graphdef, params, batch_stats, frozen)


def cast_encoder(frozen: nnx.State, dtype: Any) -> nnx.State:
    """Frozen image-encoder float weights -> `dtype` (bf16 compute). They are never updated, so no master copy."""
    if dtype is None or jnp.dtype(dtype) == jnp.float32:
        return frozen

    def cast(path: tuple, x: Any) -> Any:
        if sharding.path_keys(path)[:1] == ["image_encoder"] and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree_util.tree_map_with_path(cast, frozen)


def count_leaves(tree: Any) -> tuple[int, int]:
    """(number of array leaves, number of elements)."""
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
    return len(leaves), int(sum(math.prod(x.shape) for x in leaves))
