"""Sam: image encoder + prompt encoder + mask decoder, with the original pre/post-processing.

Images enter as (B, S, S, 3) float 0..255 with the valid region given by `hw`; prompts as a `Prompts` bucket
(fixed shapes, padding masked inside the decoder). `image_features` and `decode` are jit-able and shared by the
predictors, evaluation, training and export.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import resize_bilinear
from vnsjax.modeling.image_encoder import ImageEncoderViT
from vnsjax.modeling.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


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


class Sam(nnx.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: nnx.Module,
        *,
        config=None,
        variant: str = "sam",
    ):
        self.config = config  # vnsjax.build_sam.ModelConfig; static metadata
        self.variant = variant
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def embed_image(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """Padded, normalised images -> (B, h, w, 256) embeddings and the global-block outputs."""
        return self.image_encoder(x)

    def postprocess_masks(
        self, masks: jax.Array, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> jax.Array:
        """(B, K, 256, 256) low-res logits -> (B, K, H, W) at the original image size.

        As the original: bilinear to the padded input size, crop the padding, bilinear to the original size.
        """
        s = self.img_size
        x = jnp.moveaxis(masks, 1, -1)
        x = resize_bilinear(x, s, s)[:, : input_size[0], : input_size[1]]
        x = resize_bilinear(x, original_size[0], original_size[1])
        return jnp.moveaxis(x, -1, 1)


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
