"""The train command's user errors end-to-end: one `error:` line and exit 2; an accepted smaller step count on
resume labels the model with the step its weights are at."""

from __future__ import annotations

import json

import pytest

from tests.training import train_util


@pytest.mark.slow
def test_cli_errors_and_resume_with_fewer_steps(tmp_path):
    work = tmp_path / "w"
    proc = train_util.run(work, "--config.no_such_field=1", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --config.no_such_field: config has no field")
    assert "Traceback" not in proc.stderr

    train_util.run(work)  # the smoke run: 6 steps
    proc = train_util.run(work, "--config.num_train_steps=4", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "checkpoint is at step 6, this run ends at step 4" in proc.stderr

    train_util.run(work, "--config.num_train_steps=4", "--config.allow_config_change=True")
    assert json.loads((work / "model" / "vnsjax.json").read_text())["source"]["step"] == 6
    record = json.loads((work / "config_changes.jsonl").read_text().splitlines()[-1])
    assert record == {"step": 6, "changes": {"total_steps": [6, 4]}}
