"""VnsPredictor: the SamPredictor API for VNS-SAM checkpoints.

Per image it caches the encoder output and the prompt-independent NSFM features (M, G), so each
prompt only runs the METI decoder. `predict` returns the fused VNS mask, the prediction VNS-SAM is
evaluated on; `output=` picks SAM's mask (from the VNS decoder), the edge map, or the final VNS mask.
"""

from __future__ import annotations

import jax

from vnsjax.modeling.sam import Sam
from vnsjax.modeling.vns_decoder import VnsOutput, results_fusion
from vnsjax.predictors.sam_predictor import SamPredictor

OUTPUTS = ("fused", "sam", "edge", "vns", "results_fusion")


class VnsPredictor(SamPredictor):
    """One mask per prompt: predict_batch returns masks (B, 1, H, W), scores (B, 1), low-res logits (B, 1, h, w).

    The score is SAM's IoU prediction for its own token (VNS-SAM has no score for its masks);
    multimask_output only changes which SAM mask `output="sam"` returns (best of 3 by IoU) and its score.
    """

    VARIANTS = ("vns",)

    def __init__(self, sam_model: Sam, *, output: str = "fused"):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        sam_model.eval()  # NSFM BatchNorm uses running statistics at inference
        super().__init__(sam_model)

    def _select(self, low_res: jax.Array, out: VnsOutput) -> jax.Array:
        return self.select(out)

    def _binarize(self, masks: jax.Array) -> jax.Array:
        if self.output == "edge":
            return jax.nn.sigmoid(masks)  # an edge probability map, not a binary mask
        return super()._binarize(masks)

    def select(self, out: VnsOutput) -> jax.Array:
        return {
            "fused": out.fused_mask,
            "sam": out.sam_masks,
            "edge": out.edge,
            "vns": out.vns_mask,
            "results_fusion": results_fusion(out),
        }[self.output]
