"""Preemption: a run SIGKILLed after step 3 and resumed from its step-2 checkpoint ends where an uninterrupted
run ends (same losses for every step, same parameters, optimizer state and BatchNorm statistics)."""

from __future__ import annotations

import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp

from tests.training import train_util as tu


def _restore(workdir, step: int):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state")


def test_sigkill_and_resume_matches_uninterrupted(tmp_path):
    args = ("--config.num_train_steps=5", "--config.checkpoint_every_steps=2")
    straight = subprocess.Popen(
        tu.train_cmd(tmp_path / "straight", *args),
        cwd=tu.ROOT,
        env=tu.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = tu.run(tmp_path / "resumed", *args, "--config.debug_kill_after_step=3", check=False)
    assert killed.returncode == -9, killed.stderr[-4000:]
    assert sorted(tu.metrics(tmp_path / "resumed")) == [1, 2, 3]
    resumed = tu.run(tmp_path / "resumed", *args)
    assert "Resumed" in resumed.stdout + resumed.stderr
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-4000:]

    a, b = tu.losses(tmp_path / "straight"), tu.losses(tmp_path / "resumed")
    assert a.shape == (5, 5)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    sa, sb = _restore(tmp_path / "straight", 5), _restore(tmp_path / "resumed", 5)
    assert int(sa["step"]) == int(sb["step"]) == 5
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(sa), jax.tree_util.tree_leaves_with_path(sb)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b] and len(flat_a) > 10
    for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7, err_msg=str(path))
