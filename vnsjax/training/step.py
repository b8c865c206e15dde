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


Decode = Callable[[Prompts], DecoderOutput]  # the model's decoder on the batch's image features
Rounds = list[tuple[DecoderOutput, Prompts]]  # one (output, prompts) per prompting round; the loss averages them


def data_prompts(decode: Decode, batch: Batch, mask_size: tuple[int, int], key: jax.Array, rounds: int) -> Rounds:
    """One round with the data pipeline's prompt per image (box, points or noisy mask, `training_prompts`)."""
    del key, rounds
    prompts = training_prompts(batch, mask_size)
    return [(decode(prompts), prompts)]


def _sample_pixel(key: jax.Array, region: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One pixel drawn uniformly from each (H, W) boolean region -> (xy float32 (B, 2), (B,) region non-empty).

    An empty region draws uniformly over the whole image (the caller decides what that pixel means).
    """
    b, h, w = region.shape
    flat = region.reshape(b, h * w)
    found = jnp.any(flat, axis=1)
    logits = jnp.where(flat | ~found[:, None], 0.0, -jnp.inf)
    index = jax.random.categorical(key, logits, axis=1)
    return jnp.stack([index % w, index // w], axis=1).astype(jnp.float32), found


def _jitter_box(key: jax.Array, box: jax.Array, image_size: int) -> jax.Array:
    """SAM's box noise: each coordinate moves by N(0, (0.1 x the box side)^2), at most 20 px of a 1024 frame."""
    side = jnp.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]] * 2, axis=1)
    limit = 20.0 * image_size / 1024
    noise = jnp.clip(0.1 * side * jax.random.normal(key, box.shape), -limit, limit)
    return jnp.clip(box + noise, 0.0, image_size - 1.0)


def interactive_prompts(
    decode: Decode, batch: Batch, mask_size: tuple[int, int], key: jax.Array, rounds: int
) -> Rounds:
    """SAM's simulated interactive segmentation (SAM paper, appendix A "Training algorithm"), `rounds` + 1 rounds.

    Round 0 prompts each image with a jittered box or one foreground point (even odds). Each later round adds one
    click drawn uniformly from the previous prediction's error region (foreground where it missed the object,
    background where it spilled over) and feeds the previous low-res logits back as the mask prompt, under
    stop_gradient so every round trains on its own. A lone point is ambiguous: its round trains SAM's three
    multimask outputs, and the best of them (IoU with the target) is what the next round refines. Points
    accumulate in fixed slots (padding until drawn), so the shapes, hence the compiled program, never change.
    """
    target = batch["mask"] > 0.5  # (B, S, S), the model's input frame
    b, size = target.shape[0], target.shape[1]
    keys = jax.random.split(key, rounds + 3)
    use_box = jax.random.bernoulli(keys[0], 0.5, (b,))
    boxes = _jitter_box(keys[1], batch["box"], size)
    first, _ = _sample_pixel(keys[2], target)
    # Slots: the first point, one click per refinement round, and SAM's not-a-point token where there is no box.
    coords = jnp.zeros((b, rounds + 2, 2), jnp.float32).at[:, 0].set(first)
    labels = jnp.full((b, rounds + 2), PAD_LABEL, jnp.int32)
    labels = labels.at[:, 0].set(jnp.where(use_box, PAD_LABEL, 1)).at[:, -1].set(jnp.where(use_box, PAD_LABEL, -1))
    logits = jnp.zeros((b, *mask_size), jnp.float32)
    out: Rounds = []
    for r in range(rounds + 1):
        if r:
            predicted = jax.image.resize(logits, (b, size, size), method="linear") > 0
            missed, spilled = target & ~predicted, predicted & ~target
            click, wrong = _sample_pixel(keys[r + 2], missed | spilled)
            label = jnp.where(missed[jnp.arange(b), click[:, 1].astype(int), click[:, 0].astype(int)], 1, 0)
            # A perfect prediction gets no click (padding): the round only refines with the mask prompt.
            coords = coords.at[:, r].set(click)
            labels = labels.at[:, r].set(jnp.where(wrong, label, PAD_LABEL))
        prompts = Prompts(coords, labels, boxes, use_box, logits, jnp.full((b,), r > 0))
        output = decode(prompts)
        out.append((output, prompts))
        masks = jax.lax.stop_gradient(output.masks)  # (B, 4, h, w): token 0, then the three multimask outputs
        candidates = jnp.where(single_point(prompts)[:, None], jnp.arange(4) > 0, jnp.arange(4) == 0)
        small = jax.image.resize(target.astype(jnp.float32), (b, *mask_size), method="linear") > 0.5
        iou = losses.mask_iou(jnp.moveaxis(masks, 1, -1), small[..., None].astype(jnp.float32), (1, 2))
        best = jnp.argmax(jnp.where(candidates, iou, -1.0), axis=1)
        logits = masks[jnp.arange(b), best]
    return out


# Prompt sources: (decode, batch, (4h, 4w) mask-prompt size, key, refinement rounds) -> the rounds' outputs.
PROMPTS: dict[str, Callable[[Decode, Batch, tuple[int, int], jax.Array, int], Rounds]] = {
    "data": data_prompts,  # the pipeline's prompts, one round (the released training)
    "interactive": interactive_prompts,  # SAM's simulated clicks and mask refinement (SAM variant only)
}


def single_point(prompts: Prompts) -> jax.Array:
    """(B,) True where the prompt is one point alone: ambiguous, so SAM trains its three multimask outputs."""
    n_points = jnp.sum((prompts.labels == 0) | (prompts.labels == 1), axis=1)
    return (n_points == 1) & ~prompts.box_valid & ~prompts.mask_valid


def forward(
    model: Sam, batch: Batch, dtype: Any, recipe: Recipe = DEFAULT_RECIPE, key: jax.Array | None = None
) -> Rounds:
    """The model call of training (the only one): the encoder once, then the decoder once per prompting round.

    The encoder runs under stop_gradient unless the recipe trains part of it. SAM (recipe.variant "sam") returns all
    four mask tokens with their scores, as SAM trains; the others their prediction with hq_token_only (VNS-SAM: SAM's
    own mask/IoU heads have no loss in the released training; HQ-SAM: its HQ mask is what it trains).
    """
    e = model.config.image_embedding_size
    features = model.image_features(batch["image"], dtype=dtype, frozen_encoder=not recipe.train_encoder)

    def decode(p: Prompts) -> DecoderOutput:
        if recipe.variant != "sam":
            return model.decode(features, p, multimask_output=False, hq_token_only=True)
        sparse, sparse_mask, dense = model.prompt_encoder(
            (p.coords, p.labels), p.boxes, p.masks, box_valid=p.box_valid, mask_valid=p.mask_valid
        )
        pe = model.prompt_encoder.get_dense_pe()
        masks, iou = model.mask_decoder.predict_masks(features.embedding, pe, sparse, dense, sparse_mask)
        return DecoderOutput(masks, iou, {})

    key = jax.random.key(0) if key is None else key
    return PROMPTS[recipe.prompts](decode, batch, (4 * e, 4 * e), key, recipe.refine_rounds)


def round_loss(
    out: DecoderOutput, prompts: Prompts, batch: Batch, recipe: Recipe, key: jax.Array | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The recipe's loss on one prompting round."""
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
            return losses.sam_loss(masks, out.iou_predictions, target, alpha=recipe.focal_alpha, candidates=candidates)
        first = jnp.argmax(candidates, axis=1)[:, None, None, None]
        masks = jnp.take_along_axis(masks, first, axis=1)
    if recipe.loss == "hq":
        return losses.hq_loss(masks, target, key)
    loss = losses.structure_loss(masks[:, 0], target)
    return loss, {"loss_structure": loss}


def loss_and_terms(
    model: Sam, batch: Batch, dtype: Any, recipe: Recipe = DEFAULT_RECIPE, key: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The recipe's loss on one batch, averaged over the prompting rounds. `key` drives the simulated prompts and
    HQ-SAM's point sampling."""
    prompt_key = None if key is None else jax.random.fold_in(key, 1)  # `key` itself stays HQ-SAM's, as before
    rounds = forward(model, batch, dtype, recipe, prompt_key)
    per_round = [round_loss(out, prompts, batch, recipe, key) for out, prompts in rounds]
    return jax.tree.map(lambda *x: sum(x) / len(x), *per_round)


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
