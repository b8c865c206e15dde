"""SamPredictor with the official API (segment_anything/predictor.py), NumPy in and out, for every variant.

Prompts are padded to bucket shapes (number of prompts and points rounded up to powers of two; a box
slot and a mask slot always present, switched per row by flags). Padding is masked out inside the
decoder, so any mix of points, boxes and masks reuses a handful of compiled programs.

`set_image` caches the image embedding and the decoder's per-image features (HQ-SAM's HQ feature, VNS-SAM's
NSFM), so a prompt only runs the prompt encoder and the decoder. `set_images` does the same for several images in
one encoder call (the count padded to a power of two, so 3 and 4 images share a program); `predict(...,
image_index=i)` then prompts image i, and `predict_low_res_images` decodes prompts for every image in one call.
The masks returned are the decoder's prediction (VNS-SAM: the fused mask, with SAM's IoU score); `select_output`
is the hook for another output. The predictor runs an inference view of the model (BatchNorm on running
statistics) at the `precision` asked for; the model passed in is not changed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.precision import set_precision
from vnsjax.modeling.sam import Features, Prompts, Sam, eval_view
from vnsjax.predictors.checks import check_image, check_prompts
from vnsjax.predictors.prompts import bucket, pack_prompts
from vnsjax.utils.transforms import ResizeLongestSide


class SamPredictor:
    def __init__(
        self,
        sam_model: Sam,
        *,
        hq_token_only: bool = False,
        results_fusion: bool = False,
        precision: str | None = None,
    ):
        """hq_token_only: HQ-SAM returns its HQ mask alone (as in sam-hq); results_fusion: VNS-SAM returns its fused
        + SAM mask logits (the released evaluation's option); other variants ignore them. precision: "highest" |
        "default" | "bf16" (docs/precision.md), applied to the predictor's own view of the model; None keeps the
        model's setting."""
        model = eval_view(sam_model)
        if precision is not None:
            set_precision(model, precision)  # on the view: the caller's model keeps its own setting
        self.model = model
        options = type(sam_model.mask_decoder).options_for(hq_token_only=hq_token_only, results_fusion=results_fusion)
        self.decoder_options = tuple(sorted(options.items()))
        self.transform = ResizeLongestSide(sam_model.img_size)
        graphdef, self._state = nnx.split(self.model)
        # Shared by every predictor of the same model structure and settings (the trainer's periodic evaluation
        # builds a new one each time), and looked up once here rather than hashed on every call.
        programs = _programs(graphdef)
        self._encode, self._decode, self._decode_images, self._postprocess = programs[:4]
        # The decoder's dense positional encoding depends on the weights only: computed once here rather than in
        # every decode call (64x64x256 sines and cosines are ~8 ms of a ~70 ms vit_b predict on a 2-core CPU).
        self._image_pe = programs.dense_pe(self._state)
        self.reset_image()

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> SamPredictor:
        from vnsjax.model_dir import load_model

        return cls(load_model(directory), **kwargs)

    # ---- images ------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Computes and caches the image features. image: (H, W, 3) uint8, RGB or BGR.

        Other dtypes and shapes are refused with the conversion to use (`checks.check_image`), never cast. If this
        raises, no image is set (the previous one is dropped too), so `predict` cannot run on a stale image.
        """
        self.set_images([image], image_format)

    def set_images(self, images: Sequence[np.ndarray], image_format: str = "RGB") -> None:
        """`set_image` for several images in one encoder call; prompt image i with `predict(..., image_index=i)`.

        The count is padded to a power of two, so any count up to the next one reuses the compiled encoder.
        """
        self.reset_image()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("set_images takes a list of (H, W, 3) images; for one image use set_image")
        checked = [check_image(image) for image in images]
        if not checked:
            raise ValueError("set_images needs at least one image")
        resized, sizes = [], []
        for image in checked:
            if image_format != self.model.image_format:
                image = image[..., ::-1]
            resized.append(self.transform.apply_image(np.ascontiguousarray(image, dtype=np.uint8)))
            sizes.append(image.shape[:2])
        self.set_resized_images(resized, sizes)

    def set_resized_image(self, input_image: np.ndarray, original_image_size: tuple[int, int]) -> None:
        """Like the original set_torch_image: `input_image` is already resized to the long side."""
        self.set_resized_images([input_image], [original_image_size])

    def set_resized_images(
        self, input_images: Sequence[np.ndarray], original_image_sizes: Sequence[tuple[int, int]]
    ) -> None:
        """Images already resized to fit the model's input (at most S x S; padded here) and their original sizes."""
        self.reset_image()
        s = self.model.img_size
        if len(input_images) != len(original_image_sizes) or not input_images:
            raise ValueError(
                f"expected one original size per image, got {len(input_images)} images and "
                f"{len(original_image_sizes)} sizes"
            )
        n = len(input_images)
        dtype = np.uint8 if all(np.asarray(x).dtype == np.uint8 for x in input_images) else np.float32
        padded = np.zeros((bucket(n), s, s, 3), dtype)  # uint8 where possible: 4x less to transfer
        hw = np.zeros((len(padded), 2), np.int32)  # padding rows: an empty valid region, all zeros after normalising
        for i, image in enumerate(input_images):
            h, w = image.shape[:2]
            if h > s or w > s or image.shape[2:] != (3,):
                raise ValueError(f"image {i}: expected at most ({s}, {s}, 3) after resizing, got {image.shape}")
            padded[i, :h, :w] = image
            hw[i] = h, w
        self.features = self._encode(self._state, padded, hw)
        self.input_sizes = [tuple(int(v) for v in x) for x in hw[:n]]
        self.original_sizes = [tuple(int(v) for v in x) for x in original_image_sizes]
        self.is_image_set = True

    @property
    def num_images(self) -> int:
        return len(self.input_sizes)

    @property
    def original_size(self) -> tuple[int, int] | None:
        """The image's original (H, W), as in segment_anything; with several images use `original_sizes`."""
        return self._single(self.original_sizes, "original_size")

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The image's (h, w) after resizing; with several images use `input_sizes`."""
        return self._single(self.input_sizes, "input_size")

    def _single(self, sizes: list, name: str):
        if len(sizes) > 1:
            raise RuntimeError(f"{len(sizes)} images are set; read {name}s[i] instead of {name}")
        return sizes[0] if sizes else None

    def get_image_embedding(self) -> np.ndarray:
        """(N, 256, 64, 64) for the N images set, channels-first like the original ((1, ...) after set_image)."""
        self._require_image()
        return np.asarray(self.features.embedding[: self.num_images]).transpose(0, 3, 1, 2)

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_sizes: list[tuple[int, int]] = []
        self.input_sizes: list[tuple[int, int]] = []

    def _require_image(self, image_index: int = 0) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        if not (isinstance(image_index, int | np.integer) and 0 <= image_index < self.num_images):
            raise IndexError(f"image_index {image_index!r} is out of range: {self.num_images} image(s) are set")

    # ---- prompts -----------------------------------------------------------------------------

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        image_index: int = 0,
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
            image_index=image_index,
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
        *,
        image_index: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B prompts on one image in one call (the original predict_torch, in image coordinates).

        point_coords (B, N, 2) with point_labels (B, N); boxes (B, 4) xyxy; mask_input (B, 1, 256, 256)
        low-res logits. Returns masks (B, C, H, W), iou_predictions (B, C), low_res_masks (B, C, 256, 256).
        """
        self._require_image(image_index)
        check_prompts(point_coords, point_labels, boxes, mask_input)  # here, so messages quote the caller's values
        prompt = self.transform_prompts(point_coords, point_labels, boxes, mask_input, image_index=image_index)
        low_res, iou = self.predict_low_res(**prompt, multimask_output=multimask_output, image_index=image_index)
        masks = self.postprocess_masks(low_res, image_index=image_index)
        if not return_logits:
            masks = self._binarize(masks)
        return np.asarray(masks), np.asarray(iou), np.asarray(low_res)

    def transform_prompts(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        *,
        image_index: int = 0,
    ) -> dict[str, np.ndarray | None]:
        """Prompts in image i's pixel coordinates -> `predict_low_res` keyword arguments (the model's input frame)."""
        size = self.original_sizes[image_index]
        if point_coords is not None:
            point_coords = self.transform.apply_coords(np.asarray(point_coords), size)
        if boxes is not None:
            boxes = self.transform.apply_boxes(np.asarray(boxes, np.float64), size)
        return {"point_coords": point_coords, "point_labels": point_labels, "boxes": boxes, "mask_input": mask_input}

    def predict_low_res(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        *,
        image_index: int = 0,
    ) -> tuple[jax.Array, jax.Array]:
        """B prompts in the model's input frame (the original predict_torch, already transformed) -> low-res
        logits (B, C, 4h, 4w) from `select_output` and scores (B, C), as device arrays."""
        self._require_image(image_index)
        check_prompts(point_coords, point_labels, boxes, mask_input)
        prompts, b = pack_prompts(
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_input=mask_input,
            mask_size=self.model.prompt_encoder.mask_input_size,
        )
        out = self._decode(
            self._state,
            self.features,
            self._image_pe,
            np.int32(image_index),
            prompts,
            multimask_output=multimask_output,
            options=self.decoder_options,
        )
        return self.select_output(out)[:b], out.iou_predictions[:b]

    def predict_low_res_images(
        self, prompts: Sequence[Mapping[str, np.ndarray | None]], multimask_output: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """Prompts for every image set, in one decoder call: prompts[i] holds image i's `predict_low_res` keyword
        arguments (input frame; `transform_prompts` converts pixel coordinates). Returns low-res logits
        (N, B, C, 4h, 4w) and scores (N, B, C) as device arrays, B the largest prompt count (image i's rows past its
        own count are padding)."""
        self._require_image()
        if len(prompts) != self.num_images:
            raise ValueError(f"expected prompts for each of the {self.num_images} images set, got {len(prompts)}")
        for p in prompts:
            check_prompts(p.get("point_coords"), p.get("point_labels"), p.get("boxes"), p.get("mask_input"))
        counts = [_prompt_count(p) for p in prompts]
        points = [0 if p.get("point_coords") is None else np.shape(p["point_coords"])[1] for p in prompts]
        # One shape for every image: the prompt and point buckets of the largest.
        size = {"num_prompts": bucket(max(counts)), "num_points": bucket(max(points) + 1)}
        mask_size = self.model.prompt_encoder.mask_input_size
        packed = [pack_prompts(**p, mask_size=mask_size, **size)[0] for p in prompts]
        packed += [packed[-1]] * (len(self.features.embedding) - len(packed))  # the encoder's padding rows
        stacked = Prompts(*(np.stack(field) for field in zip(*packed, strict=True)))
        out = self._decode_images(
            self._state,
            self.features,
            self._image_pe,
            stacked,
            multimask_output=multimask_output,
            options=self.decoder_options,
        )
        n, b = self.num_images, max(counts)
        return jax.vmap(self.select_output)(out)[:n, :b], out.iou_predictions[:n, :b]

    def select_output(self, out: DecoderOutput) -> jax.Array:
        """Which low-res logits the predictor returns: the decoder's prediction (subclasses pick an extra)."""
        return out.masks

    def postprocess_masks(self, low_res: jax.Array, *, image_index: int = 0) -> jax.Array:
        """Low-res logits (B, C, 4h, 4w) of image i -> logits (B, C, H, W) at its original size."""
        self._require_image(image_index)
        return self._postprocess(
            self._state,
            low_res,
            input_size=self.input_sizes[image_index],
            original_size=self.original_sizes[image_index],
        )

    def _binarize(self, masks: jax.Array) -> jax.Array:
        return masks > self.model.mask_threshold


def _prompt_count(p: Mapping[str, Any]) -> int:
    counts = {len(p[k]) for k in ("point_coords", "boxes", "mask_input") if p.get(k) is not None}
    return max(counts, default=1)


class _Programs(NamedTuple):
    encode: Any
    decode: Any
    decode_images: Any
    postprocess: Any
    dense_pe: Any


@functools.lru_cache(maxsize=32)
def _programs(graphdef: nnx.GraphDef) -> _Programs:
    """The predictor's jitted functions for one model structure (graphdef: architecture, precision, attention)."""
    return _Programs(
        jax.jit(partial(_encode, graphdef)),
        jax.jit(partial(_decode, graphdef), static_argnames=("multimask_output", "options")),
        jax.jit(partial(_decode_images, graphdef), static_argnames=("multimask_output", "options")),
        jax.jit(partial(_postprocess, graphdef), static_argnames=("input_size", "original_size")),
        jax.jit(partial(_dense_pe, graphdef)),
    )


def _encode(graphdef, state, padded: jax.Array, hw: jax.Array) -> Features:
    return nnx.merge(graphdef, state).image_features(padded, hw)


def _dense_pe(graphdef, state) -> jax.Array:
    return nnx.merge(graphdef, state).prompt_encoder.get_dense_pe()


def _decode(
    graphdef, state, features: Features, image_pe, index: jax.Array, prompts: Prompts, *, multimask_output, options
):
    """Prompts against image `index` of the cached features (a traced index: one program for every image)."""
    model = nnx.merge(graphdef, state)
    one = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, index, 1), features)
    return model.decode(one, prompts, multimask_output=multimask_output, image_pe=image_pe, **dict(options))


def _decode_images(graphdef, state, features: Features, image_pe, prompts: Prompts, *, multimask_output, options):
    """(N, B, ...) prompts against N images' features: each image's prompts see that image alone."""
    model = nnx.merge(graphdef, state)

    def one(feats: Features, p: Prompts) -> DecoderOutput:
        return model.decode(feats, p, multimask_output=multimask_output, image_pe=image_pe, **dict(options))

    return jax.vmap(one)(jax.tree.map(lambda x: x[:, None], features), prompts)


def _postprocess(graphdef, state, low_res, *, input_size, original_size):
    return nnx.merge(graphdef, state).postprocess_masks(low_res, input_size, original_size)
