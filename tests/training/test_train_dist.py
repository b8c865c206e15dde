"""Data parallelism in subprocesses: 4 host devices == 1 device; two jax.distributed processes on localhost."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest

from tests.tolerance import assert_close
from tests.training import train_util as tu


@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path):
    """Global batch 4 sharded over 4 devices (BN statistics over the global batch, encoder kernels FSDP-sharded)
    gives the losses of the same batch on one device."""
    args = ("--config.num_train_steps=3", "--config.batch_size=4", "--config.checkpoint_every_steps=0")
    one = subprocess.Popen(
        tu.train_cmd(tmp_path / "one", *args),
        cwd=tu.ROOT,
        env=tu.env(1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    four = tu.run(
        tmp_path / "four", *args, "--config.shard_encoder=True", "--config.shard_encoder_min_size=0", devices=4
    )
    _, err = one.communicate(timeout=600)
    assert one.returncode == 0, err[-4000:]
    assert four.returncode == 0
    a, b = tu.losses(tmp_path / "one"), tu.losses(tmp_path / "four")
    assert a.shape == (3, 5) and np.isfinite(a).all()
    # Sharded reductions sum in another order: float32 noise relative to the loss scale.
    assert_close(b, a, rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_jax_distributed(tmp_path):
    """Two processes (one CPU device each) joined by jax.distributed, grain sharded by process, batch 2 = 1 + 1."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            tu.train_cmd(
                tmp_path,
                "--config.num_train_steps=2",
                "--config.batch_size=2",
                "--config.checkpoint_every_steps=0",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            cwd=tu.ROOT,
            env=tu.env(1),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-4000:]
    m = tu.losses(tmp_path)  # written by process 0 only
    assert m.shape == (2, 5) and np.isfinite(m).all()
    # Both processes saved their grain iterator state with the final checkpoint.
    data = tmp_path / "checkpoints" / "2" / "data"
    assert len([p for p in data.iterdir() if "process" in p.name]) == 2, list(data.iterdir())
