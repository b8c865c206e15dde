"""`vnsjax.export`, `vnsjax.params` and `vnsjax.vns_score` with bad options: one message, no traceback, checked
before any work, nothing the user owns replaced."""

from __future__ import annotations

import csv
import errno
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vnsjax import export, params
from vnsjax.build_sam import build_sam
from vnsjax.evaluation import vns_score
from vnsjax.model_dir import save_model


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return str(save_model(build_sam("tiny", "sam", seed=0), tmp_path_factory.mktemp("sam")))


@pytest.fixture
def fake_export(monkeypatch):
    """A fixed bundle instead of lowering the model: these tests are about the command, not the programs."""
    calls = []

    def export_model(model, *, platforms, hq_token_only, precision):
        calls.append(platforms)
        return b"bundle"

    monkeypatch.setattr(export, "export_model", export_model)
    return calls


def _bundle(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.json", json.dumps({"format": export.FORMAT}))
    return path


@pytest.mark.slow
def test_export_out_is_checked_before_any_work(sam_dir, tmp_path, capsys, fake_export):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    assert export.main(["--checkpoint", sam_dir, "--out", str(mine)]) == 1
    assert capsys.readouterr().err == (
        f"error: --out {mine} exists and is not a vnsjax export bundle; it is kept, choose another name\n"
    )
    assert export.main(["--checkpoint", sam_dir, "--out", str(tmp_path)]) == 1
    assert "is not a vnsjax export bundle" in capsys.readouterr().err
    assert mine.read_text() == "mine" and not fake_export

    old = _bundle(tmp_path / "old.vnsjax")  # an earlier bundle is replaced
    assert export.main(["--checkpoint", sam_dir, "--out", str(old), "--platforms", "cpu"]) == 0
    assert old.read_bytes() == b"bundle" and fake_export == [("cpu",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old.vnsjax"]  # no temporary file left


def test_export_bad_options(sam_dir, tmp_path, capsys, fake_export):
    out = str(tmp_path / "m.vnsjax")
    assert export.main(["--checkpoint", str(tmp_path / "none"), "--out", out]) == 1
    assert f"error: {tmp_path / 'none'}: no such model directory" in capsys.readouterr().err
    assert export.main(["--checkpoint", sam_dir, "--out", out, "--hq-token-only"]) == 1
    assert capsys.readouterr().err == f"error: --hq-token-only applies to HQ-SAM models; {sam_dir} is a sam model\n"
    with pytest.raises(SystemExit) as exit_:
        export.main(["--checkpoint", sam_dir, "--out", out, "--platforms", "cpu,gpu"])
    assert exit_.value.code == 2
    assert (
        "--platforms takes a comma-separated subset of cpu, cuda, rocm, tpu, got 'cpu,gpu'" in capsys.readouterr().err
    )
    assert not fake_export and list(tmp_path.iterdir()) == []


def test_export_unwritable_and_disk_full(sam_dir, tmp_path, capsys, monkeypatch, fake_export):
    out = tmp_path / "m.vnsjax"

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", full)
        assert export.main(["--checkpoint", sam_dir, "--out", str(out), "--platforms", "cpu"]) == 1
    assert capsys.readouterr().err == f"error: cannot write {out}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []  # no half bundle, no temporary file

    def read_only(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("vnsjax.utils.outputs.tempfile.mkstemp", read_only)
    assert export.main(["--checkpoint", sam_dir, "--out", str(out), "--platforms", "cpu"]) == 1
    assert capsys.readouterr().err == f"error: cannot write {out}: Permission denied\n"
    assert len(fake_export) == 1  # the second run was refused before the export


def test_params_bad_depth(capsys):
    with pytest.raises(SystemExit) as exit_:
        params.main(["--model-type", "tiny", "--depth", "0"])
    assert exit_.value.code == 2 and "--depth must be at least 1, got 0" in capsys.readouterr().err


@pytest.fixture
def score_folders(tmp_path):
    images, masks = tmp_path / "Imgs", tmp_path / "GT"
    images.mkdir()
    masks.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 12:28] = 255
    Image.fromarray(image).save(images / "a.png")
    Image.fromarray(mask).save(masks / "a.png")
    return ["--images", str(images), "--masks", str(masks)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--images", "nowhere", "--masks", "nowhere"], "--images nowhere is not a folder"),
        (["--threshold", "nan"], "--threshold must be a finite number, got nan"),
    ],
)
def test_vns_score_bad_options(score_folders, capsys, args, expected):
    with pytest.raises(SystemExit) as exit_:
        vns_score.main([*score_folders, *args])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


def test_vns_score_out(score_folders, tmp_path, capsys, monkeypatch):
    mine = tmp_path / "notes.csv"
    mine.write_text("name,age\n")
    with pytest.raises(SystemExit) as exit_:
        vns_score.main([*score_folders, "--out", str(mine)])
    assert exit_.value.code == 1
    assert capsys.readouterr() == (
        "",
        f"error: --out {mine} exists and is not a vns_score CSV; it is kept, choose another name\n",
    )
    assert mine.read_text() == "name,age\n"

    out = tmp_path / "scores.csv"
    out.write_text("file,score\nold.png,0.5\n")  # an earlier output is replaced
    vns_score.main([*score_folders, "--out", str(out)])
    assert [r["file"] for r in csv.DictReader(out.read_text().splitlines())] == ["a.png"]

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(SystemExit) as exit_:
        vns_score.main([*score_folders, "--out", str(out)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: cannot write {out}: No space left on device\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["GT", "Imgs", "notes.csv", "scores.csv"]


def test_evaluate_out_is_checked_before_any_work(sam_dir, tmp_path, capsys):
    """--out that is a user's file, or a folder of the user's files, stops the run before a model is loaded."""
    from vnsjax import evaluate

    user_file = tmp_path / "results"
    user_file.write_text("mine")
    missing_data = tmp_path / "no-such-data"  # would fail later: the --out check must come first
    assert evaluate.main(["--checkpoint", str(sam_dir), "--data", str(missing_data), "--out", str(user_file)]) == 1
    assert f"--out {user_file} exists and is not a directory" in capsys.readouterr().err
    assert user_file.read_text() == "mine"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    assert evaluate.main(["--checkpoint", str(sam_dir), "--data", str(missing_data), "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and "Traceback" not in err
    assert (folder / "notes.txt").read_text() == "keep"
