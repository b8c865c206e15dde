"""`--precision` on every command that runs a model: accepted, applied, recorded in the output's metadata; a bad
value is one argparse usage error (exit 2), no traceback. (`vnsjax.train` takes `config.precision`:
tests/training/test_config_check.py, test_train.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_pipeline import synthetic
from vnsjax import evaluate, export, predict
from vnsjax.build_sam import build_sam
from vnsjax.demo import server
from vnsjax.demo.models import load_models
from vnsjax.model_dir import save_model
from vnsjax.modeling.precision import get_precision


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return save_model(build_sam("tiny", "sam", seed=0), tmp_path_factory.mktemp("sam"))


@pytest.mark.parametrize("cli", [predict.main, evaluate.main, export.main, server.main])
def test_bad_precision_is_a_usage_error(cli, sam_dir, tmp_path, capsys):
    argv = ["--checkpoint", str(sam_dir), "--precision", "fp16"]
    argv += {predict.main: ["--input", str(tmp_path)], evaluate.main: ["--data", str(tmp_path)]}.get(cli, [])
    argv += ["--out", str(tmp_path / "out")] if cli is not server.main else []
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    # argparse's own message (its quoting of the choices differs between Python versions).
    assert "argument --precision: invalid choice: 'fp16' (choose from" in err
    assert all(name in err.splitlines()[-1] for name in ("highest", "default", "bf16"))


@pytest.mark.slow
def test_predict_records_precision(sam_dir, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = [
        "--checkpoint",
        str(sam_dir),
        "--input",
        str(tmp_path / "a.png"),
        "--out",
        str(out),
        "--box",
        "5",
        "5",
        "60",
    ]
    assert predict.main([*argv, "50", "--precision", "bf16"]) == 0
    assert json.loads((out / "a.png.json").read_text())["precision"] == "bf16"
    assert predict.main([*argv, "50"]) == 0  # the default: the parity mode
    assert json.loads((out / "a.png.json").read_text())["precision"] == "highest"


def test_evaluate_records_precision(sam_dir, tmp_path):
    synthetic.generate(tmp_path / "data", 1, seed=0, subsets=["CAMO"])
    out = tmp_path / "out"
    argv = ["--checkpoint", str(sam_dir), "--data", str(tmp_path / "data"), "--subsets", "CAMO", "--out", str(out)]
    assert evaluate.main([*argv, "--precision", "bf16"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["precision"] == "bf16" and summary["models"][sam_dir.name]["all"]["iou"] >= 0.0


@pytest.mark.slow
def test_export_records_precision(sam_dir, tmp_path):
    bundle = tmp_path / "m.vnsjax"
    assert (
        export.main(["--checkpoint", str(sam_dir), "--out", str(bundle), "--platforms", "cpu", "--precision", "bf16"])
        == 0
    )
    exported = export.load_exported(bundle)
    assert exported.meta["precision"] == "bf16"
    features = exported.encode(np.zeros((256, 256, 3), np.float32))
    assert features["embedding"].dtype == np.float32  # the bundle's interface is the same at every precision


@pytest.mark.slow
def test_demo_models_carry_precision(sam_dir):
    assert server.build_parser().parse_args(["--precision", "bf16"]).precision == "bf16"
    (bf16,) = load_models([sam_dir], "bf16")
    (f32,) = load_models([sam_dir])
    assert (bf16.precision, f32.precision) == ("bf16", "highest")
    assert get_precision(f32.predictor.model) == "highest"
    info = server.DemoApp([bf16, f32]).info()
    assert [m["precision"] for m in info["models"]] == ["bf16", "highest"]
