"""What trains and how: the trainable-parameter filter, the learning-rate schedule and the optimizer, from a config.

`config.trainable` decides what the optimizer sees (everything else is frozen and has no optimizer state):
  "released"         what the variant's own training optimises: VNS-SAM (and its ablations) METI + NSFM, HQ-SAM
                     its HQ modules, SAM everything (its pre-training)
  "decoder"          FT-Decoder: SAM's mask decoder except the IoU token and IoU head
  "token"            FT-Token: the mask tokens and their hypernetwork MLPs
  "encoder_decoder"  FT-Encoder & Decoder: every parameter of the model
  "a.b,c.d,-a.b.e"   the nnx.Param under these dotted module paths, minus those under the "-" paths
A model with encoder adapters (`config.encoder_adapter_ratio`) trains them as well, whatever the spec.
docs/training.md#recipes lists the recipes with their parameter counts.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

Filter = Any  # an nnx filter: a predicate (path, value) -> bool

NAMED: dict[str, str] = {
    "decoder": "mask_decoder,-mask_decoder.iou_token,-mask_decoder.iou_prediction_head",
    "token": "mask_decoder.mask_tokens,mask_decoder.output_hypernetworks_mlps",
    "encoder_decoder": "image_encoder,prompt_encoder,mask_decoder",
}


def released_filter(variant: str) -> Filter:
    """What the variant's released training optimises (its decoder's TRAINABLE; plain SAM: every parameter)."""
    from vnsjax.build_sam import get_decoder_class

    return get_decoder_class(variant).TRAINABLE


def is_adapter(path: tuple, value: object) -> bool:
    """An encoder adapter's parameter (vnsjax.modeling.adapter)."""
    return isinstance(value, nnx.Param) and "adapter" in (str(k) for k in path)


def parse_spec(spec: str) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """A path spec ("a.b,-a.b.c" or a NAMED recipe) -> (included, excluded) key tuples."""
    parts = [p.strip() for p in NAMED.get(spec, spec).split(",") if p.strip()]
    include = [tuple(p.split(".")) for p in parts if not p.startswith("-")]
    exclude = [tuple(p[1:].split(".")) for p in parts if p.startswith("-")]
    if not include:
        raise ValueError(
            f"config.trainable={spec!r}: expected 'released', one of {sorted(NAMED)} or comma-separated module paths"
        )
    return include, exclude


def trainable_filter(spec: str, variant: str = "vns", adapters: bool = False) -> Filter:
    """`config.trainable` -> an nnx filter over the full model's state (see the module docstring)."""
    if spec == "released":
        base = released_filter(variant)
    else:
        include, exclude = parse_spec(spec)

        def base(path: tuple, value: object) -> bool:
            keys = tuple(str(k) for k in path)
            inside = any(keys[: len(p)] == p for p in include) and not any(keys[: len(p)] == p for p in exclude)
            return isinstance(value, nnx.Param) and inside

    return nnx.Any(base, is_adapter) if adapters else base


def check_spec(model: nnx.Module, spec: str) -> None:
    """Every path of a spec must name parameters of `model`: a mistyped path would otherwise train less (or more)."""
    from vnsjax.training.config_check import ConfigError

    if spec == "released":
        return
    include, exclude = parse_spec(spec)
    for prefix in include + exclude:
        if not jax.tree.leaves(nnx.state(model, trainable_filter(".".join(prefix)))):
            raise ConfigError(
                f"config.trainable={spec!r}: {'.'.join(prefix)!r} selects no parameter of the {model.config.name} "
                f"{model.variant} model"
            )


SCHEDULES = ("step", "cosine")


def learning_rate_schedule(config: Any, steps_per_epoch: int) -> optax.Schedule:
    """`config.lr_schedule`, in optimizer steps (update number s, 0-based, = Adam's count):

    "step"    the released StepLR(step_size=lr_decay_epochs, gamma=lr_decay) stepped per epoch: update s belongs
              to epoch s // steps_per_epoch;
    "cosine"  linear warm-up over `warmup_steps` to `lr`, then cosine decay to 0 at the run's last step
              (num_train_steps, or num_epochs * steps_per_epoch): training from scratch.
    """
    if config.lr_schedule == "cosine":
        total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
        return optax.warmup_cosine_decay_schedule(
            0.0, config.lr, max(config.warmup_steps, 1), max(total_steps, config.warmup_steps + 1)
        )
    boundary = config.lr_decay_epochs * steps_per_epoch
    base, gamma = config.lr, config.lr_decay

    def schedule(count: jax.Array) -> jax.Array:
        return base * jnp.where(count >= boundary, gamma, 1.0)

    return schedule


def make_optimizer(config: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam with the schedule; AdamW (decoupled decay) when `config.weight_decay` > 0, as SAM was pre-trained."""
    schedule = learning_rate_schedule(config, steps_per_epoch)
    if config.weight_decay:
        return optax.adamw(schedule, config.b1, config.b2, config.eps, weight_decay=config.weight_decay), schedule
    return optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps), schedule
