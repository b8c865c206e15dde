"""Sam: image encoder + prompt encoder + mask decoder, with the original pre/post-processing.

Images enter as (B, S, S, 3) float 0..255 with the valid region given by `hw`; prompts as a `Prompts` bucket
(fixed shapes, padding masked inside the decoder). `Sam.image_features` (once per image) and `Sam.decode` (per
prompt batch) are jit-able and shared by the predictors, evaluation, training and export. Neither knows the
variant: the mask decoder says what it computes per image and what it returns (vnsjax.modeling.mask_decoder).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import resize_bilinear
from vnsjax.modeling.image_encoder import ImageEncoderViT
from vnsjax.modeling.mask_decoder import DecoderOutput, MaskDecoder
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
    """Everything prompt-independent the decoder reads, computed once per image."""

    embedding: jax.Array  # (B, h, w, 256) image embedding
    decoder: dict[str, jax.Array]  # mask_decoder.image_features: {} (SAM), HQ feature, NSFM (M, G)


class Sam(nnx.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
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

    def image_features(
        self, images: jax.Array, hw: jax.Array | None = None, *, dtype=None, frozen_encoder: bool = False
    ) -> Features:
        """Encoder + the decoder's per-image features on a batch of images. `dtype` (e.g. bf16) casts the
        encoder's compute.

        frozen_encoder=True stops gradients at the encoder outputs (training the decoder modules on a frozen
        SAM); the decoder's per-image features after it (HQ feature, NSFM) stay differentiable.
        """
        x = normalize(images, hw)
        if dtype is not None:
            x = x.astype(dtype)
        embedding, interm = self.embed_image(x)
        embedding = embedding.astype(jnp.float32)
        interm = [t.astype(jnp.float32) for t in interm]
        if frozen_encoder:
            embedding, interm = jax.lax.stop_gradient((embedding, interm))
        return Features(embedding, self.mask_decoder.image_features(embedding, interm))

    def decode(
        self,
        features: Features,
        prompts: Prompts,
        *,
        multimask_output: bool = False,
        image_pe: jax.Array | None = None,
        **options: Any,
    ) -> DecoderOutput:
        """Prompts -> the decoder's output: low-res masks (B, C, 4h, 4w), scores (B, C), named extras.

        `options` go to the decoder (its `OPTIONS`, e.g. HQ-SAM's hq_token_only). image_pe: the prompt encoder's
        `get_dense_pe()` if the caller already has it (it depends on the weights only).
        """
        p = prompts
        sparse, sparse_mask, dense = self.prompt_encoder(
            (p.coords, p.labels), p.boxes, p.masks, box_valid=p.box_valid, mask_valid=p.mask_valid
        )
        return self.mask_decoder(
            features.embedding,
            self.prompt_encoder.get_dense_pe() if image_pe is None else image_pe,
            sparse,
            dense,
            features=features.decoder,
            multimask_output=multimask_output,
            sparse_mask=sparse_mask,
            **options,
        )


def eval_view(model: Sam) -> Sam:
    """`model` in inference mode (BatchNorm on running statistics), sharing its arrays; `model` is left as is."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def normalize(images: jax.Array, hw: jax.Array | None = None) -> jax.Array:
    """(B, S, S, 3) 0..255 -> normalised; pixels outside `hw` (B, 2) become 0 (the original pads after normalising)."""
    x = (images.astype(jnp.float32) - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
    if hw is None:
        return x
    s = images.shape[1]
    rows = jnp.arange(s)[None, :, None] < hw[:, 0, None, None]
    cols = jnp.arange(images.shape[2])[None, None, :] < hw[:, 1, None, None]
    return jnp.where((rows & cols)[..., None], x, 0.0)
