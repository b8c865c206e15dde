"""`python -m vnsjax.vns_score` on a subset with a truncated JPEG: named, counted, skipped, exit status 1."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vnsjax.evaluation import vns_score as V

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def camo(tmp_path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(7)
    images, masks = tmp_path / "COD/TestDataset/CAMO/Imgs", tmp_path / "COD/TestDataset/CAMO/GT"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for k in range(3):
        image = cv2.GaussianBlur(rng.integers(0, 256, (80, 96, 3)).astype(np.uint8), (5, 5), 1.0)
        mask = np.zeros((80, 96), np.uint8)
        cv2.ellipse(mask, (48, 40), (20 + 3 * k, 15), 0, 0, 360, 255, -1)
        cv2.imwrite(str(images / f"camo{k}.jpg"), image)
        cv2.imwrite(str(masks / f"camo{k}.png"), mask)
    bad = images / "camo1.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(bad)) is not None  # cv2 decodes it partially; it used to be scored as valid
    return tmp_path, bad, masks


def test_truncated_jpeg_is_named_counted_and_skipped(camo, tmp_path, capsys):
    root, bad, _ = camo
    out = tmp_path / "scores.csv"
    summary = V.main(["--data", str(root), "--subset", "CAMO", "--out", str(out)])
    err = capsys.readouterr().err
    assert summary["failed"] == 1 and summary["total"] == 2
    assert f"skipped 1 unreadable file(s):\n  {bad}: truncated (" in err
    assert [r["file"] for r in csv.DictReader(out.read_text().splitlines())] == ["camo0.jpg", "camo2.jpg"]


def test_mismatched_mask_and_folder_mode(camo, capsys):
    root, bad, masks = camo
    cv2.imwrite(str(masks / "camo2.png"), np.zeros((10, 10), np.uint8))
    summary = V.main(["--images", str(bad.parent), "--masks", str(masks)])
    err = capsys.readouterr().err
    assert summary["failed"] == 2 and summary["total"] == 1
    assert f"{bad}: truncated" in err and f"{masks / 'camo2.png'}: mask is (10, 10), image " in err


@pytest.mark.slow
def test_exit_status_is_non_zero(camo):
    root, bad, _ = camo
    proc = subprocess.run(
        [sys.executable, "-m", "vnsjax.vns_score", "--data", str(root), "--subset", "CAMO"],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "CAMO: 2/2 valid" in proc.stdout and f"{bad}: truncated" in proc.stderr
    assert "Traceback" not in proc.stderr
