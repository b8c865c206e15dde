"""Inference pieces shared by the predictors, evaluation, training and export.

Images enter as (B, S, S, 3) float 0..255 with the valid region given by `hw`; prompts as a `Prompts`
bucket (fixed shapes, padding masked inside the decoder). Everything here is jit-able.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vnsjax.modeling.prompt_encoder import PAD_LABEL
from vnsjax.modeling.sam import PIXEL_MEAN, PIXEL_STD, Sam


class Prompts(NamedTuple):
    coords: jax.Array  # (B, N, 2) xy in the model's input frame
    labels: jax.Array  # (B, N) int: 1 fg, 0 bg, -1 SAM's not-a-point token, PAD_LABEL bucket padding
    boxes: jax.Array  # (B, 4) xyxy
    box_valid: jax.Array  # (B,) bool
    masks: jax.Array  # (B, 4h, 4w) mask prompt (logits at inference; 0/255 maps in the released training)
    mask_valid: jax.Array  # (B,) bool


class Features(NamedTuple):
    embedding: jax.Array  # (B, h, w, 256)
    interm: list[jax.Array]  # four (B, h, w, vit_dim) global-block outputs
    neck: tuple[jax.Array, jax.Array] | None = None  # VNS-SAM's prompt-independent NSFM (M, G)


def bucket(n: int) -> int:
    """Rounds up to a power of two so that varying prompt counts reuse compiled programs."""
    return 1 << max(0, int(n - 1).bit_length())


def normalize(model: Sam, images: jax.Array, hw: jax.Array | None = None) -> jax.Array:
    """(B, S, S, 3) 0..255 -> normalised; pixels outside `hw` (B, 2) become 0 (the original pads after normalising)."""
    x = (images.astype(jnp.float32) - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
    if hw is None:
        return x
    s = images.shape[1]
    rows = jnp.arange(s)[None, :, None] < hw[:, 0, None, None]
    cols = jnp.arange(images.shape[2])[None, None, :] < hw[:, 1, None, None]
    return jnp.where((rows & cols)[..., None], x, 0.0)


def image_features(
    model: Sam, images: jax.Array, hw: jax.Array | None = None, *, dtype=None, frozen_encoder: bool = False
) -> Features:
    """Encoder (+ NSFM for VNS-SAM) on a batch of images. `dtype` (e.g. bf16) casts the encoder's compute.

    frozen_encoder=True stops gradients at the encoder outputs (training the VNS modules on a frozen SAM);
    the NSFM neck after it stays differentiable.
    """
    x = normalize(model, images, hw)
    if dtype is not None:
        x = x.astype(dtype)
    embedding, interm = model.embed_image(x)
    embedding = embedding.astype(jnp.float32)
    interm = [t.astype(jnp.float32) for t in interm]
    if frozen_encoder:
        embedding, interm = jax.lax.stop_gradient((embedding, interm))
    neck = model.mask_decoder.neck_features(interm) if model.variant == "vns" else None
    return Features(embedding, interm, neck)


def embed_prompts(model: Sam, p: Prompts) -> tuple[jax.Array, jax.Array, jax.Array]:
    return model.prompt_encoder((p.coords, p.labels), p.boxes, p.masks, box_valid=p.box_valid, mask_valid=p.mask_valid)


def decode(model: Sam, features: Features, prompts: Prompts, *, multimask_output: bool = False, **options: Any):
    """Any variant -> (low-res masks (B, C, 4h, 4w), scores (B, C), extras).

    SAM: SAM's masks. HQ-SAM: as its decoder returns (options: hq_token_only). VNS-SAM: the fused mask
    with SAM's IoU score (the VNS masks have no score of their own), extras = the full VnsOutput.
    """
    sparse, sparse_mask, dense = embed_prompts(model, prompts)
    image_pe = model.prompt_encoder.get_dense_pe()
    dec = model.mask_decoder
    if model.variant == "sam":
        masks, iou = dec(features.embedding, image_pe, sparse, dense, multimask_output, sparse_mask)
        return masks, iou, None
    if model.variant == "hq":
        masks, iou = dec(
            features.embedding,
            image_pe,
            sparse,
            dense,
            multimask_output,
            options.get("hq_token_only", False),
            features.interm,
            sparse_mask=sparse_mask,
        )
        return masks, iou, None
    out = dec(
        features.embedding, image_pe, sparse, dense, multimask_output, features=features.neck, sparse_mask=sparse_mask
    )
    return out.fused_mask, out.iou_predictions, out


def pack_prompts(
    *,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
    mask_size: tuple[int, int] = (256, 256),
) -> tuple[Prompts, int]:
    """B prompts (already in the model's input frame) -> a bucketed `Prompts` of NumPy arrays and B.

    point_coords (B, N, 2) + point_labels (B, N); boxes (B, 4); mask_input (B, 1, 4h, 4w). Rows without a
    box get SAM's not-a-point token after their points, as the original prompt encoder does.
    """
    counts = [len(x) for x in (point_coords, boxes, mask_input) if x is not None]
    if len(set(counts)) > 1:
        raise ValueError(f"point_coords, boxes and mask_input must have the same batch size, got {counts}")
    b = counts[0] if counts else 1
    n = 0 if point_coords is None else np.shape(point_coords)[1]
    bb, nb = bucket(b), bucket(n + 1)
    coords = np.zeros((bb, nb, 2), np.float32)
    labels = np.full((bb, nb), PAD_LABEL, np.int32)
    box_arr = np.zeros((bb, 4), np.float32)
    box_valid = np.zeros((bb,), bool)
    masks = np.zeros((bb, *mask_size), np.float32)
    mask_valid = np.zeros((bb,), bool)
    if point_coords is not None:
        pc, pl = np.asarray(point_coords), np.asarray(point_labels) if point_labels is not None else None
        if pl is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied.")
        if pc.ndim != 3 or pc.shape[-1] != 2 or pl.shape != pc.shape[:2]:
            raise ValueError(f"point_coords must be (B, N, 2) with point_labels (B, N); got {pc.shape}, {pl.shape}")
        coords[:b, :n] = pc
        labels[:b, :n] = pl
    if boxes is not None:
        bx = np.asarray(boxes)
        if bx.shape != (b, 4):
            raise ValueError(f"boxes must be (B, 4) xyxy, got {bx.shape}")
        box_arr[:b] = bx
        box_valid[:b] = True
    elif point_coords is not None:
        labels[:b, n] = -1
    if mask_input is not None:
        mi = np.asarray(mask_input, np.float32)
        if mi.shape != (b, 1, *mask_size):
            raise ValueError(f"mask_input must be {(b, 1, *mask_size)} low-res logits, got {mi.shape}")
        masks[:b] = mi[:, 0]
        mask_valid[:b] = True
    return Prompts(coords, labels, box_arr, box_valid, masks, mask_valid), b


def training_prompts(batch: dict[str, jax.Array], mask_size: tuple[int, int] = (256, 256)) -> Prompts:
    """One prompt per image from a data_pipeline training batch, chosen by `prompt_type` (0 box, 1 points, 2 mask).

    Point prompts get SAM's not-a-point token (no box goes with them), as in the released training.
    """
    t = batch["prompt_type"]
    b = t.shape[0]
    use_points = (t == 1)[:, None]
    labels = jnp.where(use_points, batch["point_labels"], PAD_LABEL)
    labels = jnp.concatenate([labels, jnp.where(use_points, -1, PAD_LABEL)], axis=1)
    coords = jnp.concatenate([batch["points"], jnp.zeros((b, 1, 2), batch["points"].dtype)], axis=1)
    masks = batch["mask_input"].astype(jnp.float32)
    if masks.shape[1:] != mask_size:
        masks = jax.image.resize(masks, (b, *mask_size), method="linear", antialias=False)
    return Prompts(coords, labels.astype(jnp.int32), batch["box"], t == 0, masks, t == 2)
