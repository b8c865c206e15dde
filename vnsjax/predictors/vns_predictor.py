"""VnsPredictor: SamPredictor for VNS-SAM with a choice of output.

SamPredictor already runs VNS-SAM (the fused mask, NSFM cached per image); VnsPredictor adds `output=` to return
SAM's mask from the VNS decoder, the edge map, the final VNS mask, or the fused + SAM logits (`results_fusion`).
"""

from __future__ import annotations

import jax

from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.sam import Sam
from vnsjax.modeling.vns_decoder import VnsDecoder, prediction, results_fusion
from vnsjax.predictors.sam_predictor import SamPredictor

OUTPUTS = ("fused", "sam", "edge", "vns", "results_fusion")


class VnsPredictor(SamPredictor):
    """One mask per prompt: predict_batch returns masks (B, 1, H, W), scores (B, 1), low-res logits (B, 1, h, w).

    The score is SAM's IoU prediction for its own token (VNS-SAM has no score for its masks);
    multimask_output only changes which SAM mask `output="sam"` returns (best of 3 by IoU) and its score.
    """

    def __init__(self, sam_model: Sam, *, output: str = "fused", precision: str | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if not isinstance(sam_model.mask_decoder, VnsDecoder):
            raise ValueError(
                f"VnsPredictor runs VNS-SAM models (a VnsDecoder), got a {type(sam_model.mask_decoder).__name__} "
                f"({sam_model.variant!r}); use vnsjax.SamPredictor"
            )
        if output == "edge" and sam_model.mask_decoder.ablation.tokens != "both":
            raise ValueError(f"output='edge': the {sam_model.variant!r} decoder has no edge head")
        self.output = output
        super().__init__(sam_model, precision=precision)

    def select_output(self, out: DecoderOutput) -> jax.Array:
        if self.output == "results_fusion":
            return results_fusion(out)
        if self.output == "fused":
            return prediction(out)
        return out.extras[{"sam": "sam_masks", "edge": "edge", "vns": "vns_mask"}[self.output]]

    def _binarize(self, masks: jax.Array) -> jax.Array:
        if self.output == "edge":
            return jax.nn.sigmoid(masks)  # an edge probability map, not a binary mask
        return super()._binarize(masks)
