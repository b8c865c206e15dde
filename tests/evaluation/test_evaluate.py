"""End to end: `python -m vnsjax.evaluate` on synthetic VNS-SEG with a converted torch SAM and a VNS model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from data_pipeline import pipeline, synthetic, vns_seg
from tests.tolerance import assert_close
from vnsjax import evaluate as evaluate_cli
from vnsjax.build_sam import MODEL_CONFIGS, build_sam
from vnsjax.evaluation import metrics as M
from vnsjax.evaluation import runner as E
from vnsjax.model_dir import save_model
from vnsjax.modeling.common import resize_bilinear
from vnsjax.modeling.sam import Sam

SUBSETS = ["CAMO", "Kvasir", "ETIS"]  # two seen, one unseen
NUM = 3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vns_seg")
    synthetic.generate(root, NUM, seed=0, subsets=SUBSETS)
    # One corrupt image: it must be reported by name and counted, not skipped.
    spec = vns_seg.SUBSETS["Kvasir"]
    bad = sorted((root / spec.im_dir).glob("*" + spec.im_ext))[1]
    bad.write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from convert_weights.__main__ import main as convert_main
    from tests.torch_ref.sam import build_torch_sam

    tmp = tmp_path_factory.mktemp("ckpt")
    pth = tmp / "sam_tiny.pth"
    torch.save(build_torch_sam(MODEL_CONFIGS["tiny"], "sam", seed=0).state_dict(), pth)
    sam_dir = tmp / "sam_tiny"
    assert convert_main(["--checkpoint", str(pth), "--output", str(sam_dir), "--model-type", "tiny"]) == 0
    vns_dir = save_model(_random_model("tiny", "vns", seed=1), tmp / "vns_tiny")
    return {"sam_tiny": sam_dir, "vns_tiny": vns_dir}


def _random_model(model_type: str, variant: str, seed: int) -> Sam:
    """build_sam's structure with seeded random values, without running its initialisers.

    Building the tiny VNS model eagerly takes over a minute on a loaded 2-core machine; eval_shape takes seconds.
    """
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_sam(model_type, variant)))
    rng = np.random.default_rng(seed)

    def fill(path: tuple, x: jax.ShapeDtypeStruct) -> np.ndarray:
        name = path[-1].key
        if name in ("scale", "var"):  # norm scales, BN running variances: positive, near 1
            return rng.uniform(0.8, 1.2, x.shape).astype(x.dtype)
        if len(x.shape) <= 1:
            return (0.1 * rng.normal(size=x.shape)).astype(x.dtype)
        return (rng.normal(size=x.shape) / np.sqrt(np.prod(x.shape[:-1]))).astype(x.dtype)

    pure = jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


class OraclePredictor:
    """Returns the ground truth as logits: the rest of the pipeline (loading, records, report) is the real one."""

    image_size = MODEL_CONFIGS["tiny"].img_size

    def __call__(self, examples):
        return [np.where(ex["mask"] > 128, 10.0, -10.0).astype(np.float32) for ex in examples]


@pytest.mark.slow
def test_cli_side_by_side(data_root: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    argv = [
        "--data",
        str(data_root),
        "--subsets",
        *SUBSETS,
        "--prompt",
        "noise_box",
        "--batch-size",
        "2",
        "--results-fusion",
        "--out",
        str(out),
    ]
    for d in checkpoints.values():
        argv += ["--checkpoint", str(d)]
    assert evaluate_cli.main(argv) == 0
    printed = capsys.readouterr()

    table = (out / "results.md").read_text()
    assert table in printed.out
    header, _, *rows = table.split("\n\n")[0].splitlines()
    assert header.startswith("| Model | CAMO IoU | BIoU | Em | wFm | Kvasir IoU |") and "Seen IoU" in header
    assert [r.split(" | ")[0] for r in rows] == ["| sam_tiny", "| vns_tiny"]
    assert "failed images (excluded) Kvasir 1" in table

    summary = json.loads((out / "results.json").read_text())
    assert set(summary["models"]) == set(checkpoints)
    for res in summary["models"].values():
        assert list(res["subsets"]) == SUBSETS
        assert res["subsets"]["Kvasir"] == res["subsets"]["Kvasir"] | {"count": NUM - 1, "failed": 1}
        assert res["seen"]["subsets"] == ["CAMO", "Kvasir"] and res["unseen"]["subsets"] == ["ETIS"]
        for m in ("iou", "em", "wfm"):
            assert 0.0 <= res["subsets"]["CAMO"][m] <= 1.0
    (failure,) = summary["failed"]
    assert failure["subset"] == "Kvasir" and failure["file"] in printed.err

    with (out / "results_per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * NUM * len(SUBSETS)
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 2 and {r["file"] for r in bad} == {failure["file"]}


def test_oracle_scores_perfect(data_root: Path) -> None:
    summary, records = E.evaluate({"oracle": OraclePredictor()}, data_root, SUBSETS, "box", progress=False)
    ok = [r for r in records if not r["error"]]
    assert len(ok) == NUM * len(SUBSETS) - 1
    refs = {ref.name: ref for ref in vns_seg.scan(data_root, SUBSETS, check_sizes=False).examples}
    for r in ok:
        assert r["iou"] == 1.0 and r["biou"] == 1.0 and r["wfm"] == 1.0 and r["dice"] == 1.0
        # PySODMetrics' meanEm of a perfect map (tests/test_metrics.py): 255 thresholds give N / (N - 1),
        # threshold 0 (everything foreground) a quarter of that.
        n = vns_seg.load_example(refs[r["file"]], with_boundary=False)["mask"].size
        assert r["em"] == pytest.approx((255 + 0.25) / 256 * n / (n - 1), abs=1e-12)
    res = summary["models"]["oracle"]
    assert res["seen"]["iou"] == 1.0 and res["unseen"]["wfm"] == 1.0
    assert summary["failed"][0]["subset"] == "Kvasir"


def test_prompts_match_eval_dataset_and_model_size(data_root: Path) -> None:
    """Evaluation's per-image preparation is `make_eval_dataset`'s (same seeds), at the model's input size."""
    ref = vns_seg.scan(data_root, "CAMO").examples[2]
    loaded = E._load(ref, 2, [256, 1024], seed=42, num_points=10)
    want = pipeline.make_eval_dataset(data_root, "CAMO", seed=42)[2]
    np.testing.assert_array_equal(loaded.examples[1024]["points"], want["points"])
    np.testing.assert_array_equal(loaded.examples[1024]["noise_box"], want["noise_box"])
    small = loaded.examples[256]
    assert small["image1024"].shape == (256, 256, 3) and (small["noise_box"] <= 256).all()
    assert small["box"][2] <= 255 and (small["points"] < 256).all()


def test_upsampling_matches_jax_resize() -> None:
    """Host upsampling of the low-res logits = the model's own torch-semantics bilinear (no antialias)."""
    low = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32) * 5
    host = E.upsample_logits(low, (333, 517))
    dev = np.asarray(resize_bilinear(jax.numpy.asarray(low)[None, :, :, None], 333, 517))[0, :, :, 0]
    assert_close(host, dev, rel=1e-5)  # two float32 bilinear implementations: rounding of the weights differs
    assert M.iou(host, np.where(dev > 0, 255, 0).astype(np.uint8)) > 0.999
