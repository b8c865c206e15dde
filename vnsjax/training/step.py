"""The training step: prompts from a data_pipeline batch, the model call, the loss, and one donated update.

`train_step(state, frozen, batch) -> (state, metrics)`; `jit_train_step(setup)` compiles it for a run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from data_pipeline.prompts import PROMPT_BOX, PROMPT_MASK, PROMPT_POINTS
from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.prompt_encoder import PAD_LABEL
from vnsjax.modeling.sam import Prompts, Sam
from vnsjax.training import sharding
from vnsjax.training.losses import vns_total_loss
from vnsjax.training.state import TrainSetup, TrainState

Batch = dict[str, jax.Array]  # data_pipeline.TRAIN_BATCH_SPEC, batch axis sharded over "data"
TrainStep = Callable[[TrainState, nnx.State, Batch], tuple[TrainState, dict[str, jax.Array]]]


def training_prompts(batch: Batch, mask_size: tuple[int, int] = (256, 256)) -> Prompts:
    """One prompt per image from a data_pipeline training batch, chosen by `prompt_type` (box, points or mask).

    Point prompts get SAM's not-a-point token (no box goes with them), as in the released training.
    """
    t = batch["prompt_type"]
    b = t.shape[0]
    use_points = (t == PROMPT_POINTS)[:, None]
    labels = jnp.where(use_points, batch["point_labels"], PAD_LABEL)
    labels = jnp.concatenate([labels, jnp.where(use_points, -1, PAD_LABEL)], axis=1)
    coords = jnp.concatenate([batch["points"], jnp.zeros((b, 1, 2), batch["points"].dtype)], axis=1)
    masks = batch["mask_input"].astype(jnp.float32)
    if masks.shape[1:] != mask_size:
        masks = jax.image.resize(masks, (b, *mask_size), method="linear", antialias=False)
    return Prompts(coords, labels.astype(jnp.int32), batch["box"], t == PROMPT_BOX, masks, t == PROMPT_MASK)


def forward(model: Sam, batch: Batch, dtype: Any) -> DecoderOutput:
    """The model call of training (the only one): frozen encoder, the decoder's per-image features and the decoder."""
    e = model.config.image_embedding_size
    features = model.image_features(batch["image"], dtype=dtype, frozen_encoder=True)
    # hq_token_only: SAM's own mask/IoU heads have no loss in the released training, so they are skipped.
    return model.decode(features, training_prompts(batch, (4 * e, 4 * e)), multimask_output=False, hq_token_only=True)


def loss_and_terms(model: Sam, batch: Batch, dtype: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    out = forward(model, batch, dtype)
    # Ablation decoders lack some outputs (None): their loss terms are left out. `masks` is the prediction.
    maps = [out.edge, out.interm_mask, out.interm_edge, out.masks]
    return vns_total_loss(*(None if m is None else m[:, 0] for m in maps), batch["mask"], batch["edge"])


def train_step(
    state: TrainState, frozen: nnx.State, batch: Batch, *, setup: TrainSetup
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam update of the trainable parameters (and BatchNorm statistics) -> (new state, scalar metrics).

    A step whose loss or gradient is not finite returns `state` unchanged; its metrics show the culprit.
    """

    def loss_fn(trainable: nnx.State) -> tuple[jax.Array, tuple[dict, nnx.State]]:
        # copy=True: fresh Variables created at the grad trace level, where BatchNorm may update them.
        model = nnx.merge(setup.graphdef, trainable, state.batch_stats, frozen, copy=True)
        loss, terms = loss_and_terms(model, batch, setup.encoder_dtype)
        # BatchNorm in train mode updated its running statistics during the forward pass.
        return loss, (terms, nnx.state(model, nnx.BatchStat))

    (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.trainable)
    new = TrainState(optax.apply_updates(state.trainable, updates), batch_stats, opt_state, state.step + 1, state.rng)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    return new, {"loss": loss, **terms, "lr": setup.schedule(state.step), "grad_norm": grad_norm}


def jit_train_step(setup: TrainSetup) -> TrainStep:
    """`train_step` for this run, jitted with the state donated and its shardings pinned (buffers reused)."""
    return jax.jit(
        functools.partial(train_step, setup=setup),
        donate_argnums=(0,),
        out_shardings=(setup.shardings, sharding.replicated(setup.mesh)),
    )
