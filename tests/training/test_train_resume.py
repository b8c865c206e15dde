"""Preemption: a run SIGKILLed from outside after step 3 and resumed from its last checkpoint ends where an
uninterrupted run ends (same losses for every step, same parameters, optimizer state and BatchNorm statistics)."""

from __future__ import annotations

import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.training import train_util as tu


def _restore(workdir, step: int):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state")


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted(tmp_path):
    args = ("--config.num_train_steps=8", "--config.checkpoint_every_steps=2")
    straight = subprocess.Popen(
        tu.train_cmd(tmp_path / "straight", *args),
        cwd=tu.ROOT,
        env=tu.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    returncode, err = tu.kill_after(tmp_path / "resumed", 3, *args)
    assert returncode == -9, err[-4000:]
    logged = sorted(tu.metrics(tmp_path / "resumed"))
    assert logged[:3] == [1, 2, 3] and logged[-1] < 8 and not (tmp_path / "resumed" / "model").exists()
    resumed = tu.run(tmp_path / "resumed", *args)
    assert "Resumed" in resumed.stdout + resumed.stderr
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-4000:]

    a, b = tu.losses(tmp_path / "straight"), tu.losses(tmp_path / "resumed")
    assert a.shape == (8, 5)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    sa, sb = _restore(tmp_path / "straight", 8), _restore(tmp_path / "resumed", 8)
    assert int(sa["step"]) == int(sb["step"]) == 8
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(sa), jax.tree_util.tree_leaves_with_path(sb)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b] and len(flat_a) > 10
    for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7, err_msg=str(path))
