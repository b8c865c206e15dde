"""Each VNS ablation decoder trains from `python -m vnsjax.train --config configs/vns_ablation.py:<name>,smoke`,
with the loss terms that exist for it."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from configs import vns_ablation
from tests.training import train_util as tu
from vnsjax.model_dir import load_model
from vnsjax.train import train

ALL_TERMS = {"loss_edge1", "loss_mask2", "loss_edge2", "loss_fusion_mask"}


def test_config_variants():
    c = vns_ablation.get_config("no_nsfm,vit_b")
    assert (c.variant, c.model_type) == ("vns_no_nsfm", "vit_b")
    assert vns_ablation.get_config("gate").model_type == "vit_l"
    smoke = vns_ablation.get_config("mt,smoke")
    assert (smoke.variant, smoke.model_type) == ("vns_mt", "tiny")
    for bad in ("", "smoke", "no_nsfm,gate", "nsfm_off", "gate,vit_x"):
        with pytest.raises(ValueError, match="VARIANT"):
            vns_ablation.get_config(bad)


# One variant per kind of change: no edge head (mt), no intermediate stage and no fusion (vnst), an extra edge
# fusion (mpl_mpl), a different NSFM (no_wd), gated token fusion (gate).
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, terms",
    [
        ("mt", {"loss_mask2", "loss_fusion_mask"}),
        ("vnst", {"loss_edge1", "loss_fusion_mask"}),
        ("mpl_mpl", ALL_TERMS),
        ("no_wd", ALL_TERMS),
        ("gate", ALL_TERMS),
    ],
)
def test_ablation_trains_from_its_config(tmp_path, name, terms):
    cmd = tu.train_cmd(tmp_path, config=f"configs/vns_ablation.py:{name},smoke")
    proc = subprocess.run(cmd, cwd=tu.ROOT, env=tu.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "event" not in r]  # the run's start line
    assert len(rows) == 2
    for row in rows:
        assert {k for k in row if k.startswith("loss_")} == terms
        assert abs(row["loss"] - sum(row[k] for k in terms)) <= 1e-5 * max(1.0, abs(row["loss"]))
    # The trained model directory loads back as the same decoder (predictors, evaluate and export read it).
    model = load_model(tmp_path / "model")
    assert model.variant == f"vns_{name}"


# The other six, in-process through the same `train()` the command line calls (no subprocess start-up per variant).
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, terms",
    [
        ("no_nsfm", ALL_TERMS),
        ("vnst_nsfm", {"loss_edge1", "loss_fusion_mask"}),
        ("epl_epl", ALL_TERMS),
        ("no_tf", ALL_TERMS),
        ("hf_only", ALL_TERMS),
        ("lf_only", ALL_TERMS),
    ],
)
def test_remaining_ablations_train(tmp_path, name, terms):
    config = vns_ablation.get_config(f"{name},smoke")
    config.eval_every_steps = 0
    result = train(config, tmp_path)
    rows = list(tu.metrics(tmp_path).values())
    assert result["step"] == config.num_train_steps == len(rows)
    for row in rows:
        assert {k for k in row if k.startswith("loss_")} == terms and np.isfinite(row["loss"])
    assert load_model(tmp_path / "model").variant == f"vns_{name}"
