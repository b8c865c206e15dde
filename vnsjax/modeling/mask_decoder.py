"""SAM mask decoder (segment_anything/modeling/mask_decoder.py), channels-last, and the decoder interface.

Masks are returned as (B, K, 256, 256) logits like the original; image features are NHWC.

Every mask decoder (SAM, HQ-SAM, VNS-SAM and their ablations) has the same two calls, so the model, the
predictors, evaluation, export and training never ask which variant they hold:

    features = decoder.image_features(image_embeddings, interm_embeddings)   # per image, cached by callers
    out = decoder(image_embeddings, image_pe, sparse, dense, features=features, multimask_output=..., **options)

`out` is a `DecoderOutput`: `masks` is the variant's prediction, `extras` its other named outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import MLP, embed, upscale_x4
from vnsjax.modeling.precision import HIGHEST, Numerics
from vnsjax.modeling.transformer import TransformerOutput, TwoWayTransformer


class DecoderOutput(NamedTuple):
    """What every mask decoder returns. Extras are also readable as attributes (`out.edge`)."""

    masks: jax.Array  # (B, C, 4h, 4w) logits: the prediction the variant reports (VNS-SAM: the fused mask)
    iou_predictions: jax.Array | None  # (B, C) predicted IoU of `masks` (VNS-SAM: SAM's head; None if skipped)
    extras: dict[str, jax.Array | None]  # the variant's other outputs by name ({} for SAM)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields; private names stay errors so that pytree and copy
        # protocols probing for dunders see ordinary behaviour.
        if not name.startswith("_") and name in self.extras:
            return self.extras[name]
        raise AttributeError(f"{type(self).__name__} has no field or extra {name!r}")


class MaskDecoder(nnx.Module):
    # The interface a decoder variant declares (see the module docstring). FEATURES: the keys of
    # `image_features`; OPTIONS: keyword options of `__call__` that inference callers may set per model;
    # TRAINABLE: what the variant's released training optimises (plain SAM: every parameter of the model).
    FEATURES: ClassVar[tuple[str, ...]] = ()
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    TRAINABLE: ClassVar[nnx.filterlib.Filter] = nnx.Param

    @classmethod
    def build(cls, *, transformer_dim: int, vit_dim: int, rngs: nnx.Rngs) -> MaskDecoder:
        """The decoder for a model config; vit_dim is the width of the encoder's global-block outputs."""
        del vit_dim  # SAM's decoder reads the final embedding only
        return cls(transformer_dim=transformer_dim, rngs=rngs)

    @classmethod
    def options_for(cls, **requested: Any) -> dict[str, Any]:
        """The requested options this decoder has; the others belong to other variants (one CLI flag, many models)."""
        return {k: v for k, v in requested.items() if k in cls.OPTIONS}

    def __init__(
        self,
        *,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        multi_stage: bool = False,
        rngs: nnx.Rngs,
    ):
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer(
            depth=2, embedding_dim=transformer_dim, num_heads=8, mlp_dim=2048, multi_stage=multi_stage, rngs=rngs
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = embed(1, transformer_dim, rngs=rngs)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = embed(self.num_mask_tokens, transformer_dim, rngs=rngs)
        self.output_upscaling = upscale_x4(
            transformer_dim, transformer_dim // 4, transformer_dim // 8, final_gelu=True, rngs=rngs
        )
        self.output_hypernetworks_mlps = nnx.List(
            [
                MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3, rngs=rngs)
                for _ in range(self.num_mask_tokens)
            ]
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, rngs=rngs
        )
        self.numerics: Numerics = HIGHEST

    def run_transformer(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        sparse_mask: jax.Array | None = None,
        extra_tokens: jax.Array | None = None,
    ) -> TransformerOutput:
        """Runs the two-way transformer on [iou, mask tokens, extra tokens, prompt tokens].

        image_embeddings (1 or B, h, w, C) is shared by all B prompts (the original repeat_interleave).
        """
        b = sparse_prompt_embeddings.shape[0]
        tokens = [self.iou_token.embedding[...], self.mask_tokens.embedding[...]]
        if extra_tokens is not None:
            tokens.append(extra_tokens)
        output_tokens = jnp.concatenate(tokens, axis=0).astype(sparse_prompt_embeddings.dtype)
        n_out = output_tokens.shape[0]
        tokens = jnp.concatenate(
            [jnp.broadcast_to(output_tokens[None], (b, n_out, output_tokens.shape[-1])), sparse_prompt_embeddings],
            axis=1,
        )
        key_mask = None
        if sparse_mask is not None:
            key_mask = jnp.concatenate([jnp.ones((b, n_out), bool), sparse_mask], axis=1)
        src = image_embeddings + dense_prompt_embeddings
        if self.numerics.dtype is not None:  # activations in the compute dtype from here on
            src, image_pe, tokens = (t.astype(self.numerics.dtype) for t in (src, image_pe, tokens))
        return self.transformer(src, image_pe, tokens, key_mask)

    def upscale(self, keys: jax.Array, hw: tuple[int, int]) -> jax.Array:
        """(B, h*w, C) transformer keys -> (B, 4h, 4w, C/8) pixel embedding."""
        b = keys.shape[0]
        return self.output_upscaling(keys.reshape(b, hw[0], hw[1], self.transformer_dim))

    def hyper_masks(self, mask_tokens_out: jax.Array, upscaled: jax.Array) -> jax.Array:
        """Dot products of the hypernetwork outputs of each mask token with the pixel embedding."""
        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )
        return self.numerics.einsum("bkc,bhwc->bkhw", hyper_in, upscaled, out_dtype=jnp.float32)

    def predict_masks(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        sparse_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        out = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, sparse_mask
        )
        hs = out.queries
        upscaled = self.upscale(out.keys, image_embeddings.shape[1:3])
        masks = self.hyper_masks(hs[:, 1 : 1 + self.num_mask_tokens], upscaled)
        iou_pred = self.iou_prediction_head(hs[:, 0]).astype(jnp.float32)
        return masks, iou_pred

    def image_features(
        self, image_embeddings: jax.Array, interm_embeddings: Sequence[jax.Array]
    ) -> dict[str, jax.Array]:
        """Prompt-independent features the decoder reads, computed once per image (SAM: none)."""
        return {}

    def __call__(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        *,
        features: Mapping[str, jax.Array],
        multimask_output: bool,
        sparse_mask: jax.Array | None = None,
    ) -> DecoderOutput:
        """masks (B, 3 or 1, 4h, 4w) logits and iou predictions (B, 3 or 1), as the original forward."""
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, sparse_mask
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return DecoderOutput(masks[:, sl], iou_pred[:, sl], {})
