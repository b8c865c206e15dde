"""HQ-SAM mask decoder (segment_anything_hq/modeling/mask_decoder_hq.py), channels-last.

One extra output token (hf_token) attends with SAM's tokens; its hypernetwork (hf_mlp) is dotted with an
HQ pixel embedding = embedding_maskfeature(SAM's upscaled embedding) + the HQ feature, where the HQ feature
fuses the final image embedding with the first global-attention block output (interm_embeddings[0] only).
The HQ feature is prompt-independent: `image_features` returns it as {"hq_features": (1 or B, 4h, 4w, C/8)},
so a predictor computes it once per image.

Also home of two helpers the VNS decoder reuses: SAM-mask selection as HQ/VNS release it, and a path-based
filter for the parameters a variant trains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import MLP, embed, mask_feature_convs, upscale_x4
from vnsjax.modeling.mask_decoder import DecoderOutput, MaskDecoder
from vnsjax.modeling.precision import HIGHEST, Numerics


def decoder_param_filter(*names: str) -> Callable[[tuple, object], bool]:
    """nnx filter selecting the nnx.Param under the given decoder-relative module paths.

    Works on the decoder alone and on a full Sam (paths under `mask_decoder`); dotted names such as
    "transformer.norm_internal_attn" match a path prefix. Path-based because the image encoder also has a
    `neck`, and because BatchNorm running stats are not trainable.
    """
    targets = tuple(tuple(n.split(".")) for n in names)

    def predicate(path: tuple, value: object) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        keys = tuple(str(p) for p in path)
        if "mask_decoder" in keys:
            keys = keys[keys.index("mask_decoder") + 1 :]
        return any(keys[: len(t)] == t for t in targets)

    return predicate


def token_mask(token: jax.Array, embedding: jax.Array, numerics: Numerics = HIGHEST) -> jax.Array:
    """Hypernetwork vector (B, C) . pixel embedding (1 or B, H, W, C) -> (B, 1, H, W) float32 logits.

    A batch-1 embedding is an image-level feature shared by all B prompts; it is not materialised per prompt.
    """
    if embedding.shape[0] == 1 and token.shape[0] != 1:
        return numerics.einsum("bc,hwc->bhw", token, embedding[0], out_dtype=jnp.float32)[:, None]
    return numerics.einsum("bc,bhwc->bhw", token, embedding, out_dtype=jnp.float32)[:, None]


def select_sam_mask(masks: jax.Array, iou_pred: jax.Array, multimask_output: bool) -> tuple[jax.Array, jax.Array]:
    """The single SAM mask HQ-SAM / VNS-SAM return: (B, 4, H, W), (B, 4) -> (B, 1, H, W), (B, 1).

    multimask_output picks the best of masks 1..3 by predicted IoU (first on ties, as torch.max); otherwise
    mask 0. Either way one mask comes back (HQ-SAM issue #62).
    """
    if not multimask_output:
        return masks[:, :1], iou_pred[:, :1]
    idx = jnp.argmax(iou_pred[:, 1:], axis=1)
    best = jnp.take_along_axis(masks[:, 1:], idx[:, None, None, None], axis=1)
    return best, jnp.take_along_axis(iou_pred[:, 1:], idx[:, None], axis=1)


class MaskDecoderHQ(MaskDecoder):
    FEATURES = ("hq_features",)
    OPTIONS = ("hq_token_only",)
    # Parameters HQ-SAM adds to (and trains on top of) the frozen SAM decoder.
    TRAINABLE = decoder_param_filter(
        "hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature"
    )

    @classmethod
    def build(cls, *, transformer_dim: int, vit_dim: int, rngs: nnx.Rngs) -> MaskDecoderHQ:
        return cls(transformer_dim=transformer_dim, vit_dim=vit_dim, rngs=rngs)

    def __init__(self, *, vit_dim: int = 1024, rngs: nnx.Rngs, **decoder_kwargs):
        """vit_dim: width of the encoder's global-block outputs; decoder_kwargs go to MaskDecoder."""
        super().__init__(rngs=rngs, **decoder_kwargs)
        d = self.transformer_dim
        self.hf_token = embed(1, d, rngs=rngs)
        self.hf_mlp = MLP(d, d, d // 8, 3, rngs=rngs)
        self.compress_vit_feat = upscale_x4(vit_dim, d, d // 8, final_gelu=False, rngs=rngs)
        self.embedding_encoder = upscale_x4(d, d // 4, d // 8, final_gelu=False, rngs=rngs)
        self.embedding_maskfeature = mask_feature_convs(d // 8, final_gelu=False, rngs=rngs)

    def image_features(
        self, image_embeddings: jax.Array, interm_embeddings: Sequence[jax.Array]
    ) -> dict[str, jax.Array]:
        """{"hq_features": (1 or B, 4h, 4w, C/8)}: the final embedding fused with the first global block's output."""
        hq = self.embedding_encoder(image_embeddings) + self.compress_vit_feat(interm_embeddings[0])
        return {"hq_features": hq}

    def predict_masks_hq(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        hq_features: jax.Array,
        sparse_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns SAM masks (B, 4, H, W), the HQ mask (B, 1, H, W) (both logits) and IoU predictions (B, 4)."""
        out = self.run_transformer(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            sparse_mask,
            extra_tokens=self.hf_token.embedding[...],
        )
        hs = out.queries
        n = self.num_mask_tokens
        upscaled = self.upscale(out.keys, image_embeddings.shape[1:3])
        masks_sam = self.hyper_masks(hs[:, 1 : 1 + n], upscaled)
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        mask_hq = token_mask(self.hf_mlp(hs[:, 1 + n]), upscaled_hq, self.numerics)
        return masks_sam, mask_hq, self.iou_prediction_head(hs[:, 0]).astype(jnp.float32)

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
        hq_token_only: bool = False,
    ) -> DecoderOutput:
        """As segment_anything_hq's MaskDecoderHQ.forward: masks (B, 1, H, W) logits and IoU (B, 1).

        masks = HQ mask if hq_token_only else SAM mask + HQ mask (logit sum); both parts are in `extras`
        ("sam_masks", "hq_masks"). `features` = image_features(...) of the same image(s).
        """
        masks_sam, mask_hq, iou_pred = self.predict_masks_hq(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            features["hq_features"],
            sparse_mask,
        )
        mask_sam, iou_pred = select_sam_mask(masks_sam, iou_pred, multimask_output)
        masks = mask_hq if hq_token_only else mask_sam + mask_hq
        return DecoderOutput(masks, iou_pred, {"sam_masks": mask_sam, "hq_masks": mask_hq})
