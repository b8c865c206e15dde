"""`python -m vnsjax.experiments.miniature`: every row trains from the base through the trainer, the table equals the
JSON, and --out is only ever an earlier output of the command."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from vnsjax.build_sam import build_sam
from vnsjax.experiments import miniature
from vnsjax.model_dir import load_model, save_model, state_digest
from vnsjax.training.config_check import validate_config


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_model(build_sam("tiny", "sam", seed=3), tmp_path_factory.mktemp("base"))


# One row per kind of recipe file (no training, sam_finetune, hq_sam, vns_ablation, the released VNS-SAM recipe):
# the other rows' recipe files train in tests/training (test_recipes, test_train_ablations), and every row's
# config is checked below without training.
QUICK_MODELS = ("sam", "ft_token", "hq_sam", "vnst", "vns_sam")


@pytest.fixture(scope="module")
def quick_run(base_dir, tmp_path_factory):
    """One --quick run of QUICK_MODELS, its training runs kept in --workdir."""
    root = tmp_path_factory.mktemp("quick")
    out, work = root / "out", root / "work"
    models = ",".join(QUICK_MODELS)
    rc = miniature.main(
        ["--out", str(out), "--base", str(base_dir), "--quick", "--workdir", str(work), "--models", models]
    )
    assert rc == 0
    return out, work


def test_every_row_is_a_valid_run_of_its_recipe_file(base_dir, tmp_path):
    for key, row in miniature.ROWS.items():
        if not row.recipe:
            continue
        c = miniature.recipe_config(
            row.recipe, base=str(base_dir), model_type="tiny", data=str(tmp_path), seed=0, sizes=miniature.QUICK_SIZES
        )
        validate_config(c)  # the trainer's own check, before any work
        overrides = miniature.config_overrides(c, row.recipe)
        assert overrides["sam_checkpoint"] == str(base_dir) and overrides["num_train_steps"] == 2, key


def table(markdown: str, section: str) -> dict[str, list[str]]:
    """The rows of the table under `## {section}`: {first cell: [all cells]}, the header under "header"."""
    body = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|") and not line.startswith("|---")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {"header": rows[0], **{r[0]: r for r in rows[1:]}}


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", cell)]


def check_table_equals_json(out) -> dict:
    document = json.loads((out / "miniature.json").read_text())
    rows = table((out / "miniature.md").read_text(), "box prompt")
    header = rows["header"]
    groups, metrics = list(document["groups"]), document["metrics"]
    first = header.index("Seen IoU")
    assert header[first:] == [
        f"{g} {m}" if i == 0 else m
        for g in ("Seen", "Unseen", "Salient")
        for i, m in enumerate(("IoU", "BIoU", "Em", "wFm"))
    ]
    for key, entry in document["models"].items():
        cells = rows[entry["label"]]
        assert cells[header.index("Trainable params")].replace(",", "") == str(entry["trainable_params"])
        values = cells[first:]
        assert len(values) == len(groups) * len(metrics)
        for cell, (group, metric) in zip(values, [(g, m) for g in groups for m in metrics], strict=True):
            stats = entry["results"]["box"][group][metric]
            assert 0.0 <= stats["mean"] <= 1.0, (key, group, metric)
            shown = numbers(cell)
            assert shown[0] == pytest.approx(stats["mean"], abs=5e-4), (key, group, metric, cell)
            if stats["std"] is None:
                assert len(shown) == 1
            else:
                assert shown[1] == pytest.approx(stats["std"], abs=5e-4), (key, group, metric, cell)
    return document


@pytest.mark.slow
def test_rows_train_from_the_base_and_the_table_equals_the_json(quick_run, base_dir):
    out, work = quick_run
    assert sorted(p.name for p in out.iterdir()) == sorted(miniature.OUTPUTS)
    document = check_table_equals_json(out)
    assert list(document["models"]) == list(QUICK_MODELS)
    assert document["written_by"] == miniature.COMMAND
    # The paper's decoder-side counts do not depend on the encoder: the recipe's selection reached the trainer.
    params = {k: e["trainable_params"] for k, e in document["models"].items()}
    assert params["sam"] == 0 and params["ft_token"] == 560_256
    # Every trained model holds the base's encoder and prompt encoder, unchanged (loaded, and frozen by the recipe).
    base = state_digest(load_model(base_dir))
    for key in QUICK_MODELS:
        if key == "sam":
            continue
        trained = state_digest(load_model(work / "runs" / f"{key}_seed0" / "model"))
        assert trained["image_encoder"] == base["image_encoder"], key
        assert trained["prompt_encoder"] == base["prompt_encoder"], key
        assert document["models"][key]["train"][0]["seconds"] > 0
    # Every object of every evaluation subset was scored for every model.
    evaluated = document["data"]["evaluated"]
    assert set(evaluated) == {s for names in document["groups"].values() for s in names}
    lines = (out / "miniature_per_image.csv").read_text().splitlines()
    assert len(lines) - 1 == len(QUICK_MODELS) * sum(evaluated.values())
    image = np.asarray(Image.open(out / "miniature.png"))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0


@pytest.mark.slow
def test_rerun_into_the_same_out_replaces_the_earlier_outputs(quick_run, base_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(quick_run[0], out)
    rc = miniature.main(["--out", str(out), "--base", str(base_dir), "--quick", "--models", "sam"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(miniature.OUTPUTS)
    document = check_table_equals_json(out)
    assert list(document["models"]) == ["sam"]


@pytest.mark.slow
def test_several_seeds_give_mean_and_sample_spread(base_dir, tmp_path):
    out = tmp_path / "out"
    rc = miniature.main(
        ["--out", str(out), "--base", str(base_dir), "--quick", "--models", "sam,ft_token", "--seeds", "0,1"]
    )
    assert rc == 0
    document = check_table_equals_json(out)
    token = document["models"]["ft_token"]["results"]["box"]["seen"]["iou"]
    assert len(token["values"]) == 2
    assert token["mean"] == pytest.approx(sum(token["values"]) / 2)
    assert token["std"] == pytest.approx(abs(token["values"][0] - token["values"][1]) / math.sqrt(2))
    # The base does not depend on the training seed: evaluated once, no spread.
    assert document["models"]["sam"]["results"]["box"]["seen"]["iou"]["std"] is None
    assert [t["seed"] for t in document["models"]["ft_token"]["train"]] == [0, 1]


@pytest.mark.parametrize("content", ["foreign", "same_name"])
def test_out_with_files_it_did_not_write_is_refused_and_kept(base_dir, tmp_path, capsys, content):
    out = tmp_path / "out"
    out.mkdir()
    name = "notes.txt" if content == "foreign" else "miniature.md"
    (out / name).write_text("mine")
    rc = miniature.main(["--out", str(out), "--base", str(base_dir), "--quick"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and str(out) in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "mine"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--models", "sam,vns", "--models 'sam,vns': expected distinct comma-separated names from sam, "),
        ("--seeds", "0,x", "--seeds '0,x': expected distinct comma-separated integers >= 0"),
        ("--prompts", "box,box", "--prompts 'box,box': expected distinct"),
        ("--steps", "0", "--steps 0: expected an integer >= 1"),
        ("--base", "missing", "no such model directory"),
    ],
)
def test_bad_options_are_named(base_dir, tmp_path, capsys, option, value, expected):
    args = ["--out", str(tmp_path / "out"), "--base", str(base_dir), "--quick", option, value]
    if option == "--base":
        args[args.index(str(base_dir))] = str(tmp_path / value)
    assert miniature.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_base_must_be_a_sam_model(tmp_path, capsys):
    hq = save_model(build_sam("tiny", "hq", seed=0), tmp_path / "hq")
    assert miniature.main(["--out", str(tmp_path / "out"), "--base", str(hq), "--quick"]) == 2
    assert "expected a SAM model directory (variant sam), got hq" in capsys.readouterr().err
