"""What trains and how: the trainable-parameter filter, the learning-rate schedule and the optimizer, from a config.

`config.trainable` decides what the optimizer sees (everything else is frozen and has no optimizer state):
  "released"   the released VNS-SAM set, METI + NSFM (`vnsjax.modeling.vns_decoder.TRAINABLE`)
  "a.b,c.d"    the nnx.Param under these dotted module paths of the model, e.g. "mask_decoder.neck"
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vnsjax.modeling.vns_decoder import TRAINABLE as RELEASED

Filter = Any  # an nnx filter: a predicate (path, value) -> bool


def trainable_filter(spec: str) -> Filter:
    """`config.trainable` -> an nnx filter over the full model's state (see the module docstring)."""
    if spec == "released":
        return RELEASED
    prefixes = [tuple(p.split(".")) for p in spec.split(",") if p.strip()]
    if not prefixes:
        raise ValueError(f"config.trainable={spec!r}: expected 'released' or comma-separated module paths")

    def predicate(path: tuple, value: object) -> bool:
        keys = tuple(str(k) for k in path)
        return isinstance(value, nnx.Param) and any(keys[: len(p)] == p for p in prefixes)

    return predicate


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
