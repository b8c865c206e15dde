"""Helpers for tests/training: run `python -m vnsjax.train` in a subprocess (it inherits the run's compilation cache,
tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def env(devices: int = 1) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=str(ROOT),
    )
    return e


def train_cmd(workdir: Path, *overrides: str, config: str = "configs/demo.py:smoke") -> list[str]:
    return [
        sys.executable,
        "-m",
        "vnsjax.train",
        f"--config={config}",
        f"--workdir={workdir}",
        "--config.eval_num_images=0",
        *overrides,
    ]


def run(
    workdir: Path, *overrides: str, devices: int = 1, check: bool = True, config: str = "configs/demo.py:smoke"
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        train_cmd(workdir, *overrides, config=config),
        cwd=ROOT,
        env=env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def kill_after(workdir: Path, step: int, *overrides: str, devices: int = 1) -> tuple[int, str]:
    """Starts a training run and SIGKILLs it from outside once metrics.jsonl has logged `step` (a preemption).

    Returns (return code, stderr). The run may have finished the step after `step` before the signal lands; it
    cannot have finished the whole run if that is more than a step or two away.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{workdir.name}.stderr"  # a file, not a pipe: a full pipe would block the run
    with log.open("w") as err:
        proc = subprocess.Popen(train_cmd(workdir, *overrides), cwd=ROOT, env=env(devices), stderr=err)
        deadline = time.monotonic() + 1800  # a hang guard, not a timing assertion
        while proc.poll() is None and step not in metrics(workdir) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode, log.read_text()


def metrics(workdir: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl by step; a step logged twice (before a kill and after the resume) keeps its last entry.

    Only complete lines count (the file may be read while a run writes it).
    """
    path = workdir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    rows = [json.loads(line) for line in text.split("\n")[:-1]]
    return {r["step"]: r for r in rows if "event" not in r}


def losses(workdir: Path) -> np.ndarray:
    m = metrics(workdir)
    return np.array(
        [[m[s][k] for k in ("loss", "loss_edge1", "loss_mask2", "loss_edge2", "loss_fusion_mask")] for s in sorted(m)]
    )
