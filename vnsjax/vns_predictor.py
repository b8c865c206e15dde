"""VnsPredictor: the SamPredictor API for VNS-SAM checkpoints.

Per image it caches the encoder output and the prompt-independent NSFM features (M, G), so each
prompt only runs the METI decoder. `predict` returns the fused VNS mask, the prediction VNS-SAM is
evaluated on; `output=` picks SAM's mask (from the VNS decoder), the edge map, or the final VNS mask.
"""

from __future__ import annotations

import jax
import numpy as np

from vnsjax.modeling.sam import Sam
from vnsjax.modeling.vns_decoder import VnsOutput, results_fusion
from vnsjax.predictor import SamPredictor

OUTPUTS = ("fused", "sam", "edge", "vns", "results_fusion")


class VnsPredictor(SamPredictor):
    VARIANTS = ("vns",)

    def __init__(self, sam_model: Sam, *, output: str = "fused"):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        sam_model.eval()  # NSFM BatchNorm uses running statistics at inference
        super().__init__(sam_model)

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = False,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B prompts -> masks (B, 1, H, W), scores (B, 1), low-res logits (B, 1, 256, 256) of `self.output`.

        The score is SAM's IoU prediction for its own token (VNS-SAM has no score for its masks).
        multimask_output only changes which SAM mask `output="sam"` returns (best of 3 by IoU).
        """
        _, iou, out = self._run_decoder(
            point_coords, point_labels, boxes, mask_input, multimask_output=multimask_output
        )
        low_res = self.select(out)
        masks, iou, low_res = self._finish(low_res, iou, return_logits)
        if self.output == "edge" and not return_logits:
            masks = self._postprocess(
                self._state, low_res, input_size=self.input_size, original_size=self.original_size
            )
            masks = np.asarray(jax.nn.sigmoid(masks))  # an edge probability map, not a binary mask
        return masks, iou, low_res

    def select(self, out: VnsOutput) -> jax.Array:
        return {
            "fused": out.fused_mask,
            "sam": out.sam_masks,
            "edge": out.edge,
            "vns": out.vns_mask,
            "results_fusion": results_fusion(out),
        }[self.output]
