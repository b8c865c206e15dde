"""The training state: one pytree, made by `init_train_state`, stepped by `step.train_step`, saved as it is.

The model (`config.variant`: sam, hq, vns or a VNS ablation, with or without encoder adapters) is split once into
  trainable    the parameters `config.trainable` selects (vnsjax.training.optim): differentiated, Adam state;
  batch_stats  NSFM BatchNorm running statistics: updated every step (train mode);
  frozen       everything else (image encoder, prompt encoder, SAM's decoder weights): never differentiated,
               no optimizer state, not checkpointed (rebuilt from `sam_checkpoint` or the seed on resume).
`TrainState` holds the first two with the optimizer state, the step and the run's RNG key; `frozen` is passed
beside it; the static half (graphdefs, optimizer, shardings, the `Recipe`) is a `TrainSetup`.
"""

from __future__ import annotations

import dataclasses
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

from vnsjax.build_sam import build_sam, get_model_config
from vnsjax.model_dir import load_model
from vnsjax.modeling.precision import set_precision
from vnsjax.modeling.sam import Sam
from vnsjax.training import optim, sharding


class TrainState(NamedTuple):
    trainable: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer updates applied so far
    # The run's base key (key data). Step s draws with fold_in(key, s) (HQ-SAM's point sampling), so a resumed
    # run draws as an uninterrupted one; prompts are drawn by the data pipeline, whose state is checkpointed.
    rng: jax.Array


def variant_losses(variant: str) -> tuple[str, ...]:
    """The losses a variant can train with; the first is its own ("released"). VNS-SAM's ablations train as it."""
    return {"sam": ("sam", "structure", "hq"), "hq": ("hq", "structure")}.get(variant, ("vns",))


class Recipe(NamedTuple):
    """The static choices of a training recipe (docs/training.md#recipes), resolved from the config."""

    variant: str = "vns"  # vnsjax.build_sam.DECODERS: sam | hq | vns | vns_<ablation>
    loss: str = "vns"  # sam (focal + dice + IoU MSE), hq (point-sampled BCE + dice), structure, vns (released)
    train_encoder: bool = False  # some encoder parameter trains: gradients flow through the encoder
    prompts: str = "data"  # vnsjax.training.step.PROMPTS: how a batch becomes prompts
    refine_rounds: int = 0  # prompts "interactive": error-click + mask-prompt rounds after the first prompt
    focal_alpha: float = 0.25  # loss "sam": the focal term's foreground weight (background: 1 - alpha)


DEFAULT_RECIPE = Recipe()  # the released VNS-SAM training


def make_recipe(config: mlc.ConfigDict, trainable: nnx.State) -> Recipe:
    """The config's recipe (fields checked by config_check.check_recipe): "released" loss resolved per variant."""
    loss = variant_losses(config.variant)[0] if config.loss == "released" else config.loss
    train_encoder = any(k[0] == "image_encoder" for k, _ in nnx.to_flat_state(trainable))
    return Recipe(config.variant, loss, train_encoder, config.prompts, config.refine_rounds, config.focal_alpha)


class TrainSetup(NamedTuple):
    """Everything static about a run's state: closed over by the jitted step, never traced."""

    graphdef: nnx.GraphDef  # BatchNorm in train mode (batch statistics)
    eval_graphdef: nnx.GraphDef  # BatchNorm in eval mode (running statistics)
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    encoder_dtype: Any
    shardings: TrainState  # a NamedSharding per leaf of the state
    mesh: Mesh
    recipe: Recipe = DEFAULT_RECIPE


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
    model = build_model(
        config.model_type,
        config.seed,
        config.sam_checkpoint,
        variant=config.variant,
        adapter_ratio=config.encoder_adapter_ratio,
    )
    model.image_encoder.remat = config.remat
    set_precision(model, config.precision)  # before the split: the graphdefs carry it
    split = split_model(model, config.trainable)
    recipe = make_recipe(config, split.trainable)
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
    setup = TrainSetup(split.train_graphdef, split.eval_graphdef, tx, schedule, dtype, shardings, mesh, recipe)
    return state, frozen, setup


def eval_model(setup: TrainSetup, state: TrainState, frozen: nnx.State) -> Sam:
    """The model being trained, in eval mode (BatchNorm running statistics), sharing the state's arrays."""
    return nnx.merge(setup.eval_graphdef, state.trainable, state.batch_stats, frozen)


def load_sam_base(model: Sam, directory: str | Path) -> dict[str, int]:
    """Copies a converted model's encoder, prompt encoder and mask-decoder weights into `model` (any variant).

    The HQ and VNS decoders hold SAM's decoder modules under the same names (transformer, output_upscaling, mask
    tokens, hypernetworks, IoU head), so every leaf whose path and shape exist in both is copied; modules the
    source lacks (the variant's new modules, encoder adapters) keep their initialisation, as the released code
    loads SAM's decoder with strict=False. A converted HQ-SAM directory into an HQ model copies everything
    (HQ-SAM fine-tuning). Returns counts of copied leaves per top-level module.
    """
    sam = load_model(directory)
    if sam.config.encoder_embed_dim != model.config.encoder_embed_dim or sam.img_size != model.img_size:
        raise ValueError(f"{directory} holds a {sam.config.name} model, the model to train is {model.config.name}")
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


def build_model(
    model_type: str, seed: int, sam_checkpoint: str = "", variant: str = "vns", *, adapter_ratio: float = 0.0
) -> Sam:
    """The model to train: random (no `sam_checkpoint`: demos, tests, pre-training from scratch) or on a base."""
    cfg = get_model_config(model_type)
    if adapter_ratio:
        cfg = dataclasses.replace(cfg, encoder_adapter_ratio=adapter_ratio)
    model = build_sam(cfg, variant, seed=seed)
    if sam_checkpoint:
        load_sam_base(model, sam_checkpoint)
    return model


def split_model(model: Sam, trainable: str = "released") -> Split:
    """(train graphdef, eval graphdef, trainable, batch_stats, frozen); `trainable` is `config.trainable`."""
    optim.check_spec(model, trainable)
    wrt = optim.trainable_filter(trainable, model.variant, adapters=model.config.encoder_adapter_ratio > 0)
    model.eval()
    eval_graphdef = nnx.split(model, wrt, nnx.BatchStat, ...)[0]
    model.train()  # released training: NSFM BatchNorm uses batch statistics (docs/released-code.md#nsfm-batchnorm)
    graphdef, params, batch_stats, frozen = nnx.split(model, wrt, nnx.BatchStat, ...)
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
