"""In-process training properties: frozen base, optimizer state only for what trains, the checkpointed TrainState,
schedule, SAM base loading, and the non-finite guard. Uses configs/demo.py:smoke (tiny model, synthetic data)."""

from __future__ import annotations

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from benchmarks.train_step import random_batch
from configs import demo, vit_l
from tests.training import train_util as tu
from vnsjax.build_sam import MODEL_CONFIGS, build_sam
from vnsjax.model_dir import load_model, save_model
from vnsjax.modeling.attention import resolve_implementation
from vnsjax.train import train
from vnsjax.training import optim, sharding
from vnsjax.training import state as ts
from vnsjax.training import step as step_lib


def _smoke(**overrides):
    c = demo.get_config("smoke")
    c.eval_num_images = 0
    c.update(overrides)
    return c


def _flat(state) -> dict:
    return {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state)}


def _host(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three steps from the random base; returns (initial split, train() result, workdir)."""
    workdir = tmp_path_factory.mktemp("train")
    config = _smoke(num_train_steps=3, checkpoint_every_steps=0)
    initial = ts.split_model(ts.build_model(config.model_type, config.seed))
    return initial, train(config, workdir), workdir


@pytest.mark.slow
def test_frozen_base_is_bit_identical(run):
    initial, _, workdir = run
    trained = ts.split_model(load_model(workdir / "model"))
    before, after = _flat(initial.frozen), _flat(trained.frozen)
    assert before.keys() == after.keys()
    assert any(k[0] == "image_encoder" for k in before) and any(k[0] == "mask_decoder" for k in before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=str(k))
    # ...while every trainable leaf moved, and the NSFM BatchNorm running statistics were updated (train mode).
    moved = {k: not np.array_equal(v, _flat(trained.trainable)[k]) for k, v in _flat(initial.trainable).items()}
    assert all(moved.values()), [k for k, m in moved.items() if not m]
    stats_before, stats_after = _flat(initial.batch_stats), _flat(trained.batch_stats)
    assert stats_before and all(not np.array_equal(stats_before[k], stats_after[k]) for k in stats_before)


@pytest.mark.slow
def test_metrics_and_checkpoint_written(run):
    _, out, workdir = run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    start, *steps = rows
    # The start line says how the step computes: the config's precision and the attention implementation in use.
    assert start == {
        "event": "start",
        "step": 0,
        "precision": "highest",
        "encoder_dtype": "float32",
        "attention": resolve_implementation("auto"),  # "chunked" on the CPU
        "backend": jax.default_backend(),
    }
    assert [r["step"] for r in steps] == [1, 2, 3] and out["step"] == 3
    terms = {"loss_edge1", "loss_mask2", "loss_edge2", "loss_fusion_mask"}
    assert set(out["train"]) >= {"loss", "lr", "grad_norm", *terms}
    assert np.isfinite(out["train"]["loss"])
    assert list((workdir / "tb").iterdir())


def _restore_state(workdir, step: int, target: ts.TrainState) -> ts.TrainState:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state", abstract)


@pytest.fixture(scope="module")
def fresh():
    """(TrainState at step 0, frozen base, setup) of the smoke config, as the trainer builds them."""
    return ts.init_train_state(_smoke(), sharding.make_mesh(), steps_per_epoch=1)


@pytest.mark.slow
def test_checkpoint_is_the_train_state(run, fresh):
    """The final checkpoint restores into init_train_state's TrainState and holds the saved model's weights."""
    _, _, workdir = run
    restored = _restore_state(workdir, 3, fresh[0])
    assert isinstance(restored, ts.TrainState) and int(restored.step) == 3
    np.testing.assert_array_equal(restored.rng, fresh[0].rng)
    trained = ts.split_model(load_model(workdir / "model"))
    for name in ("trainable", "batch_stats"):
        a, b = _flat(getattr(restored, name)), _flat(getattr(trained, name))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")


def test_optimizer_state_has_no_base_leaves(fresh):
    state, frozen, _ = fresh
    trainable_leaves, trainable_size = ts.count_leaves(state.trainable)
    opt_leaves, opt_size = ts.count_leaves(state.opt_state)
    frozen_size = ts.count_leaves(frozen)[1]
    # Adam: mu and nu per trainable leaf, plus scalar step counts (Adam's and the schedule's).
    scalars = [x for x in jax.tree.leaves(state.opt_state) if x.shape == ()]
    assert 1 <= len(scalars) <= 2
    assert (opt_leaves - len(scalars), opt_size - len(scalars)) == (2 * trainable_leaves, 2 * trainable_size)
    assert frozen_size > trainable_size > 0
    keys = {k for k, _ in nnx.to_flat_state(state.trainable)}
    assert all(k[0] == "mask_decoder" for k in keys)
    assert {k[1] for k in keys} >= {"neck", "hf_token", "fusion_layer", "dense_pred_head"}


def test_trainable_from_config():
    model = ts.build_model("tiny", 0)
    split = ts.split_model(model, "mask_decoder.neck,mask_decoder.fusion_layer")
    assert {k[:2] for k in _flat(split.trainable)} == {("mask_decoder", "neck"), ("mask_decoder", "fusion_layer")}
    released = ts.split_model(model, "released")
    assert ts.count_leaves(released.trainable)[1] > ts.count_leaves(split.trainable)[1]
    with pytest.raises(ValueError, match="'mask_decoder.nek' selects no parameter"):
        ts.split_model(model, "mask_decoder.neck,mask_decoder.nek")


def test_step_lr_schedule_in_steps():
    c = vit_l.get_config()
    tx_schedule = optim.learning_rate_schedule(c, steps_per_epoch=100)
    lrs = [float(tx_schedule(s)) for s in (0, 999, 1000, 1199)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    assert (c.batch_size, c.num_epochs, c.b1, c.b2, c.eps) == (16, 12, 0.9, 0.999, 1e-8)
    assert c.trainable == "released"


@pytest.mark.slow
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


def _step_once(fresh, batch: dict[str, np.ndarray]):
    """One jitted train_step on a copy of the fresh state (the step donates it) -> (before, after, metrics)."""
    state, frozen, setup = fresh
    before = _host(state)
    batch = sharding.put_batch(batch, sharding.batch_sharding(setup.mesh))
    new, metrics = step_lib.jit_train_step(setup)(sharding.put(before, setup.shardings), frozen, batch)
    return before, _host(new), {k: float(v) for k, v in metrics.items()}


def _batch() -> dict[str, np.ndarray]:
    return random_batch(2, MODEL_CONFIGS["tiny"].img_size, np.random.default_rng(0))


@pytest.mark.slow
def test_non_finite_loss_step_is_not_applied(fresh):
    """A NaN in the data makes the loss NaN: the step returns the state unchanged (parameters, Adam, step)."""
    batch = _batch()
    batch["mask"][0, 0, 0] = np.nan
    before, after, metrics = _step_once(fresh, batch)
    assert not np.isfinite(metrics["loss"])
    jax.tree.map(np.testing.assert_array_equal, after, before)


@pytest.mark.slow
def test_non_finite_gradient_step_is_not_applied(fresh, monkeypatch):
    """A finite loss with a NaN gradient (0 * sqrt(0 * x): value 0, derivative 0 * inf) is not applied either."""
    loss_and_terms = step_lib.loss_and_terms

    def patched(model, batch, *args):
        loss, terms = loss_and_terms(model, batch, *args)
        return loss + 0.0 * jax.numpy.sqrt(0.0 * loss), terms

    monkeypatch.setattr(step_lib, "loss_and_terms", patched)
    before, after, metrics = _step_once(fresh, _batch())
    assert np.isfinite(metrics["loss"]) and not np.isfinite(metrics["grad_norm"])
    jax.tree.map(np.testing.assert_array_equal, after, before)


@pytest.mark.slow
def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """NaN targets in the third batch: train() stops naming step 3; the step-2 checkpoint is the last one."""
    put_batch, calls = sharding.put_batch, []

    def nan_on_third(local, batch_sharding):
        calls.append(1)
        if len(calls) == 3:
            local = {**local, "mask": np.full_like(local["mask"], np.nan)}
        return put_batch(local, batch_sharding)

    monkeypatch.setattr(sharding, "put_batch", nan_on_third)
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(_smoke(num_train_steps=4, checkpoint_every_steps=2), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    assert tu.metrics(tmp_path).keys() == {1, 2, 3}


def test_bf16_encoder_keeps_float32_trainables():
    split = ts.split_model(ts.build_model("tiny", 0))
    frozen = ts.cast_encoder(split.frozen, "bfloat16")
    dtypes = {k[0]: v.dtype for k, v in _flat(frozen).items()}
    enc = [v.dtype for k, v in _flat(frozen).items() if k[0] == "image_encoder"]
    assert enc and all(d == jax.numpy.bfloat16 for d in enc)
    assert dtypes["mask_decoder"] == np.float32
    assert all(v.dtype == np.float32 for v in _flat(split.trainable).values())
