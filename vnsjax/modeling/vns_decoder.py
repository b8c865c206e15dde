"""VNS-SAM's METI decoder = `VNS_SAM_Decoder` in VNS-Train/models/vns_sam.py, exactly as released.

Channels-last. SAM's decoder (frozen in training) with a multi-stage transformer, two extra output tokens
(hf_token rows 0 and 1), the NSFM neck and four new heads. Released quirks kept on purpose
(docs/released-code.md#meti-tokens, #meti-heads, #quirks):

- Token off-by-one: the transformer sees [iou, mask tokens 0..3, hf_token 0, hf_token 1, prompts] but the
  code reads outputs 1..5 only. The "mask token" is hf_mlp(t4 + t5) = SAM's 4th mask token + hf_token row 0,
  the "edge token" is edge_mlp(t5) = hf_token row 0, and hf_token row 1 only takes part in self-attention.
- Double GELU: the final VNS pixel embedding is GELU(U) + M where U = output_upscaling(keys) already ends in
  a GELU (`embedding_maskfeature[-1]` is the trailing GELU, not a conv).
- The intermediate and final edge maps share one edge pixel embedding, embedding_edgefeature(G).

The released forward works for one prompt per image only; here every prompt of a batch gets its own
product (image-level features broadcast), equal to the release at one prompt.

Interface (vnsjax.modeling.mask_decoder): `image_features` is the NSFM neck, {"nsfm_m": M, "nsfm_g": G}, computed
once per image; the decoder's prediction (`DecoderOutput.masks`) is the fused mask with SAM's IoU score (the VNS
masks have no score of their own), and every other output is an extra named in `OUTPUTS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import MLP, embed, gelu, mask_feature_convs, resize_bilinear, torch_conv, upscale_x4
from vnsjax.modeling.mask_decoder import DecoderOutput, MaskDecoder
from vnsjax.modeling.mask_decoder_hq import decoder_param_filter, select_sam_mask, token_mask
from vnsjax.modeling.nsfm import TFD

# What the released training optimises: modules created after the SAM weights are frozen, plus the two
# multi-stage transformer modules (their names contain "internal"). 2,476,618 / 2,574,922 / 2,673,226 for B/L/H.
TRAINABLE = decoder_param_filter(
    "hf_token",
    "hf_mlp",
    "edge_mlp",
    "neck",
    "embedding_maskfeature",
    "embedding_edgefeature",
    "dense_pred_head",
    "fusion_layer",
    "transformer.internal_attn_token_to_image",
    "transformer.norm_internal_attn",
)


# The extras of a VNS decoder call, NCHW-style (B, 1, H, W) logits with H, W = 4x the embedding grid:
#   sam_masks    SAM-token mask from this decoder: best of 1..3 if multimask else index 0 (None if hq_token_only)
#   vns_mask     final-stage VNS mask                      edge         final-stage edge map
#   interm_mask  intermediate (after transformer layer 0)  interm_edge  intermediate edge map
#   fused_mask   fusion_layer([vns_mask, dense map]): the prediction VNS-SAM evaluates (= DecoderOutput.masks)
#   dense_map    (B, 1, h, w) at the embedding grid, before the x4 bilinear upsampling
# The released forward returns sigmoid(edge) / sigmoid(interm_edge); here they stay logits.
EXTRAS = ("sam_masks", "vns_mask", "edge", "interm_mask", "interm_edge", "fused_mask", "dense_map")


def results_fusion(out: DecoderOutput) -> jax.Array:
    """MyTrain.py `--results_fusion`: fused mask logits + this decoder's SAM-token mask logits.

    The released evaluation calls the decoder with multimask_output=False, i.e. SAM mask index 0.
    """
    if out.extras["sam_masks"] is None:
        raise ValueError("results_fusion needs sam_masks; call the decoder with hq_token_only=False")
    return out.extras["fused_mask"] + out.extras["sam_masks"]


class VnsDecoder(MaskDecoder):
    FEATURES = ("nsfm_m", "nsfm_g")
    OPTIONS = ("results_fusion",)
    TRAINABLE = TRAINABLE

    @classmethod
    def build(cls, *, transformer_dim: int, vit_dim: int, rngs: nnx.Rngs) -> VnsDecoder:
        return cls(transformer_dim=transformer_dim, vit_dim=vit_dim, rngs=rngs)

    def __init__(self, *, vit_dim: int = 1024, rngs: nnx.Rngs, **decoder_kwargs):
        """vit_dim: width of the encoder's global-block outputs; decoder_kwargs go to MaskDecoder."""
        super().__init__(multi_stage=True, rngs=rngs, **decoder_kwargs)
        d = self.transformer_dim
        self.hf_token = embed(2, d, rngs=rngs)  # row 0: mask/edge token, row 1: never read (see module doc)
        self.hf_mlp = MLP(d, d, d // 8, 3, rngs=rngs)
        self.edge_mlp = MLP(d, d, d // 8, 3, rngs=rngs)
        self.neck = TFD((vit_dim,) * 4, rngs=rngs)
        self.embedding_maskfeature = mask_feature_convs(d // 8, final_gelu=True, rngs=rngs)
        self.embedding_edgefeature = upscale_x4(d, d // 4, d // 8, final_gelu=True, rngs=rngs)
        self.dense_pred_head = nnx.Sequential(
            torch_conv(d, d, 3, padding=1, rngs=rngs),
            gelu,
            torch_conv(d, 1, 1, rngs=rngs),
        )
        self.fusion_layer = nnx.Sequential(
            torch_conv(2, 256, 3, padding=1, rngs=rngs),
            gelu,
            torch_conv(256, 256, 3, padding=1, rngs=rngs),
            gelu,
            torch_conv(256, 1, 3, padding=1, rngs=rngs),
        )

    def image_features(
        self, image_embeddings: jax.Array, interm_embeddings: Sequence[jax.Array]
    ) -> dict[str, jax.Array]:
        """NSFM on the four global-block outputs (B, h, w, vit_dim): M (B, 4h, 4w, 32) and G (B, h, w, 256).

        Prompt-independent: a predictor computes it once per image. BatchNorm follows model.train()/eval().
        """
        mask_feature, edge_feature = self.neck(interm_embeddings)
        return {"nsfm_m": mask_feature, "nsfm_g": edge_feature}

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
        results_fusion: bool = False,
    ) -> DecoderOutput:
        """B prompts on one image (image_embeddings and features with batch 1) or one prompt per image (batch B).

        features = image_features(...) of the same images. hq_token_only=True skips SAM's hypernetworks and
        IoU head (sam_masks and iou_predictions are None), as the released forward then returns VNS outputs only
        (the training does). results_fusion=True reports fused + SAM mask logits (`results_fusion`) as `masks`.
        """
        mask_feature, edge_feature = features["nsfm_m"], features["nsfm_g"]
        hw = image_embeddings.shape[1:3]
        out = self.run_transformer(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            sparse_mask,
            extra_tokens=self.hf_token.embedding[...],
        )
        hs, interm_hs = out.queries, out.interm_queries
        b = hs.shape[0]

        upscaled = self.upscale(out.keys, hw)
        # Released slices hs[:, 1:6]: mask token = t4 + t5 (SAM's last mask token + hf row 0), edge token = t5.
        vns_embedding = self.embedding_maskfeature.layers[-1](upscaled) + mask_feature  # second GELU on U
        interm_embedding = self.embedding_maskfeature(self.upscale(out.interm_keys, hw)) + mask_feature
        # Image-level (batch 1 or B), computed once and shared by both stages as released.
        edge_embedding = self.embedding_edgefeature(edge_feature)

        vns_mask = token_mask(self.hf_mlp(hs[:, 4] + hs[:, 5]), vns_embedding)
        edge = token_mask(self.edge_mlp(hs[:, 5]), edge_embedding)
        interm_mask = token_mask(self.hf_mlp(interm_hs[:, 4] + interm_hs[:, 5]), interm_embedding)
        interm_edge = token_mask(self.edge_mlp(interm_hs[:, 5]), edge_embedding)

        dense_map = self.dense_pred_head(out.keys.reshape(b, *hw, self.transformer_dim))  # (B, h, w, 1)
        dense_up = resize_bilinear(dense_map, vns_mask.shape[2], vns_mask.shape[3])
        fused = self.fusion_layer(jnp.concatenate([jnp.moveaxis(vns_mask, 1, -1), dense_up], axis=-1))

        sam_masks = iou_predictions = None
        if not hq_token_only:
            masks = self.hyper_masks(hs[:, 1 : 1 + self.num_mask_tokens], upscaled)
            iou = self.iou_prediction_head(hs[:, 0])
            sam_masks, iou_predictions = select_sam_mask(masks, iou, multimask_output)

        extras = {
            "sam_masks": sam_masks,
            "vns_mask": vns_mask,
            "edge": edge,
            "interm_mask": interm_mask,
            "interm_edge": interm_edge,
            "fused_mask": jnp.moveaxis(fused, -1, 1),
            "dense_map": jnp.moveaxis(dense_map, -1, 1),
        }
        masks = extras["fused_mask"]
        if results_fusion:
            if sam_masks is None:
                raise ValueError("results_fusion needs sam_masks; call the decoder with hq_token_only=False")
            masks = masks + sam_masks
        return DecoderOutput(masks, iou_predictions, extras)
