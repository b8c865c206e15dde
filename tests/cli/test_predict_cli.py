"""`python -m vnsjax.predict`: prompts from the command line, from prompt files, automatic mode, bad images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_pipeline.synthetic import make_scene
from vnsjax.build_sam import build_sam
from vnsjax.model_dir import save_model
from vnsjax.predict import main


def _images(folder, n: int = 2) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        image, _ = make_scene("camouflage", rng)
        Image.fromarray(image[:120, :160]).save(folder / f"img{i}.png")
        names.append(f"img{i}")
    return names


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return save_model(build_sam("tiny", "sam", seed=0), tmp_path_factory.mktemp("sam"))


@pytest.mark.slow
def test_folder_prompt_file_amg_and_bad_image(sam_dir, tmp_path, capsys):
    data = tmp_path / "in"
    data.mkdir()
    names = _images(data)
    (data / "img0.json").write_text(json.dumps({"box": [20, 20, 100, 90], "points": [[50, 50, 1], [10, 100, 0]]}))
    (data / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(
        [
            "--checkpoint",
            str(sam_dir),
            "--input",
            str(data),
            "--out",
            str(out),
            "--points-per-side",
            "4",
            "--points-per-batch",
            "16",
            "--pred-iou-thresh",
            "0",
            "--stability-score-thresh",
            "0",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 1 and "broken.jpg" in cap.err and "2 of 3 images segmented; 1 failed" in cap.out

    rec0 = json.loads((out / "img0.png.json").read_text())
    assert rec0["mode"] == "prompt" and len(rec0["scores"]) == 1 and rec0["prompt"]["box"] == [20, 20, 100, 90]
    mask = np.asarray(Image.open(out / rec0["masks"][0]))
    assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
    vis = np.asarray(Image.open(out / "img0.png_overlay.png"))
    assert vis.shape == (120, 160, 3)
    assert tuple(vis[20, 60]) == (0, 255, 0)  # the box's top edge is drawn
    assert vis[50, 50, 1] > 150 and vis[50, 50, 0] < 100  # foreground point: green dot
    assert vis[100, 10, 0] > 150 and vis[100, 10, 1] < 100  # background point: red dot

    rec1 = json.loads((out / f"{names[1]}.png.json").read_text())
    assert rec1["mode"] == "automatic" and len(rec1["masks"]) == len(rec1["annotations"]) >= 1
    for name, ann in zip(rec1["masks"], rec1["annotations"], strict=True):
        m = np.asarray(Image.open(out / name)) > 0
        assert m.sum() == ann["area"]
    assert not (out / "broken.jpg.json").exists()


@pytest.mark.slow
def test_cli_prompt_multimask_and_vns(sam_dir, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    _images(data, 1)
    out = tmp_path / "out"
    args = ["--input", str(data / "img0.png"), "--points", "60,40,1", "--multimask"]
    assert main(["--checkpoint", str(sam_dir), "--out", str(out), *args]) == 0
    rec = json.loads((out / "img0.png.json").read_text())
    assert len(rec["masks"]) == 3 and rec["scores"] == sorted(rec["scores"], reverse=True)

    vns_dir = save_model(build_sam("tiny", "vns", seed=0), tmp_path / "vns")
    out = tmp_path / "out_vns"
    assert main(["--checkpoint", str(vns_dir), "--out", str(out), "--box", "10", "10", "90", "80", *args[:2]]) == 0
    rec = json.loads((out / "img0.png.json").read_text())
    assert rec["mode"] == "prompt" and len(rec["masks"]) == 1 and np.isfinite(rec["scores"][0])
