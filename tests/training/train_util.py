"""Helpers for tests/training: run `python -m vnsjax.train` in a subprocess sharing a compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# Subprocess runs of the same program reuse compiled executables (the tiny model's compile dominates a run).
CACHE = os.environ.get("VNSJAX_TEST_JAX_CACHE", "/tmp/vnsjax_test_jax_cache")


def env(devices: int = 1) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=CACHE,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
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


def run(workdir: Path, *overrides: str, devices: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        train_cmd(workdir, *overrides), cwd=ROOT, env=env(devices), capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def metrics(workdir: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl by step; a step logged twice (before a kill and after the resume) keeps its last entry."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def losses(workdir: Path) -> np.ndarray:
    m = metrics(workdir)
    return np.array(
        [[m[s][k] for k in ("loss", "loss_edge1", "loss_mask2", "loss_edge2", "loss_fusion_mask")] for s in sorted(m)]
    )
