"""Sam: image encoder + prompt encoder + mask decoder, with the original pre/post-processing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import resize_bilinear
from vnsjax.modeling.image_encoder import ImageEncoderViT
from vnsjax.modeling.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


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

    def preprocess(self, x: jax.Array) -> jax.Array:
        """(B, h, w, 3) RGB 0..255 already resized to the long side -> normalised, zero-padded (B, S, S, 3)."""
        x = (x - jnp.asarray(PIXEL_MEAN, x.dtype)) / jnp.asarray(PIXEL_STD, x.dtype)
        s = self.img_size
        return jnp.pad(x, ((0, 0), (0, s - x.shape[1]), (0, s - x.shape[2]), (0, 0)))

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
