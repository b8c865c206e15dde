"""In-process training properties: frozen base, optimizer state only for METI + NSFM, schedule, SAM base loading,
NaN guard. Uses configs/demo.py:smoke (tiny model, synthetic data)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from configs import demo, vit_l
from tests.training import train_util as tu
from vnsjax.build_sam import build_sam
from vnsjax.model_dir import save_model
from vnsjax.train import train
from vnsjax.training import state as ts

# Share compiled programs with the subprocess tests (tests/training/train_util.py) and between runs.
jax.config.update("jax_compilation_cache_dir", tu.CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def _smoke(**overrides):
    c = demo.get_config("smoke")
    c.eval_num_images = 0
    c.update(overrides)
    return c


def _flat(state) -> dict:
    return {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three steps from the random base; returns (initial split, train() result)."""
    workdir = tmp_path_factory.mktemp("train")
    config = _smoke(num_train_steps=3, checkpoint_every_steps=0)
    initial = ts.split_model(ts.build_model(config.model_type, config.seed))
    return initial, train(config, workdir), workdir


def test_frozen_base_is_bit_identical(run):
    initial, out, _ = run
    before, after = _flat(initial.frozen), _flat(out["frozen"])
    assert before.keys() == after.keys()
    assert any(k[0] == "image_encoder" for k in before) and any(k[0] == "mask_decoder" for k in before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=str(k))
    # ...while every trainable leaf moved, and the NSFM BatchNorm running statistics were updated (train mode).
    moved = {k: not np.array_equal(v, _flat(out["trainable"])[k]) for k, v in _flat(initial.trainable).items()}
    assert all(moved.values()), [k for k, m in moved.items() if not m]
    stats_before, stats_after = _flat(initial.batch_stats), _flat(out["batch_stats"])
    assert stats_before and all(not np.array_equal(stats_before[k], stats_after[k]) for k in stats_before)


def test_optimizer_state_has_no_base_leaves(run):
    initial, out, _ = run
    trainable_leaves, trainable_size = ts.count_leaves(initial.trainable)
    opt_leaves, opt_size = ts.count_leaves(out["opt_state"])
    frozen_leaves, frozen_size = ts.count_leaves(initial.frozen)
    # Adam: mu and nu per trainable leaf, plus scalar step counts (Adam's and the schedule's).
    scalars = [x for x in jax.tree.leaves(out["opt_state"]) if x.shape == ()]
    assert 1 <= len(scalars) <= 2
    assert (opt_leaves - len(scalars), opt_size - len(scalars)) == (2 * trainable_leaves, 2 * trainable_size)
    assert frozen_size > trainable_size > 0
    keys = {k for k, _ in nnx.to_flat_state(initial.trainable)}
    assert all(k[0] == "mask_decoder" for k in keys)
    assert {k[1] for k in keys} >= {"neck", "hf_token", "fusion_layer", "dense_pred_head"}


def test_metrics_and_checkpoint_written(run):
    _, out, workdir = run
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert set(out["train"]) >= {"loss", "lr", "loss_edge1", "loss_mask2", "loss_edge2", "loss_fusion_mask"}
    assert np.isfinite(out["train"]["loss"])
    assert (workdir / "checkpoints" / "3").is_dir()  # saved at the end
    assert list((workdir / "tb").iterdir())


def test_step_lr_schedule_in_steps():
    c = vit_l.get_config()
    tx_schedule = ts.learning_rate_schedule(c, steps_per_epoch=100)
    lrs = [float(tx_schedule(s)) for s in (0, 999, 1000, 1199)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    assert (c.batch_size, c.num_epochs, c.b1, c.b2, c.eps) == (16, 12, 0.9, 0.999, 1e-8)


def test_load_sam_base(tmp_path):
    sam = build_sam("tiny", "sam", seed=1)
    save_model(sam, tmp_path / "sam")
    vns = build_sam("tiny", "vns", seed=2)
    counts = ts.load_sam_base(vns, tmp_path / "sam")
    assert counts["image_encoder"] > 0 and counts["prompt_encoder"] > 0 and counts["mask_decoder"] > 0
    for name in ("image_encoder", "prompt_encoder"):
        a, b = _flat(nnx.state(getattr(sam, name))), _flat(nnx.state(getattr(vns, name)))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    sam_dec, vns_dec = _flat(nnx.state(sam.mask_decoder)), _flat(nnx.state(vns.mask_decoder))
    shared = sam_dec.keys() & vns_dec.keys()
    assert len(shared) == counts["mask_decoder"]
    for k in shared:
        np.testing.assert_array_equal(sam_dec[k], vns_dec[k])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = _smoke(num_train_steps=4, checkpoint_every_steps=2, debug_nan_step=3)
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(config, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


def test_bf16_encoder_keeps_float32_trainables():
    split = ts.split_model(ts.build_model("tiny", 0))
    frozen = ts.cast_encoder(split.frozen, "bfloat16")
    dtypes = {k[0]: v.dtype for k, v in _flat(frozen).items()}
    enc = [v.dtype for k, v in _flat(frozen).items() if k[0] == "image_encoder"]
    assert enc and all(d == jax.numpy.bfloat16 for d in enc)
    assert dtypes["mask_decoder"] == np.float32
    assert all(v.dtype == np.float32 for v in _flat(split.trainable).values())
