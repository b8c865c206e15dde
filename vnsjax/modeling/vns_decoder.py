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

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import MLP, embed, gelu, mask_feature_convs, resize_bilinear, torch_conv, upscale_x4
from vnsjax.modeling.mask_decoder import DecoderOutput, MaskDecoder
from vnsjax.modeling.mask_decoder_hq import decoder_param_filter, select_sam_mask, token_mask
from vnsjax.modeling.nsfm import NSFM_MODES, TFD

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
    # Modules only ablation variants have (VnsAblation); absent from the released decoder.
    "gate_fusion",
    "supple_feat_head_edge",
    "fusion_layer2",
)


# The extras of a VNS decoder call, NCHW-style (B, 1, H, W) logits with H, W = 4x the embedding grid:
#   sam_masks    SAM-token mask from this decoder: best of 1..3 if multimask else index 0 (None if hq_token_only)
#   vns_mask     final-stage VNS mask                      edge         final-stage edge map
#   interm_mask  intermediate (after transformer layer 0)  interm_edge  intermediate edge map
#   fused_mask   fusion_layer([vns_mask, dense map]): the prediction VNS-SAM evaluates (= DecoderOutput.masks)
#   dense_map    (B, 1, h, w) at the embedding grid, before the x4 bilinear upsampling
# The released forward returns sigmoid(edge) / sigmoid(interm_edge); here they stay logits.
EXTRAS = ("sam_masks", "vns_mask", "edge", "interm_mask", "interm_edge", "fused_mask", "dense_map")


def prediction(out: DecoderOutput) -> jax.Array:
    """The mask VNS-SAM evaluates: the fused mask, or the final VNS mask for an ablation without the fusion."""
    fused = out.extras["fused_mask"]
    return out.extras["vns_mask"] if fused is None else fused


def results_fusion(out: DecoderOutput) -> jax.Array:
    """MyTrain.py `--results_fusion`: fused mask logits + this decoder's SAM-token mask logits.

    The released evaluation calls the decoder with multimask_output=False, i.e. SAM mask index 0.
    """
    if out.extras["sam_masks"] is None:
        raise ValueError("results_fusion needs sam_masks; call the decoder with hq_token_only=False")
    return prediction(out) + out.extras["sam_masks"]


@dataclasses.dataclass(frozen=True)
class VnsAblation:
    """Switches of the VNS-SAM ablation decoders of the paper's Tab. VI-X; the defaults are the released decoder.

    Each named variant (`ABLATIONS`) is one of the official ablation decoders, with its modules, dataflow and
    trainable parameter count (docs/training.md#vns-ablations):

    multi_stage     the transformer's internal stage after layer 0 and the intermediate mask / edge outputs
    nsfm            "wavelet" (released NSFM) | "no_wd" | "hf_only" | "lf_only" (Tab. X) | "none" (no neck)
    mask_embedding  how the final VNS pixel embedding uses SAM's upscaled embedding U: "gelu" = GELU(U)
                    (released, a second GELU), "convs" = the full embedding_maskfeature(U), "plain" = U
                    (+ the NSFM mask feature M whenever there is an NSFM)
    edge_embedding  "nsfm" = embedding_edgefeature(G) (released), "convs" = a conv block like embedding_maskfeature
                    on U, "plain" = U, "none" = no edge output (tokens="mask")
    tokens          "both" = VNS-mask and VNS-edge token (released), "mask" = one new token, no edge head
    token_fusion    "add" = hf_mlp(t_mask + t_edge) (released), "none" = a 2-layer hf_mlp on t_mask only,
                    "gate" = sigmoid gate between hf_mlp(t_mask) and edge_mlp(t_edge); "none" for tokens="mask"
    mask_fusion     MPL: dense_pred_head + fusion_layer make the fused mask, the prediction (else: final VNS mask)
    edge_fusion     MPL on the edge too (MPL&MPL): supple_feat_head_edge + fusion_layer2 refine the final edge

    t_mask / t_edge are the transformer outputs 4 and 5 that the released code reads (module docstring).
    """

    multi_stage: bool = True
    nsfm: str = "wavelet"
    mask_embedding: str = "gelu"
    edge_embedding: str = "nsfm"
    tokens: str = "both"
    token_fusion: str = "add"
    mask_fusion: bool = True
    edge_fusion: bool = False

    def __post_init__(self):
        choices = {
            "nsfm": ("none", *NSFM_MODES),
            "mask_embedding": ("gelu", "convs", "plain"),
            "edge_embedding": ("nsfm", "convs", "plain", "none"),
            "tokens": ("both", "mask"),
            "token_fusion": ("add", "none", "gate"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"VnsAblation.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if (self.tokens == "mask") != (self.edge_embedding == "none"):
            raise ValueError("VnsAblation: edge_embedding='none' goes with tokens='mask' (no edge token, no edge)")
        if self.tokens == "mask" and self.token_fusion != "none":
            raise ValueError("VnsAblation: tokens='mask' has nothing to fuse; use token_fusion='none'")
        if (self.nsfm == "none") == (self.edge_embedding == "nsfm"):
            raise ValueError("VnsAblation: edge_embedding='nsfm' needs an NSFM, and an NSFM is read by it")
        if self.edge_fusion and (self.tokens != "both" or not self.mask_fusion):
            raise ValueError("VnsAblation: edge_fusion needs the edge token and mask_fusion")


# The official ablation decoders (docs/training.md#vns-ablations), by the name used in configs and the registry.
ABLATIONS: dict[str, VnsAblation] = {
    # Tab. VI
    "vnst": VnsAblation(
        multi_stage=False, nsfm="none", mask_embedding="convs", edge_embedding="convs", mask_fusion=False
    ),
    "no_nsfm": VnsAblation(nsfm="none", mask_embedding="plain", edge_embedding="plain"),
    "vnst_nsfm": VnsAblation(multi_stage=False, mask_embedding="plain", mask_fusion=False),
    # Tab. VII
    "mt": VnsAblation(nsfm="none", mask_embedding="plain", edge_embedding="none", tokens="mask", token_fusion="none"),
    # Tab. VIII
    "epl_epl": VnsAblation(mask_fusion=False),
    "mpl_mpl": VnsAblation(edge_fusion=True),
    # Tab. IX
    "no_tf": VnsAblation(token_fusion="none"),
    "gate": VnsAblation(token_fusion="gate"),
    # Tab. X
    "no_wd": VnsAblation(nsfm="no_wd", mask_embedding="convs"),
    "hf_only": VnsAblation(nsfm="hf_only"),
    "lf_only": VnsAblation(nsfm="lf_only"),
}


def _dense_head(d: int, *, rngs: nnx.Rngs) -> nnx.Sequential:
    """Conv 3x3 d->d, GELU, Conv 1x1 d->1: a one-channel map from SAM's final image embedding."""
    return nnx.Sequential(torch_conv(d, d, 3, padding=1, rngs=rngs), gelu, torch_conv(d, 1, 1, rngs=rngs))


def _fusion_stack(*, rngs: nnx.Rngs) -> nnx.Sequential:
    """Conv 3x3 2->256, GELU, Conv 3x3 256->256, GELU, Conv 3x3 256->1 on [map, upsampled dense map]."""
    return nnx.Sequential(
        torch_conv(2, 256, 3, padding=1, rngs=rngs),
        gelu,
        torch_conv(256, 256, 3, padding=1, rngs=rngs),
        gelu,
        torch_conv(256, 1, 3, padding=1, rngs=rngs),
    )


def _fuse(
    head: nnx.Sequential, fusion: nnx.Sequential, logits: jax.Array, keys: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(B, 1, H, W) logits and (B, h, w, C) keys -> fused (B, H, W, 1) and the dense map (B, h, w, 1)."""
    dense_map = head(keys)
    dense_up = resize_bilinear(dense_map, logits.shape[2], logits.shape[3])
    return fusion(jnp.concatenate([jnp.moveaxis(logits, 1, -1), dense_up], axis=-1)), dense_map


class VnsDecoder(MaskDecoder):
    FEATURES = ("nsfm_m", "nsfm_g")
    OPTIONS = ("results_fusion",)
    TRAINABLE = TRAINABLE
    ABLATION = VnsAblation()  # the released decoder; `ablation_variant` makes the registry's ablation classes

    @classmethod
    def build(cls, *, transformer_dim: int, vit_dim: int, rngs: nnx.Rngs) -> VnsDecoder:
        return cls(transformer_dim=transformer_dim, vit_dim=vit_dim, ablation=cls.ABLATION, rngs=rngs)

    def __init__(self, *, vit_dim: int = 1024, ablation: VnsAblation = VnsAblation(), rngs: nnx.Rngs, **decoder_kwargs):
        """vit_dim: width of the encoder's global-block outputs; decoder_kwargs go to MaskDecoder.

        ablation: which official decoder to build (the default is the released one).
        """
        a = self.ablation = ablation
        super().__init__(multi_stage=a.multi_stage, rngs=rngs, **decoder_kwargs)
        d = self.transformer_dim
        # row 0: mask/edge token, row 1: never read (see module doc); one row when there is no edge token
        self.hf_token = embed(2 if a.tokens == "both" else 1, d, rngs=rngs)
        self.hf_mlp = MLP(d, d, d // 8, 2 if a.token_fusion == "none" and a.tokens == "both" else 3, rngs=rngs)
        if a.tokens == "both":
            self.edge_mlp = MLP(d, d, d // 8, 3, rngs=rngs)
        if a.token_fusion == "gate":
            # DynamicGateFusion(32): Linear 64->32, ReLU, Linear 32->32, sigmoid on [mask, edge] hyper vectors.
            self.gate_fusion = MLP(2 * (d // 8), d // 8, d // 8, 2, sigmoid_output=True, rngs=rngs)
        if a.nsfm != "none":
            self.neck = TFD((vit_dim,) * 4, mode=a.nsfm, rngs=rngs)
        if a.mask_embedding != "plain" or (a.multi_stage and a.nsfm != "none"):
            self.embedding_maskfeature = mask_feature_convs(d // 8, final_gelu=True, rngs=rngs)
        if a.edge_embedding == "nsfm":
            self.embedding_edgefeature = upscale_x4(d, d // 4, d // 8, final_gelu=True, rngs=rngs)
        elif a.edge_embedding == "convs":
            self.embedding_edgefeature = mask_feature_convs(d // 8, final_gelu=True, rngs=rngs)
        if a.mask_fusion:
            self.dense_pred_head = _dense_head(d, rngs=rngs)
            self.fusion_layer = _fusion_stack(rngs=rngs)
        if a.edge_fusion:
            self.supple_feat_head_edge = _dense_head(d, rngs=rngs)
            self.fusion_layer2 = _fusion_stack(rngs=rngs)

    def image_features(
        self, image_embeddings: jax.Array, interm_embeddings: Sequence[jax.Array]
    ) -> dict[str, jax.Array]:
        """NSFM on the four global-block outputs (B, h, w, vit_dim): M (B, 4h, 4w, 32) and G (B, h, w, 256).

        Prompt-independent: a predictor computes it once per image. BatchNorm follows model.train()/eval().
        Variants without an NSFM have no image features.
        """
        if self.ablation.nsfm == "none":
            return {}
        mask_feature, edge_feature = self.neck(interm_embeddings)
        return {"nsfm_m": mask_feature, "nsfm_g": edge_feature}

    def _hyper(self, hs: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Token outputs (B, N, C) -> (VNS-mask hyper vector, edge hyper vector or None)."""
        a = self.ablation
        if a.tokens == "mask":
            # The one new token's own output (index 5); with no edge token there is nothing to add.
            return self.hf_mlp(hs[:, 5]), None
        # Released slices hs[:, 1:6]: mask token = t4 + t5 (SAM's last mask token + hf row 0), edge token = t5.
        edge = self.edge_mlp(hs[:, 5])
        if a.token_fusion == "add":
            return self.hf_mlp(hs[:, 4] + hs[:, 5]), edge
        mask = self.hf_mlp(hs[:, 4])
        if a.token_fusion == "gate":
            g = self.gate_fusion(jnp.concatenate([mask, edge], axis=-1))
            mask = g * mask + (1.0 - g) * edge
        return mask, edge

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
        (the training does). results_fusion=True reports the prediction + SAM mask logits (`results_fusion`) as
        `masks`. Extras a variant does not compute (`VnsAblation`) are None.
        """
        a = self.ablation
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
        mask_feature = None if a.nsfm == "none" else features["nsfm_m"]
        if a.mask_embedding == "gelu":
            vns_embedding = self.embedding_maskfeature.layers[-1](upscaled)  # second GELU on U
        elif a.mask_embedding == "convs":
            vns_embedding = self.embedding_maskfeature(upscaled)
        else:
            vns_embedding = upscaled
        if mask_feature is not None:
            vns_embedding = vns_embedding + mask_feature
        # Image-level (batch 1 or B), computed once and shared by both stages as released.
        if a.edge_embedding == "nsfm":
            edge_embedding = self.embedding_edgefeature(features["nsfm_g"])
        elif a.edge_embedding == "convs":
            edge_embedding = self.embedding_edgefeature(upscaled)
        else:
            edge_embedding = upscaled

        mask_hyper, edge_hyper = self._hyper(hs)
        vns_mask = token_mask(mask_hyper, vns_embedding, self.numerics)
        edge = None if edge_hyper is None else token_mask(edge_hyper, edge_embedding, self.numerics)

        interm_mask = interm_edge = None
        if a.multi_stage:
            if mask_feature is None:
                # The official no-NSFM decoders read the final-layer embedding at the intermediate level too.
                interm_embedding = upscaled
            else:
                interm_embedding = self.embedding_maskfeature(self.upscale(out.interm_keys, hw)) + mask_feature
            interm_mask_hyper, interm_edge_hyper = self._hyper(interm_hs)
            interm_mask = token_mask(interm_mask_hyper, interm_embedding, self.numerics)
            if interm_edge_hyper is not None:
                interm_edge = token_mask(interm_edge_hyper, edge_embedding, self.numerics)

        keys = out.keys.reshape(b, *hw, self.transformer_dim)
        if a.edge_fusion:
            # MPL&MPL: the refined final edge replaces the final edge everywhere.
            edge = jnp.moveaxis(_fuse(self.supple_feat_head_edge, self.fusion_layer2, edge, keys)[0], -1, 1)
            edge = edge.astype(jnp.float32)
        fused_mask = dense_map = None
        if a.mask_fusion:
            fused, dense = _fuse(self.dense_pred_head, self.fusion_layer, vns_mask, keys)
            fused_mask, dense_map = (jnp.moveaxis(t, -1, 1).astype(jnp.float32) for t in (fused, dense))

        sam_masks = iou_predictions = None
        if not hq_token_only:
            masks = self.hyper_masks(hs[:, 1 : 1 + self.num_mask_tokens], upscaled)
            iou = self.iou_prediction_head(hs[:, 0]).astype(jnp.float32)
            sam_masks, iou_predictions = select_sam_mask(masks, iou, multimask_output)

        extras = {
            "sam_masks": sam_masks,
            "vns_mask": vns_mask,
            "edge": edge,
            "interm_mask": interm_mask,
            "interm_edge": interm_edge,
            "fused_mask": fused_mask,
            "dense_map": dense_map,
        }
        masks = vns_mask if fused_mask is None else fused_mask
        if results_fusion:
            if sam_masks is None:
                raise ValueError("results_fusion needs sam_masks; call the decoder with hq_token_only=False")
            masks = masks + sam_masks
        return DecoderOutput(masks, iou_predictions, extras)


def ablation_variant(name: str) -> type[VnsDecoder]:
    """The VnsDecoder class of an official ablation decoder (`ABLATIONS[name]`), for the DECODERS registry."""
    ablation = ABLATIONS[name]
    features = () if ablation.nsfm == "none" else VnsDecoder.FEATURES
    return type(
        f"VnsDecoder_{name}", (VnsDecoder,), {"ABLATION": ablation, "FEATURES": features, "__module__": __name__}
    )
