"""`vnsjax.export` and `vnsjax.params` with bad options: one message, no traceback, checked before any work,
nothing the user owns replaced."""

from __future__ import annotations

import errno
import json
import zipfile
from pathlib import Path

import pytest

from vnsjax import export, params
from vnsjax.build_sam import build_sam
from vnsjax.model_dir import save_model


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return str(save_model(build_sam("tiny", "sam", seed=0), tmp_path_factory.mktemp("sam")))


@pytest.fixture
def fake_export(monkeypatch):
    """A fixed bundle instead of lowering the model: these tests are about the command, not the programs."""
    calls = []

    def export_model(model, *, platforms, hq_token_only):
        calls.append(platforms)
        return b"bundle"

    monkeypatch.setattr(export, "export_model", export_model)
    return calls


def _bundle(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.json", json.dumps({"format": export.FORMAT}))
    return path


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
    assert "vnsjax.json is missing" in capsys.readouterr().err
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

    monkeypatch.setattr(export.tempfile, "mkstemp", read_only)
    assert export.main(["--checkpoint", sam_dir, "--out", str(out), "--platforms", "cpu"]) == 1
    assert capsys.readouterr().err == f"error: cannot write {out}: Permission denied\n"
    assert len(fake_export) == 1  # the second run was refused before the export


def test_params_bad_depth(capsys):
    with pytest.raises(SystemExit) as exit_:
        params.main(["--model-type", "tiny", "--depth", "0"])
    assert exit_.value.code == 2 and "--depth must be at least 1, got 0" in capsys.readouterr().err
