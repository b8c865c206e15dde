"""SamPredictor with the official API (segment_anything/predictor.py), NumPy in and out.

Prompts are padded to bucket shapes (number of prompts and points rounded up to powers of two; a box
slot and a mask slot always present, switched per row by flags). Padding is masked out inside the
decoder, so any mix of points, boxes and masks reuses a handful of compiled programs.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vnsjax.modeling.prompt_encoder import PAD_LABEL
from vnsjax.modeling.sam import PIXEL_MEAN, PIXEL_STD, Sam
from vnsjax.transforms import ResizeLongestSide


def _bucket(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class SamPredictor:
    def __init__(self, sam_model: Sam):
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.img_size)
        self._graphdef, self._state = nnx.split(sam_model)
        self._encode = jax.jit(partial(_encode, self._graphdef))
        self._decode = jax.jit(partial(_decode, self._graphdef), static_argnames=("multimask_output", "options"))
        self._postprocess = jax.jit(
            partial(_postprocess, self._graphdef), static_argnames=("input_size", "original_size")
        )
        self.reset_image()

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SamPredictor:
        from vnsjax.checkpoint import load_model

        return cls(load_model(directory))

    # ---- image -------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Computes and caches the image features. image: HWC uint8, RGB or BGR."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HWC image with 3 channels, got shape {image.shape}")
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
        return np.asarray(self.features[0]).transpose(0, 3, 1, 2)

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
            if point_labels is None:
                raise ValueError("point_labels must be supplied if point_coords is supplied.")
            point_coords, point_labels = np.asarray(point_coords)[None], np.asarray(point_labels)[None]
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
        low_res, iou, extra = self._run_decoder(
            point_coords, point_labels, boxes, mask_input, multimask_output=multimask_output
        )
        del extra
        return self._finish(low_res, iou, return_logits)

    def _finish(self, low_res: jax.Array, iou: jax.Array, return_logits: bool, b: int | None = None):
        masks = self._postprocess(self._state, low_res, input_size=self.input_size, original_size=self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return np.asarray(masks), np.asarray(iou), np.asarray(low_res)

    def decoder_options(self) -> tuple:
        """Static options passed to the decoder (subclasses add theirs)."""
        return ()

    def _run_decoder(self, point_coords, point_labels, boxes, mask_input, *, multimask_output: bool):
        self._require_image()
        prompts, b = self._pack_prompts(point_coords, point_labels, boxes, mask_input)
        low_res, iou, extra = self._decode(
            self._state, self.features, *prompts, multimask_output=multimask_output, options=self.decoder_options()
        )
        return low_res[:b], iou[:b], jax.tree.map(lambda x: x[:b], extra)

    def _pack_prompts(self, point_coords, point_labels, boxes, mask_input):
        """Pads prompts to bucket shapes, with the original's pad point where SAM adds one."""
        counts = [len(x) for x in (point_coords, boxes, mask_input) if x is not None]
        if not counts:
            b = 1
        elif len(set(counts)) > 1:
            raise ValueError(f"point_coords, boxes and mask_input must have the same batch size, got {counts}")
        else:
            b = counts[0]
        n = 0 if point_coords is None else np.asarray(point_coords).shape[1]
        bb, nb = _bucket(b), _bucket(n + 1)
        coords = np.zeros((bb, nb, 2), np.float32)
        labels = np.full((bb, nb), PAD_LABEL, np.int32)
        box_arr = np.zeros((bb, 4), np.float32)
        box_valid = np.zeros((bb,), bool)
        masks = np.zeros((bb, *self.model.prompt_encoder.mask_input_size), np.float32)
        mask_valid = np.zeros((bb,), bool)
        if point_coords is not None:
            pc = np.asarray(point_coords)
            pl = np.asarray(point_labels)
            if pc.ndim != 3 or pc.shape[-1] != 2 or pl.shape != pc.shape[:2]:
                raise ValueError(f"point_coords must be (B, N, 2) with labels (B, N); got {pc.shape}, {pl.shape}")
            coords[:b, :n] = self.transform.apply_coords(pc, self.original_size)
            labels[:b, :n] = pl
        if boxes is not None:
            bx = np.asarray(boxes, np.float64)
            if bx.shape != (b, 4):
                raise ValueError(f"boxes must be (B, 4) xyxy, got {bx.shape}")
            box_arr[:b] = self.transform.apply_boxes(bx, self.original_size)
            box_valid[:b] = True
        elif point_coords is not None:
            labels[:b, n] = -1  # SAM appends a not-a-point token when there is no box
        if mask_input is not None:
            mi = np.asarray(mask_input, np.float32)
            expected = (b, 1, *self.model.prompt_encoder.mask_input_size)
            if mi.shape != expected:
                raise ValueError(f"mask_input must be {expected} low-res logits, got {mi.shape}")
            masks[:b] = mi[:, 0]
            mask_valid[:b] = True
        return (coords, labels, box_arr, box_valid, masks, mask_valid), b


def _encode(graphdef, state, padded: jax.Array, hw: jax.Array):
    model = nnx.merge(graphdef, state)
    s = model.img_size
    x = (padded - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)
    inside = (jnp.arange(s)[:, None] < hw[0]) & (jnp.arange(s)[None, :] < hw[1])
    x = jnp.where(inside[None, :, :, None], x, 0.0)  # the original pads after normalising
    return model.embed_image(x)


def _decode(
    graphdef, state, features, coords, labels, boxes, box_valid, masks, mask_valid, *, multimask_output, options
):
    model = nnx.merge(graphdef, state)
    pe = model.prompt_encoder
    sparse, sparse_mask, dense = pe((coords, labels), boxes, masks, box_valid=box_valid, mask_valid=mask_valid)
    embedding, interm = features
    return decode_prompts(model, embedding, interm, sparse, sparse_mask, dense, multimask_output, options)


def decode_prompts(model: Sam, embedding, interm, sparse, sparse_mask, dense, multimask_output: bool, options: tuple):
    """Runs the model's decoder (SAM or HQ-SAM) -> (low-res masks, iou predictions, extras)."""
    image_pe = model.prompt_encoder.get_dense_pe()
    if model.variant == "hq":
        (hq_token_only,) = options or (False,)
        low_res, iou = model.mask_decoder(
            embedding, image_pe, sparse, dense, multimask_output, hq_token_only, interm, sparse_mask=sparse_mask
        )
    elif model.variant == "sam":
        low_res, iou = model.mask_decoder(embedding, image_pe, sparse, dense, multimask_output, sparse_mask)
    else:
        raise ValueError(f"SamPredictor runs SAM and HQ-SAM models; use VnsPredictor for {model.variant!r}")
    return low_res, iou, ()


def _postprocess(graphdef, state, low_res, *, input_size, original_size):
    return nnx.merge(graphdef, state).postprocess_masks(low_res, input_size, original_size)
