"""SAM's simulated interactive prompting (vnsjax.training.step.interactive_prompts) and the pre-training recipe."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import sam_pretrain
from tests.training import train_util as tu
from vnsjax.build_sam import build_sam
from vnsjax.model_dir import load_model
from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.prompt_encoder import PAD_LABEL
from vnsjax.training import optim
from vnsjax.training.config_check import ConfigError, validate_config
from vnsjax.training.state import Recipe
from vnsjax.training.step import interactive_prompts, loss_and_terms

S, LOW = 64, 16  # input frame and low-res mask size of the stand-in decoders below


def _batch(b: int = 6) -> dict[str, jnp.ndarray]:
    """Rectangles of different sizes and places; box = their tight xyxy box, as the pipeline gives it."""
    mask = np.zeros((b, S, S), np.float32)
    boxes = np.zeros((b, 4), np.float32)
    for i in range(b):
        x0, y0 = 2 + (5 * i) % 23, 3 + (7 * i) % 19
        x1, y1 = x0 + 8 + (3 * i) % 25, y0 + 10 + (4 * i) % 21
        mask[i, y0 : y1 + 1, x0 : x1 + 1] = 1
        boxes[i] = (x0, y0, x1, y1)
    return {"mask": jnp.asarray(mask), "box": jnp.asarray(boxes)}


def _constant_decoder(value: float):
    """A decoder whose four masks are `value` everywhere (recording the prompts it was called with)."""
    calls = []

    def decode(p):
        calls.append(p)
        b = p.boxes.shape[0]
        return DecoderOutput(jnp.full((b, 4, LOW, LOW), value), jnp.zeros((b, 4)), {})

    return decode, calls


@pytest.mark.parametrize("value,expected_label", [(-10.0, 1), (10.0, 0)])
def test_clicks_land_in_the_error_region(value, expected_label):
    """Predicting nothing: every click is a foreground click on the object; predicting everything: a background
    click off it. The previous logits come back as the mask prompt."""
    batch = _batch()
    decode, calls = _constant_decoder(value)
    rounds = interactive_prompts(decode, batch, (LOW, LOW), jax.random.key(0), 2)
    assert len(rounds) == 3 and len(calls) == 3
    target = np.asarray(batch["mask"]) > 0.5
    for r in (1, 2):
        p = rounds[r][1]
        xy = np.asarray(p.coords[:, r]).astype(int)
        np.testing.assert_array_equal(np.asarray(p.labels[:, r]), expected_label)
        inside = target[np.arange(len(xy)), xy[:, 1], xy[:, 0]]
        np.testing.assert_array_equal(inside, expected_label == 1)
        assert bool(np.all(np.asarray(p.mask_valid)))
        np.testing.assert_array_equal(np.asarray(p.masks), value)
        # Earlier clicks stay, later slots are still padding.
        np.testing.assert_array_equal(np.asarray(p.coords[:, 1:r]), np.asarray(rounds[r - 1][1].coords[:, 1:r]))
        assert bool(np.all(np.asarray(p.labels[:, r + 1 : -1]) == PAD_LABEL))


def test_first_round_box_or_point():
    """Round 0: a box within SAM's jitter of the tight box, or one foreground point with the not-a-point token;
    no mask prompt. Both kinds occur, and the draws follow the key."""
    batch = _batch(16)
    decode, _ = _constant_decoder(0.0)
    p = interactive_prompts(decode, batch, (LOW, LOW), jax.random.key(3), 1)[0][1]
    use_box = np.asarray(p.box_valid)
    assert 0 < use_box.sum() < len(use_box)
    assert not np.asarray(p.mask_valid).any()
    limit = 20.0 * S / 1024
    side = np.asarray(batch["box"])[:, 2:] - np.asarray(batch["box"])[:, :2]
    jitter = np.abs(np.asarray(p.boxes) - np.asarray(batch["box"]))
    assert (jitter <= limit + 1e-5).all() and (jitter > 0).any()
    assert (jitter[:, :2] <= np.maximum(0.5 * side, limit)).all()
    labels, coords = np.asarray(p.labels), np.asarray(p.coords).astype(int)
    np.testing.assert_array_equal(labels[:, 0], np.where(use_box, PAD_LABEL, 1))
    np.testing.assert_array_equal(labels[:, -1], np.where(use_box, PAD_LABEL, -1))
    target = np.asarray(batch["mask"]) > 0.5
    points = ~use_box
    assert target[np.flatnonzero(points), coords[points, 0, 1], coords[points, 0, 0]].all()
    again = interactive_prompts(decode, batch, (LOW, LOW), jax.random.key(3), 1)[0][1]
    other = interactive_prompts(decode, batch, (LOW, LOW), jax.random.key(4), 1)[0][1]
    np.testing.assert_array_equal(np.asarray(again.boxes), np.asarray(p.boxes))
    assert not np.array_equal(np.asarray(other.boxes), np.asarray(p.boxes))


def test_perfect_prediction_gets_no_click_and_best_candidate_is_refined():
    """A decoder whose token 2 is exact and the others empty: a lone-point round hands token 2 on (the best of the
    multimask outputs), and the next round has no error to click on (padding)."""
    batch = _batch()
    small = jax.image.resize(batch["mask"], (6, LOW, LOW), method="linear") > 0.5
    exact = jnp.where(small, 10.0, -10.0)

    def decode(p):
        masks = jnp.stack([jnp.full_like(exact, -10.0), jnp.full_like(exact, -10.0), exact, exact * 0 - 10], axis=1)
        masks = jnp.where(p.mask_valid[:, None, None, None], exact[:, None], masks)
        return DecoderOutput(masks, jnp.zeros((6, 4)), {})

    rounds = jax.jit(lambda b, k: interactive_prompts(decode, b, (LOW, LOW), k, 1))(batch, jax.random.key(1))
    first, second = rounds[0][1], rounds[1][1]
    lone_point = ~np.asarray(first.box_valid)
    assert lone_point.any()
    np.testing.assert_array_equal(np.asarray(second.masks)[lone_point], np.asarray(exact)[lone_point])
    # Up-sampled 16 -> 64 the exact low-res mask can miss a boundary pixel: padding wherever no pixel is wrong.
    predicted = np.asarray(jax.image.resize(exact, (6, S, S), method="linear") > 0)
    wrong = (predicted != (np.asarray(batch["mask"]) > 0.5)).any(axis=(1, 2))
    np.testing.assert_array_equal(np.asarray(second.labels[:, 1]) == PAD_LABEL, ~wrong)


@pytest.mark.slow
def test_interactive_loss_gradients_finite_on_tiny_sam():
    model = build_sam("tiny", "sam", seed=0)
    rng = np.random.default_rng(0)
    batch = {k: jnp.asarray(v) for k, v in _batch(2).items()}
    batch["mask"] = jax.image.resize(batch["mask"], (2, 256, 256), method="nearest")
    batch["box"] = batch["box"] * 4
    batch["image"] = jnp.asarray(rng.integers(0, 256, (2, 256, 256, 3)), jnp.float32)
    recipe = Recipe("sam", "sam", True, "interactive", 2)

    def loss(m):
        return loss_and_terms(m, batch, jnp.float32, recipe, jax.random.key(0))

    # Jitted: one compile. Eager, every op of the unrolled refinement rounds compiles on its own (~6 min cold).
    (value, terms), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
    assert np.isfinite(float(value)) and set(terms) == {"loss_focal", "loss_dice", "loss_iou"}
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    enc = jax.tree.leaves(grads["image_encoder"])
    assert any(float(jnp.abs(g).max()) > 0 for g in enc)  # the encoder trains too


def test_interactive_needs_sam_and_cosine_schedule():
    c = sam_pretrain.get_config("smoke")
    c.variant = "vns"
    with pytest.raises(ConfigError, match="config.prompts = 'interactive'"):
        validate_config(c)
    c = sam_pretrain.get_config()
    c.refine_rounds = -1
    with pytest.raises(ConfigError, match="config.refine_rounds"):
        validate_config(c)
    c = sam_pretrain.get_config()
    schedule = optim.learning_rate_schedule(c, steps_per_epoch=10)
    lrs = np.array([float(schedule(s)) for s in (0, c.warmup_steps // 2, c.warmup_steps, c.num_train_steps)])
    np.testing.assert_allclose(lrs[:3], [0.0, c.lr / 2, c.lr], rtol=1e-5)
    assert lrs[3] < 1e-6 * c.lr


@pytest.mark.slow
def test_pretrain_smoke_run(tmp_path):
    """The pre-training recipe end to end: all of SAM trains, and WORKDIR/model is a SAM model directory."""
    tu.run(tmp_path, config="configs/sam_pretrain.py:smoke")
    before = build_sam("tiny", "sam", seed=0)
    after = load_model(tmp_path / "model")
    assert after.variant == "sam"
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        a = jax.tree.leaves(getattr(before, name))
        b = jax.tree.leaves(getattr(after, name))
        assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True)), name
    assert np.isfinite([m["loss"] for m in tu.metrics(tmp_path).values()]).all()
