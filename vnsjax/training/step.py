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
from vnsjax.training import losses, sharding
from vnsjax.training.losses import vns_total_loss
from vnsjax.training.state import DEFAULT_RECIPE, Recipe, TrainSetup, TrainState

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


# Prompt sources: batch, (4h, 4w) mask-prompt size -> one prompt per image. A simulation of interactive prompting
# (clicks drawn from the current prediction's errors, refinement rounds) is another entry here.
PROMPTS: dict[str, Callable[[Batch, tuple[int, int]], Prompts]] = {"data": training_prompts}


def single_point(prompts: Prompts) -> jax.Array:
    """(B,) True where the prompt is one point alone: ambiguous, so SAM trains its three multimask outputs."""
    n_points = jnp.sum((prompts.labels == 0) | (prompts.labels == 1), axis=1)
    return (n_points == 1) & ~prompts.box_valid & ~prompts.mask_valid


def forward(model: Sam, batch: Batch, dtype: Any, recipe: Recipe = DEFAULT_RECIPE) -> tuple[DecoderOutput, Prompts]:
    """The model call of training (the only one): encoder, the decoder's per-image features and the decoder.

    The encoder runs under stop_gradient unless the recipe trains part of it. SAM (recipe.variant "sam") returns all
    four mask tokens with their scores, as SAM trains; the others their prediction with hq_token_only (VNS-SAM: SAM's
    own mask/IoU heads have no loss in the released training; HQ-SAM: its HQ mask is what it trains).
    """
    e = model.config.image_embedding_size
    features = model.image_features(batch["image"], dtype=dtype, frozen_encoder=not recipe.train_encoder)
    prompts = PROMPTS[recipe.prompts](batch, (4 * e, 4 * e))
    if recipe.variant != "sam":
        return model.decode(features, prompts, multimask_output=False, hq_token_only=True), prompts
    p = prompts
    sparse, sparse_mask, dense = model.prompt_encoder(
        (p.coords, p.labels), p.boxes, p.masks, box_valid=p.box_valid, mask_valid=p.mask_valid
    )
    pe = model.prompt_encoder.get_dense_pe()
    masks, iou = model.mask_decoder.predict_masks(features.embedding, pe, sparse, dense, sparse_mask)
    return DecoderOutput(masks, iou, {}), prompts


def loss_and_terms(
    model: Sam, batch: Batch, dtype: Any, recipe: Recipe = DEFAULT_RECIPE, key: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The recipe's loss on one batch. `key` drives HQ-SAM's point sampling (the only stochastic loss)."""
    out, prompts = forward(model, batch, dtype, recipe)
    target = batch["mask"]
    if recipe.loss == "vns":
        # Ablation decoders lack some outputs (None): their loss terms are left out. `masks` is the prediction.
        maps = [out.edge, out.interm_mask, out.interm_edge, out.masks]
        return vns_total_loss(*(None if m is None else m[:, 0] for m in maps), target, batch["edge"])
    masks = out.masks
    if recipe.variant == "sam":
        # Token 0 answers unambiguous prompts, tokens 1-3 a single point (SAM's training).
        candidates = jnp.where(single_point(prompts)[:, None], jnp.arange(4) > 0, jnp.arange(4) == 0)
        if recipe.loss == "sam":
            return losses.sam_loss(masks, out.iou_predictions, target, candidates=candidates)
        first = jnp.argmax(candidates, axis=1)[:, None, None, None]
        masks = jnp.take_along_axis(masks, first, axis=1)
    if recipe.loss == "hq":
        return losses.hq_loss(masks, target, key)
    loss = losses.structure_loss(masks[:, 0], target)
    return loss, {"loss_structure": loss}


def train_step(
    state: TrainState, frozen: nnx.State, batch: Batch, *, setup: TrainSetup
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam update of the trainable parameters (and BatchNorm statistics) -> (new state, scalar metrics).

    A step whose loss or gradient is not finite returns `state` unchanged; its metrics show the culprit.
    """

    # A fresh key per step from the run's key (resumes exactly: both are in the state).
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(trainable: nnx.State) -> tuple[jax.Array, tuple[dict, nnx.State]]:
        # copy=True: fresh Variables created at the grad trace level, where BatchNorm may update them.
        model = nnx.merge(setup.graphdef, trainable, state.batch_stats, frozen, copy=True)
        loss, terms = loss_and_terms(model, batch, setup.encoder_dtype, setup.recipe, key)
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
