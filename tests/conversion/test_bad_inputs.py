"""Converter bad inputs: the user's folders are never overwritten, odd checkpoints are refused with their name."""

import errno
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convert_weights.__main__ import main as convert_main
from vnsjax import MODEL_CONFIGS, load_model

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_sd() -> dict:
    from tests.torch_ref.sam import build_torch_sam

    return build_torch_sam(MODEL_CONFIGS["tiny"], seed=5).state_dict()


@pytest.fixture(scope="module")
def tiny_pth(tiny_sd, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(tiny_sd, path)
    return path


def _save(tmp_path: Path, name: str, sd: dict) -> Path:
    path = tmp_path / name
    torch.save(sd, path)
    return path


def _convert(capsys, *args: str) -> tuple[int, str, str]:
    rc = convert_main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the output folder


def test_user_folder_is_refused_and_untouched(tiny_pth, tmp_path, capsys):
    user = tmp_path / "mine"
    (user / "state").mkdir(parents=True)
    (user / "state" / "notes.txt").write_text("precious")
    (user / "photo.jpg").write_bytes(b"\xff\xd8")
    before = _tree(user)

    rc, _, err = _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(user))
    assert rc == 1
    assert f"--output {user} is not empty and holds no converted model" in err and "--overwrite" in err
    # Even --overwrite never replaces a state/ the converter did not write.
    rc, _, err = _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(user), "--overwrite")
    assert rc == 1 and f"{user / 'state'} exists and was not written by the converter" in err
    assert _tree(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left behind


@pytest.mark.slow
def test_overwrite_adds_only_the_converters_files(tiny_pth, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    rc, _, _ = _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(user), "--overwrite")
    assert rc == 0
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt", "state", "vnsjax.json"]
    assert (user / "notes.txt").read_text() == "precious"
    assert load_model(user).config == MODEL_CONFIGS["tiny"]


@pytest.mark.slow
def test_own_previous_output_is_replaced_keeping_other_files(tiny_sd, tiny_pth, tmp_path, capsys):
    out = tmp_path / "model"
    assert _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(out))[0] == 0
    (out / "README.txt").write_text("my notes")
    doubled = {k: v * 2 if v.is_floating_point() else v for k, v in tiny_sd.items()}
    other = _save(tmp_path, "other.pth", doubled)

    rc, _, _ = _convert(capsys, "--checkpoint", str(other), "--output", str(out))
    assert rc == 0
    token = np.asarray(load_model(out).mask_decoder.iou_token.embedding.get_value())
    np.testing.assert_array_equal(token, doubled["mask_decoder.iou_token.weight"].numpy())
    assert json.loads((out / "vnsjax.json").read_text())["source"]["checkpoint"] == "other.pth"
    assert (out / "README.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "other.pth"]


def test_output_that_is_a_file_or_under_a_file(tiny_pth, tmp_path, capsys):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    rc, _, err = _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(f))
    assert rc == 1 and f"--output {f} exists and is not a folder" in err
    rc, _, err = _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(f / "sub"))
    assert rc == 1 and f"--output {f / 'sub'}: {f} is a file, not a folder" in err
    assert f.read_bytes() == b"x" and len(err.strip().splitlines()) == 1


def test_read_only_parent_is_one_line(tiny_pth, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root ignores directory permissions: refuse creation under `parent` the way the OS would
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if parent in Path(self).absolute().parents:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    try:
        rc, _, err = _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(parent / "m"))
    finally:
        parent.chmod(0o755)
    assert rc == 1 and f"cannot write {parent / 'm'}: Permission denied" in err
    assert not (parent / "m").exists()


def _limit_file_size() -> None:
    # A file-size limit makes every large write fail with EFBIG, the same path a full disk (ENOSPC) takes.
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.slow  # a subprocess: imports torch and JAX afresh
def test_failed_write_is_one_line_and_leaves_the_previous_model(tiny_pth, tmp_path, capsys):
    out = tmp_path / "model"
    assert _convert(capsys, "--checkpoint", str(tiny_pth), "--output", str(out))[0] == 0
    before = _tree(out)
    proc = subprocess.run(
        [sys.executable, "-m", "convert_weights", "--checkpoint", str(tiny_pth), "--output", str(out)],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    # Before: 1,000+ lines of orbax worker tracebacks and `RuntimeError: Event loop is closed`.
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot write {out}: File too large (errno EFBIG); nothing was written"
    ]
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------- the checkpoint


def test_nan_and_inf_weights_are_refused_by_name(tiny_sd, tmp_path, capsys):
    sd = dict(tiny_sd)
    sd["mask_decoder.iou_token.weight"] = sd["mask_decoder.iou_token.weight"].clone()
    sd["mask_decoder.iou_token.weight"][0, :3] = float("nan")
    sd["image_encoder.pos_embed"] = sd["image_encoder.pos_embed"].clone()
    sd["image_encoder.pos_embed"][0, 0, 0, 0] = float("inf")
    path = _save(tmp_path, "nan.pth", sd)
    rc, _, err = _convert(capsys, "--checkpoint", str(path), "--output", str(tmp_path / "out"))
    assert rc == 1
    assert f"{path}: NaN or inf values in 2 tensor(s)" in err
    assert "mask_decoder.iou_token.weight (3 values)" in err and "image_encoder.pos_embed (1 values)" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_encoder_block_is_named_not_converted_as_custom(tiny_sd, tmp_path, capsys):
    last = {k: v for k, v in tiny_sd.items() if not k.startswith("image_encoder.blocks.7.")}
    path = _save(tmp_path, "no_block7.pth", last)
    rc, _, err = _convert(capsys, "--checkpoint", str(path), "--output", str(tmp_path / "a"))
    assert rc == 1
    assert (
        f"{path}: the encoder matches no known model type: found depth 7, width 32, 2 heads, global blocks [1, 3, 5]"
        in err
    )
    assert "the nearest, tiny, has depth 8" in err and "--model-type custom" in err
    assert not (tmp_path / "a").exists()
    # Asked for explicitly, the geometry converts and is recorded as custom.
    rc, out, _ = _convert(capsys, "--checkpoint", str(path), "--output", str(tmp_path / "b"), "--model-type", "custom")
    assert rc == 0 and "custom" in out
    assert load_model(tmp_path / "b").config.encoder_depth == 7

    middle = {k: v for k, v in tiny_sd.items() if not k.startswith("image_encoder.blocks.3.")}
    path = _save(tmp_path, "no_block3.pth", middle)
    rc, _, err = _convert(capsys, "--checkpoint", str(path), "--output", str(tmp_path / "c"), "--model-type", "custom")
    assert rc == 1 and f"{path}: encoder blocks [3] are missing" in err


def test_unused_sam_checkpoint_warns_and_is_not_recorded(tiny_pth, tmp_path, capsys, caplog):
    out = tmp_path / "m"
    with caplog.at_level("WARNING", logger="convert_weights"):
        rc, _, _ = _convert(
            capsys, "--checkpoint", str(tiny_pth), "--output", str(out), "--sam-checkpoint", str(tiny_pth)
        )
    assert rc == 0
    assert f"--sam-checkpoint {tiny_pth} is not used: this is a full sam checkpoint" in caplog.text
    source = json.loads((out / "vnsjax.json").read_text())["source"]
    assert "sam_checkpoint" not in source and source["checkpoint"] == tiny_pth.name


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unreadable_files_are_named(tiny_pth, tmp_path, capsys):
    data = tiny_pth.read_bytes()
    marker = tmp_path / "pwned"
    cases = {
        "junk.pth": (b"not a checkpoint", "not a PyTorch checkpoint"),
        "empty.pth": (b"", "the file is empty"),
        "truncated.pth": (
            data[: len(data) // 2],
            "not a PyTorch checkpoint, or a damaged/truncated one (PytorchStreamReader failed reading zip",
        ),
        "plain.pkl": (pickle.dumps({"x": 1}, protocol=4), "not a PyTorch checkpoint"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        rc, _, err = _convert(capsys, "--checkpoint", str(path), "--output", str(tmp_path / "out"))
        assert rc == 1 and f"error: {path}: {expected}" in err, (name, err)
        assert len(err.strip().splitlines()) == 1, err

    torch.save({"weight": _Exploit(marker)}, tmp_path / "exploit.pth")
    rc, _, err = _convert(capsys, "--checkpoint", str(tmp_path / "exploit.pth"), "--output", str(tmp_path / "out"))
    assert rc == 1 and f"{tmp_path / 'exploit.pth'}: refused: the file holds Python objects other than tensors" in err
    assert "system" in err and not marker.exists()  # never executed

    torch.save({"weights": [1, 2]}, tmp_path / "list.pth")
    rc, _, err = _convert(capsys, "--checkpoint", str(tmp_path / "list.pth"), "--output", str(tmp_path / "out"))
    assert rc == 1 and f"{tmp_path / 'list.pth'}: expected a state_dict of tensors, got dict" in err

    rc, _, err = _convert(capsys, "--checkpoint", str(tmp_path), "--output", str(tmp_path / "out"))
    assert rc == 1 and f"{tmp_path} is a folder; expected a PyTorch checkpoint file" in err
    assert not (tmp_path / "out").exists()
