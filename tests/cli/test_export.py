"""`vnsjax.export`: the serialised encoder + decoder agree with the live model (1 and 3 prompts, every variant)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnsjax.build_sam import build_sam
from vnsjax.export import load_exported, main
from vnsjax.model_dir import save_model
from vnsjax.modeling.sam import eval_view
from vnsjax.predictors.prompts import pack_prompts

TOL = 1e-5


# Per-image features each variant's bundle carries: (name, shape at the tiny config). HQ-SAM carries its one
# compressed feature, not the encoder's four ViT-width maps.
FEATURES = {
    "sam": {"embedding": (1, 16, 16, 256)},
    "hq": {"embedding": (1, 16, 16, 256), "hq_features": (1, 64, 64, 32)},
    "vns": {"embedding": (1, 16, 16, 256), "nsfm_m": (1, 64, 64, 32), "nsfm_g": (1, 16, 16, 256)},
}


@pytest.mark.parametrize("variant", ["sam", "hq", "vns"])
@pytest.mark.slow
def test_exported_matches_live(variant, tmp_path):
    model = build_sam("tiny", variant, seed=3)
    ckpt = save_model(model, tmp_path / "ckpt")
    model = eval_view(model)  # the bundle runs the model in inference mode (NSFM BatchNorm on running stats)
    bundle = tmp_path / "model.vnsjax"
    # cpu only keeps the test fast; the CLI default also lowers for cuda and tpu.
    assert main(["--checkpoint", str(ckpt), "--out", str(bundle), "--platforms", "cpu"]) == 0
    exported = load_exported(bundle)
    assert exported.meta["variant"] == variant and exported.img_size == 256
    assert exported.meta["mask_size"] == [64, 64]

    rng = np.random.default_rng(0)
    image = np.zeros((1, 256, 256, 3), np.float32)
    image[0, :192] = rng.uniform(0, 255, (192, 256, 3))
    hw = np.array([[192, 256]], np.int32)
    feats = exported.encode(image, hw[0])
    assert {k: v.shape for k, v in feats.items()} == FEATURES[variant]
    assert exported.meta["features"] == sorted(FEATURES[variant])
    live = model.image_features(jnp.asarray(image), jnp.asarray(hw))
    live_by_name = {"embedding": live.embedding, **live.decoder}
    for name, a in feats.items():
        np.testing.assert_allclose(np.asarray(a), np.asarray(live_by_name[name]), atol=TOL, rtol=TOL, err_msg=name)

    for b, n_points in ((1, 2), (3, 5)):  # b and n are symbolic: one blob, several shapes
        prompts, _ = pack_prompts(
            point_coords=rng.uniform(0, 190, (b, n_points, 2)),
            point_labels=rng.integers(0, 2, (b, n_points)),
            boxes=np.sort(rng.uniform(0, 190, (b, 2, 2)), axis=1).reshape(b, 4),
            mask_input=rng.normal(size=(b, 1, 64, 64)),
            mask_size=(64, 64),
        )
        prompts = jax.tree.map(lambda x, b=b: x[:b], prompts)  # drop pack_prompts' bucket padding
        for multimask in (True, False):
            masks, scores = exported.decode(feats, *prompts, multimask_output=multimask)
            want_masks, want_scores, _ = model.decode(live, prompts, multimask_output=multimask)
            c = 3 if multimask and variant == "sam" else 1
            assert masks.shape == (b, c, 64, 64) and scores.shape[0] == b
            np.testing.assert_allclose(np.asarray(masks), np.asarray(want_masks), atol=TOL, rtol=TOL)
            np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores), atol=TOL, rtol=TOL)


@pytest.mark.slow
def test_export_keeps_encoder_adapters(tmp_path):
    """A model with (trained, non-zero) encoder adapters exports them: the bundle's embedding is the live one."""
    import dataclasses

    from flax import nnx

    from vnsjax.build_sam import MODEL_CONFIGS

    model = build_sam(dataclasses.replace(MODEL_CONFIGS["tiny"], encoder_adapter_ratio=0.25), "sam", seed=3)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        if "adapter" in [str(k) for k in path]:
            var.set_value(var.get_value() + 0.05)
    ckpt = save_model(model, tmp_path / "ckpt")
    bundle = tmp_path / "model.vnsjax"
    assert main(["--checkpoint", str(ckpt), "--out", str(bundle), "--platforms", "cpu"]) == 0
    image = np.random.default_rng(1).uniform(0, 255, (1, 256, 256, 3)).astype(np.float32)
    hw = np.array([256, 256], np.int32)
    got = np.asarray(load_exported(bundle).encode(image, hw)["embedding"])
    live = np.asarray(model.image_features(jnp.asarray(image), jnp.asarray(hw[None])).embedding)
    base = np.asarray(
        build_sam("tiny", "sam", seed=3).image_features(jnp.asarray(image), jnp.asarray(hw[None])).embedding
    )
    np.testing.assert_allclose(got, live, atol=TOL, rtol=TOL)
    assert np.abs(live - base).max() > 100 * TOL  # the adapters are in the exported computation
