"""`python -m vnsjax.predict` with bad inputs: nothing the user owns is overwritten, each bad image or prompt
file is named, counted and skipped, and bad options are one message before any work."""

from __future__ import annotations

import errno
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vnsjax import predict
from vnsjax.build_sam import build_sam
from vnsjax.model_dir import save_model
from vnsjax.predict import MANIFEST, main


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return str(save_model(build_sam("tiny", "sam", seed=0), tmp_path_factory.mktemp("sam")))


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _folder(path: Path, names=("img0.png", "img1.png")) -> Path:
    path.mkdir()
    for i, name in enumerate(names):
        Image.fromarray(_image(i)).save(path / name)
    return path


def _listing(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A 100-byte PNG whose header declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _forbid_model_loading(monkeypatch) -> None:
    """Fails the test if the model is loaded: the refusals under test must come before any work."""

    def load_model(directory):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("vnsjax.model_dir.load_model", load_model)


@pytest.fixture
def no_model(monkeypatch):
    _forbid_model_loading(monkeypatch)


@pytest.fixture
def fake_segment(monkeypatch):
    """Segmentation replaced by a fixed record: these tests are about where files go, not about masks."""

    def segment(path, image, predictor, amg, prompt, multimask):
        return {f"{path.name}_mask0.png": b"mask", f"{path.name}.json": json.dumps({"image": str(path)}).encode()}

    monkeypatch.setattr(predict, "segment", segment)


def _run(sam_dir, inp, out, *extra) -> int:
    return main(
        ["--checkpoint", sam_dir, "--input", str(inp), "--out", str(out), "--box", "1", "1", "30", "30", *extra]
    )


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_in_the_input_folder_is_refused(sam_dir, tmp_path, capsys, no_model, where):
    data = _folder(tmp_path / "in")
    (data / "img0.json").write_text('{"box": [1, 2, 30, 40]}')
    before = _listing(data)
    out = data if where == "same" else data / "seg"
    assert main(["--checkpoint", sam_dir, "--input", str(data), "--out", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} is") and "outputs never go beside or among the inputs" in err
    assert _listing(data) == before  # not even the manifest or the out folder was written


def test_foreign_folder_needs_overwrite_and_keeps_user_files(sam_dir, tmp_path, capsys, fake_segment):
    data = _folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "img0.png.json").write_text("my own file")
    assert _run(sam_dir, data, out) == 1
    assert "is not empty and was not written by vnsjax.predict" in capsys.readouterr().err
    assert _listing(out) == {"img0.png.json": b"my own file", "notes.txt": b"mine"}

    # --overwrite: img0's outputs would replace a user file, so img0 fails and nothing of it is written.
    assert _run(sam_dir, data, out, "--overwrite") == 1
    cap = capsys.readouterr()
    assert f"{out / 'img0.png.json'} exists and was not written by vnsjax.predict; it is kept" in cap.err
    assert "1 of 2 images segmented; 1 failed" in cap.out
    files = _listing(out)
    assert files["img0.png.json"] == b"my own file" and files["notes.txt"] == b"mine"
    assert "img0.png_mask0.png" not in files and "img1.png_mask0.png" in files
    assert json.loads(files[MANIFEST])["files"] == ["img1.png.json", "img1.png_mask0.png"]


@pytest.mark.slow
def test_own_previous_output_is_replaced_and_names_are_unique(sam_dir, tmp_path, capsys, fake_segment):
    data = _folder(tmp_path / "in", ("a.jpg", "a.png"))
    out = tmp_path / "out"
    assert _run(sam_dir, data, out) == 0
    assert "2 of 2 images segmented; 0 failed" in capsys.readouterr().out
    # a.jpg and a.png: one set of outputs each.
    assert json.loads((out / "a.jpg.json").read_text())["image"] == str(data / "a.jpg")
    assert json.loads((out / "a.png.json").read_text())["image"] == str(data / "a.png")
    (out / "a.png.json").write_text("stale")
    assert _run(sam_dir, data, out) == 0  # our own folder: no --overwrite needed, our files replaced
    assert json.loads((out / "a.png.json").read_text())["image"] == str(data / "a.png")


def test_disk_full_and_read_only_out_are_one_line(sam_dir, tmp_path, capsys, monkeypatch, fake_segment):
    data = _folder(tmp_path / "in")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", full)
        assert _run(sam_dir, data, tmp_path / "out") == 1
    cap = capsys.readouterr()
    assert f"error: cannot write {tmp_path / 'out' / 'img0.png_mask0.png'}: No space left on device" in cap.err
    assert "0 of 2 images segmented; 2 failed" in cap.out and "Traceback" not in cap.err

    def read_only(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(predict.os, "replace", read_only)
    _forbid_model_loading(monkeypatch)
    assert _run(sam_dir, data, tmp_path / "ro") == 1
    assert capsys.readouterr().err == f"error: cannot write to --out {tmp_path / 'ro'}: Permission denied\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--points-per-side", "0"], "--points-per-side must be at least 1, got 0"),
        (["--points-per-batch", "-3"], "--points-per-batch must be at least 1, got -3"),
        (["--pred-iou-thresh", "nan"], "--pred-iou-thresh must be in [0, 1], got nan"),
        (["--crop-n-layers", "-1"], "--crop-n-layers must be 0 or more, got -1"),
        (["--box", "nan", "0", "10", "10"], "--box: expected [x0, y0, x1, y1], four finite numbers, got [NaN"),
        (["--box", "10", "0", "5", "10"], "--box: expected x0 <= x1 and y0 <= y1"),
        (["--points", "1,inf,1"], "point coordinates must be finite numbers, got '1,inf,1'"),
        (["--points", "1,2,-5"], "point label must be 1 (foreground) or 0 (background), got '1,2,-5'"),
    ],
)
def test_bad_options_are_one_message(sam_dir, tmp_path, capsys, no_model, args, expected):
    data = _folder(tmp_path / "in", ("a.png",))
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", sam_dir, "--input", str(data), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_model_dir_and_impossible_options(sam_dir, tmp_path, capsys, no_model):
    data = _folder(tmp_path / "in", ("a.png",))
    assert main(["--checkpoint", str(tmp_path / "none"), "--input", str(data), "--out", str(tmp_path / "o")]) == 1
    assert f"error: {tmp_path / 'none'}: no such model directory" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "vnsjax.json").write_text("{not json")
    assert main(["--checkpoint", str(corrupt), "--input", str(data), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {corrupt / 'vnsjax.json'}: not a readable vnsjax.json") and err.count("\n") == 1
    assert main(["--checkpoint", sam_dir, "--input", str(data), "--output", "vns", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"error: --output chooses among VNS-SAM's masks; {sam_dir} is a sam model\n"
    assert not (tmp_path / "o").exists()


BAD_PROMPTS = {
    "null": ("null", 'expected {"box": [x0, y0, x1, y1]} and/or {"points": [[x, y, label], ...]}, got NoneType'),
    "list": ("[[1, 2, 1]]", "got list [[1, 2, 1]]"),
    "empty": ("{}", "no prompt"),
    "typo": ('{"boxes": [1, 2, 30, 40]}', "unknown field(s) 'boxes'"),
    "dictbox": ('{"box": {"x0": 1, "y0": 2, "x1": 30, "y1": 40}}', "field 'box': expected [x0, y0, x1, y1]"),
    "nanbox": ('{"box": [NaN, 2, 30, 40]}', "field 'box': expected [x0, y0, x1, y1], four finite numbers"),
    "neglabel": ('{"points": [[10, 10, -5]]}', "field 'points': point 0: label must be 1 (foreground) or 0"),
    "nullbox": ('{"box": null, "points": [[10, 10, 1]]}', "field 'box': expected [x0, y0, x1, y1]"),
    "syntax": ('{"box": [1, 2,', "not a readable JSON prompt file"),
}


@pytest.mark.slow
def test_folder_run_skips_bad_images_and_prompt_files(sam_dir, tmp_path, capsys):
    data = _folder(tmp_path / "in", ("a.jpg", "a.png", *(f"{name}.png" for name in BAD_PROMPTS)))
    prompt = '{"box": [4, 4, 40, 30], "points": [[20, 20, 1]]}'
    for name in ("a", "sixteen", "float"):
        (data / f"{name}.json").write_text(prompt)
    for name, (text, _) in BAD_PROMPTS.items():
        (data / f"{name}.json").write_text(text)
    png = io.BytesIO()
    Image.fromarray(_image()).save(png, format="PNG")
    (data / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (data / "broken.jpg").write_bytes(b"not an image")
    (data / "bomb.png").write_bytes(_bomb_png())
    # Converted as data_pipeline.read_image documents: 16-bit grey / 257, float grey in [0, 1] * 255.
    Image.fromarray(np.full((48, 64), 40000, np.uint16)).save(data / "sixteen.png")
    Image.fromarray(np.full((48, 64), 0.5, np.float32)).save(data / "float.tiff")
    Image.fromarray(np.full((48, 64), 2.0, np.float32)).save(data / "float_big.tiff")
    bad_images = {
        "truncated.png": "truncated (OSError: image file is truncated",
        "broken.jpg": "not a readable image",
        "bomb.png": "refused: it declares 400000000 pixels",
        "float_big.tiff": "float image with values in [2, 2]; only floats in [0, 1] are read (scaled by 255)",
    }
    out = tmp_path / "out"
    assert main(["--checkpoint", sam_dir, "--input", str(data), "--out", str(out)]) == 1
    cap = capsys.readouterr()
    n_bad = len(BAD_PROMPTS) + len(bad_images)
    assert f"4 of {n_bad + 4} images segmented; {n_bad} failed" in cap.out
    assert "Traceback" not in cap.err
    lines = [line[len("failed: ") :] for line in cap.err.splitlines() if line.startswith(f"failed: {data}")]
    reasons = dict(line.split(": ", 1) for line in lines)
    for name, (_, message) in BAD_PROMPTS.items():
        assert message in reasons[f"{data / name}.json"]
    for name, message in bad_images.items():
        assert message in reasons[str(data / name)]
    prompt_files = ["a.json", "float.json", "sixteen.json", *(f"{n}.json" for n in BAD_PROMPTS)]
    assert sorted(p.name for p in data.iterdir() if p.suffix == ".json") == sorted(prompt_files)

    def strict(value):
        raise AssertionError(f"{value} in JSON output")

    for name in ("a.jpg", "a.png", "sixteen.png", "float.tiff"):
        record = json.loads((out / f"{name}.json").read_text(), parse_constant=strict)
        assert record["image"] == str(data / name) and record["prompt"]["box"] == [4.0, 4.0, 40.0, 30.0]
        assert (out / f"{name}_mask0.png").is_file() and (out / f"{name}_overlay.png").is_file()
    for name, grey in (("sixteen.png", round(40000 / 257)), ("float.tiff", round(0.5 * 255))):
        # Untinted overlay pixels (outside the mask, away from the drawn box) are the image the model was given.
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))
        clear = np.asarray(Image.open(out / f"{name}_mask0.png")) == 0
        clear[:36, :46] = False
        assert clear.any() and (overlay[clear] == grey).all()
    written = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(written) == sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
