"""Training user errors: config validation, unknown keys, resume consistency, skip_bad mid-run (all in-process)."""

from __future__ import annotations

import numpy as np
import pytest

from configs import demo
from data_pipeline import pipeline, vns_seg
from vnsjax.training.config_check import ConfigError, resume_changes, unknown_key_message, validate_config


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("batch_size", 0, "config.batch_size = 0: expected a positive integer"),
        ("num_train_steps", -5, "config.num_train_steps = -5: expected a positive integer, or -1"),
        ("steps_per_epoch", 0, "config.steps_per_epoch = 0"),
        ("data_dir", "/no/such/dir", "config.data_dir = '/no/such/dir': expected a VNS-SEG root"),
        ("precision", "fp16", "config.precision = 'fp16': expected one of highest, default, bf16"),
    ],
)
def test_bad_value_names_field(field, value, expected):
    config = demo.get_config("smoke")
    config[field] = value
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("*", r"\*")):
        validate_config(config)


def test_batch_not_divisible_by_devices(monkeypatch):
    monkeypatch.setattr("jax.device_count", lambda: 4)
    config = demo.get_config("smoke")
    config.batch_size = 6
    with pytest.raises(ConfigError, match="config.batch_size = 6: expected a multiple of the 4 devices"):
        validate_config(config)


def test_sam_checkpoint_missing_or_corrupt(tmp_path):
    config = demo.get_config("smoke")
    config.sam_checkpoint = str(tmp_path / "none")
    with pytest.raises(ConfigError, match="config.sam_checkpoint: .*none: no such model directory"):
        validate_config(config)
    (tmp_path / "vnsjax.json").write_text("{")
    config.sam_checkpoint = str(tmp_path)
    with pytest.raises(ConfigError, match=r"config.sam_checkpoint: .*vnsjax.json: not a readable vnsjax.json"):
        validate_config(config)


def test_valid_config_passes():
    validate_config(demo.get_config("smoke"))


def test_unknown_key_names_nearest():
    config = demo.get_config()
    assert "did you mean one of: batch_size" in unknown_key_message(config, "batch_sise")
    assert unknown_key_message(config, "no_such_field").startswith("--config.no_such_field: config has no field")
    assert unknown_key_message(config, "batch_size") == ""


def test_resume_changes_refused_then_recorded():
    config = demo.get_config("smoke")
    previous = config.to_dict() | {"batch_size": 4}
    with pytest.raises(ConfigError, match="batch_size was 4, now 2.*allow_config_change"):
        resume_changes(previous, config, ckpt_step=6, total_steps=10)
    with pytest.raises(ConfigError, match="checkpoint is at step 6, this run ends at step 4"):
        resume_changes(config.to_dict(), config, ckpt_step=6, total_steps=4)
    assert resume_changes(config.to_dict(), config, ckpt_step=6, total_steps=10) == {}
    config.allow_config_change = True
    assert resume_changes(previous, config, ckpt_step=6, total_steps=4) == {
        "batch_size": [4, 2],
        "total_steps": [6, 4],
    }


def test_skip_bad_replaces_truncated_example(tmp_path):
    from data_pipeline import synthetic

    synthetic.generate(tmp_path, num=3, seed=0, subsets=["COD-TR"])
    source = vns_seg.VnsSegSource(tmp_path, "COD-TR")
    bad = source.refs[1].image_path
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 2])
    with pytest.raises(vns_seg.DataError):
        source[1]
    tolerant = pipeline.SkipBadSource(source)  # the file was damaged after the start-up scan
    assert len(tolerant) == 3
    np.testing.assert_array_equal(tolerant[1]["image"], source[2]["image"])  # the next readable one, every time
    np.testing.assert_array_equal(tolerant[1]["image"], source[2]["image"])
    assert tolerant.skipped == {1}
