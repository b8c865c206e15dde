"""The device benchmark's code paths, run on the tiny model on CPU; the analytic FLOP count it reports MFU with."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.flops import encoder_flops, peak_flops

ROOT = Path(__file__).resolve().parents[2]


def test_encoder_flops_match_the_hand_count():
    # SAM's published-size encoders, counted by hand per layer (multiply-adds x 2, window padding 64 -> 70):
    # ViT-B 486.0 GMAC, ViT-L 1,492.8 GMAC, ViT-H 2,980.5 GMAC.
    for model_type, gmac in (("vit_b", 486.0), ("vit_l", 1492.8), ("vit_h", 2980.5)):
        assert encoder_flops(model_type) / 2e9 == pytest.approx(gmac, rel=2e-4)


def test_peak_flops_by_device_kind():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_flops("TPU v5 lite") == pytest.approx(197e12)
    assert peak_flops("TPU v5p") == pytest.approx(459e12)  # not "TPU v5 lite"'s entry
    assert peak_flops("cpu") is None


@pytest.mark.slow
def test_device_benchmark_smoke_runs_every_row():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.device", "--smoke", "--iters", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # a guard against a hang, not a speed check: compiling the train step is slow on a busy CPU
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "tiny" in line]
    assert [r.split("|")[1].split(",")[0].strip() for r in rows] == [
        "SAM tiny encoder",
        "SAM tiny encoder",
        "VNS-SAM tiny end to end (1 box/image)",
        "VNS-SAM tiny train step (frozen encoder bf16)",
    ]
    for row in rows:
        ips = float(row.split("|")[2])
        assert ips > 0
        # bf16 vs float32 on the randomised tiny model: bf16's 8-bit mantissa (relative rounding 2^-9 per
        # operand) accumulated over the encoder's ~10 matmul layers stays within a few percent.
        err = float(re.search(r"([0-9.]+e[-+][0-9]+) \|$", row).group(1))
        assert 0 < err < 5e-2, row
