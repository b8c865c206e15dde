"""precision= on the predictors and load_model: the setting stays with its own model (no global state), and bf16
masks agree with float32 within the bound of docs/precision.md on randomised tiny models."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.modeling.test_precision import bf16_bound
from tests.modeling.util import randomize
from vnsjax import SamPredictor, VnsPredictor, build_sam
from vnsjax.model_dir import load_model, save_model
from vnsjax.modeling.precision import get_precision

BOXES = np.array([[20.0, 30.0, 200.0, 150.0], [0.0, 0.0, 120.0, 90.0], [60.0, 10.0, 230.0, 170.0]])


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (180, 240, 3), dtype=np.uint8)


@pytest.mark.slow
def test_precision_stays_with_its_model(tmp_path):
    model = build_sam("tiny", "sam", seed=21)
    matmul_precision = jax.config.jax_default_matmul_precision
    image = _image(0)
    before = SamPredictor(model)
    before.set_image(image)
    want = before.predict(box=BOXES[0], return_logits=True)

    bf16 = SamPredictor(model, precision="bf16")
    assert get_precision(bf16.model) == "bf16"
    assert get_precision(model) == "highest"  # the caller's model is not switched
    assert jax.config.jax_default_matmul_precision == matmul_precision  # nor anything global
    after = SamPredictor(model)
    after.set_image(image)
    for got, w in zip(after.predict(box=BOXES[0], return_logits=True), want, strict=True):
        np.testing.assert_array_equal(got, w)

    directory = save_model(model, tmp_path / "m")
    assert get_precision(load_model(directory, precision="bf16")) == "bf16"
    assert get_precision(load_model(directory)) == "highest"
    with pytest.raises(ValueError, match="'fp16'.*highest"):
        SamPredictor(model, precision="fp16")


@pytest.mark.parametrize(("variant", "seed"), [("sam", 0), ("hq", 1), ("vns", 2)])
def test_bf16_masks_within_bound(variant, seed):
    """|logit_bf16 - logit_f32| <= beta max|low-res logit| per mask (beta = 2 u sqrt(K / 3)), hence every pixel
    whose float32 logit is beyond that margin keeps its mask bit: mask IoU over those pixels is 1 (target 0.99)."""
    model = randomize(build_sam("tiny", variant), seed)
    beta = bf16_bound(model)
    cls = VnsPredictor if variant == "vns" else SamPredictor
    f32, bf16 = cls(model), cls(model, precision="bf16")
    image = _image(seed)
    for p in (f32, bf16):
        p.set_image(image)
    a, score_a, low_a = f32.predict_batch(boxes=BOXES, return_logits=True)
    b, score_b, _ = bf16.predict_batch(boxes=BOXES, return_logits=True)
    assert b.dtype == np.float32 and b.shape == a.shape
    # Bilinear upsampling is a convex combination: the low-res max-norm bounds carry over to every pixel.
    scale = np.abs(low_a).max((-2, -1), keepdims=True)
    err = np.abs(b - a).max((-2, -1), keepdims=True)
    assert (err <= beta * scale).all(), f"max error {(err / scale).max():.4f} x max|logit| > beta {beta:.4f}"
    assert np.abs(score_b - score_a).max() <= beta * np.abs(score_a).max()
    outside = np.abs(a) > beta * scale
    fa, fb = (a > 0) & outside, (b > 0) & outside
    margin_iou = (fa & fb).sum((-2, -1)) / np.maximum((fa | fb).sum((-2, -1)), 1)
    assert margin_iou.min() >= 0.99, margin_iou
    plain = ((a > 0) & (b > 0)).sum((-2, -1)) / np.maximum(((a > 0) | (b > 0)).sum((-2, -1)), 1)
    print(f"{variant}: IoU beyond the margin {margin_iou.min():.4f}; plain IoU min {plain.min():.4f}")
