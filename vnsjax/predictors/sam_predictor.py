"""SamPredictor with the official API (segment_anything/predictor.py), NumPy in and out, for every variant.

Prompts are padded to bucket shapes (number of prompts and points rounded up to powers of two; a box
slot and a mask slot always present, switched per row by flags). Padding is masked out inside the
decoder, so any mix of points, boxes and masks reuses a handful of compiled programs.

`set_image` caches the image embedding and the decoder's per-image features (HQ-SAM's HQ feature, VNS-SAM's
NSFM), so a prompt only runs the prompt encoder and the decoder. The masks returned are the decoder's
prediction (VNS-SAM: the fused mask, with SAM's IoU score); `select_output` is the hook for another output.
The predictor runs an inference view of the model (BatchNorm on running statistics); the model passed in is
not changed.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.sam import Features, Prompts, Sam, eval_view
from vnsjax.predictors.checks import check_image, check_prompts
from vnsjax.predictors.prompts import pack_prompts
from vnsjax.utils.transforms import ResizeLongestSide


class SamPredictor:
    def __init__(self, sam_model: Sam, *, hq_token_only: bool = False):
        """hq_token_only: HQ-SAM returns its HQ mask alone (as in sam-hq); other variants have no such option."""
        self.model = eval_view(sam_model)
        self.decoder_options = tuple(
            sorted(type(sam_model.mask_decoder).options_for(hq_token_only=hq_token_only).items())
        )
        self.transform = ResizeLongestSide(sam_model.img_size)
        self._graphdef, self._state = nnx.split(self.model)
        self._encode = jax.jit(partial(_encode, self._graphdef))
        self._decode = jax.jit(partial(_decode, self._graphdef), static_argnames=("multimask_output", "options"))
        self._postprocess = jax.jit(
            partial(_postprocess, self._graphdef), static_argnames=("input_size", "original_size")
        )
        self.reset_image()

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> SamPredictor:
        from vnsjax.model_dir import load_model

        return cls(load_model(directory), **kwargs)

    # ---- image -------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Computes and caches the image features. image: (H, W, 3) uint8, RGB or BGR.

        Other dtypes and shapes are refused with the conversion to use (`checks.check_image`), never cast. If this
        raises, no image is set (the previous one is dropped too), so `predict` cannot run on a stale image.
        """
        self.reset_image()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = check_image(image)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        input_image = self.transform.apply_image(np.ascontiguousarray(image, dtype=np.uint8))
        self.set_resized_image(input_image, image.shape[:2])

    def set_resized_image(self, input_image: np.ndarray, original_image_size: tuple[int, int]) -> None:
        """Like the original set_torch_image: `input_image` is already resized to the long side."""
        self.reset_image()
        s = self.model.img_size
        h, w = input_image.shape[:2]
        padded = np.zeros((1, s, s, 3), np.float32)
        padded[0, :h, :w] = input_image
        self.original_size = tuple(int(x) for x in original_image_size)
        self.input_size = (h, w)
        self.features = self._encode(self._state, jnp.asarray(padded), jnp.asarray([h, w]))
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """(1, 256, 64, 64) like the original (channels-first)."""
        self._require_image()
        return np.asarray(self.features.embedding).transpose(0, 3, 1, 2)

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # ---- prompts -----------------------------------------------------------------------------

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt. Returns masks (C, H, W), iou_predictions (C,), low_res_masks (C, 256, 256)."""
        if point_coords is not None:
            point_coords = np.asarray(point_coords)[None]
        if point_labels is not None:
            point_labels = np.asarray(point_labels)[None]
        masks, iou, low_res = self.predict_batch(
            point_coords,
            point_labels,
            None if box is None else np.asarray(box).reshape(1, 4),
            None if mask_input is None else np.asarray(mask_input)[None],
            multimask_output=multimask_output,
            return_logits=return_logits,
        )
        return masks[0], iou[0], low_res[0]

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B prompts on the current image in one call (the original predict_torch, in image coordinates).

        point_coords (B, N, 2) with point_labels (B, N); boxes (B, 4) xyxy; mask_input (B, 1, 256, 256)
        low-res logits. Returns masks (B, C, H, W), iou_predictions (B, C), low_res_masks (B, C, 256, 256).
        """
        self._require_image()
        check_prompts(point_coords, point_labels, boxes, mask_input)  # here, so messages quote the caller's values
        if point_coords is not None:
            point_coords = self.transform.apply_coords(np.asarray(point_coords), self.original_size)
        if boxes is not None:
            boxes = self.transform.apply_boxes(np.asarray(boxes, np.float64), self.original_size)
        low_res, iou = self.predict_low_res(point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.postprocess_masks(low_res)
        if not return_logits:
            masks = self._binarize(masks)
        return np.asarray(masks), np.asarray(iou), np.asarray(low_res)

    def predict_low_res(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """B prompts in the model's input frame (the original predict_torch, already transformed) -> low-res
        logits (B, C, 4h, 4w) from `select_output` and scores (B, C), as device arrays."""
        self._require_image()
        check_prompts(point_coords, point_labels, boxes, mask_input)
        prompts, b = pack_prompts(
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_input=mask_input,
            mask_size=self.model.prompt_encoder.mask_input_size,
        )
        out = self._decode(
            self._state, self.features, prompts, multimask_output=multimask_output, options=self.decoder_options
        )
        return self.select_output(out)[:b], out.iou_predictions[:b]

    def select_output(self, out: DecoderOutput) -> jax.Array:
        """Which low-res logits the predictor returns: the decoder's prediction (subclasses pick an extra)."""
        return out.masks

    def postprocess_masks(self, low_res: jax.Array) -> jax.Array:
        """Low-res logits (B, C, 4h, 4w) of the current image -> logits (B, C, H, W) at its original size."""
        self._require_image()
        return self._postprocess(self._state, low_res, input_size=self.input_size, original_size=self.original_size)

    def _binarize(self, masks: jax.Array) -> jax.Array:
        return masks > self.model.mask_threshold


def _encode(graphdef, state, padded: jax.Array, hw: jax.Array) -> Features:
    return nnx.merge(graphdef, state).image_features(padded, hw[None])


def _decode(graphdef, state, features: Features, prompts: Prompts, *, multimask_output: bool, options: tuple):
    model = nnx.merge(graphdef, state)
    return model.decode(features, prompts, multimask_output=multimask_output, **dict(options))


def _postprocess(graphdef, state, low_res, *, input_size, original_size):
    return nnx.merge(graphdef, state).postprocess_masks(low_res, input_size, original_size)
