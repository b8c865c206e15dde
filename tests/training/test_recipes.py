"""Training recipes (docs/training.md#recipes): parameter counts against the reference, what trains and has optimizer
state, every recipe's smoke run through the CLI with its frozen part bit-identical, and its model directory loading."""

from __future__ import annotations

import re
import subprocess

import jax
import numpy as np
import pytest
from flax import nnx

from configs import demo, hq_sam, sam_finetune, vit_l
from tests.training import train_util as tu
from vnsjax import SamPredictor, params
from vnsjax.model_dir import load_model
from vnsjax.training import sharding
from vnsjax.training import state as ts
from vnsjax.training.config_check import ConfigError, validate_config

# (config, expected trainable parameters). The SAM and HQ-SAM counts are those of the official code's recipes
# (FT-Decoder, FT-Token, FT-Encoder & Decoder, HQ-SAM's new modules); adapters add depth * (2 d h + h + d), h = d/4.
COUNTS = [
    ("configs/sam_finetune.py:decoder,vit_l", 3_925_472),
    ("configs/sam_finetune.py:decoder,vit_b", 3_925_472),
    ("configs/sam_finetune.py:token,vit_l", 560_256),
    ("configs/sam_finetune.py:token,vit_b", 560_256),
    ("configs/sam_finetune.py:encoder_decoder,vit_l", 312_342_832),
    ("configs/sam_finetune.py:encoder_decoder,vit_b", 93_735_472),
    ("configs/sam_finetune.py:adapter,decoder,vit_b", 3_925_472 + 3_550_464),
    ("configs/hq_sam.py:vit_l", 1_333_248),
    ("configs/hq_sam.py:vit_b", 1_071_104),
    ("configs/vit_l.py", 2_574_922),
    ("configs/vit_b.py:adapter", 2_476_618 + 3_550_464),
    ("configs/vit_l.py:adapter", 2_574_922 + 12_613_632),
    ("configs/vns_ablation.py:no_nsfm,adapter,vit_b", 1_599_938 + 3_550_464),
]


@pytest.mark.parametrize("config,expected", COUNTS)
@pytest.mark.slow
def test_trainable_counts_match_the_reference(config, expected, capsys):
    params.main(["--config", config, "--depth", "1"])
    out = capsys.readouterr().out.splitlines()
    line = out[1]
    assert line == f"trainable parameters: {expected} ({expected * 4 / 2**20:.2f} MiB)"
    assert re.fullmatch(r"trainable parameters: \d+ \(\d+\.\d\d MiB\)", line)  # the stable, parseable form
    assert out[-2].split()[-1].replace(",", "") == str(expected)  # the table's "trainable" total agrees


def test_paper_figures_in_mib():
    """The paper's Tab. XI / XV figures are MiB of float32 weights: FT-Decoder 15.0, FT-Token 2.1, all 1191, HQ 5.1."""
    counts = dict(COUNTS)
    rows = ["sam_finetune.py:decoder,vit_l", "sam_finetune.py:token,vit_l", "sam_finetune.py:encoder_decoder,vit_l"]
    mib = [counts[f"configs/{n}"] * 4 / 2**20 for n in [*rows, "hq_sam.py:vit_l"]]
    assert [round(v, 1) for v in mib] == [15.0, 2.1, 1191.5, 5.1]


@pytest.mark.slow
def test_params_config_overrides_and_errors(capsys):
    params.main(["--config", "configs/sam_finetune.py:token,vit_b", "--config.trainable=decoder", "--depth", "1"])
    assert "trainable parameters: 3925472 " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        params.main(["--config", "configs/sam_finetune.py:token,vit_b", "--config.trainable=mask_decoder.nope"])
    assert exit_.value.code == 2 and "'mask_decoder.nope' selects no parameter" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        params.main(["--config.trainable=decoder"])  # an override without --config
    assert "unrecognized arguments" in capsys.readouterr().err


SMOKE = {
    "sam_decoder": sam_finetune.get_config("decoder,smoke"),
    "sam_token": sam_finetune.get_config("token,smoke"),
    "sam_encoder_decoder": sam_finetune.get_config("encoder_decoder,smoke"),
    "sam_adapter": sam_finetune.get_config("adapter,smoke"),
    "hq": hq_sam.get_config("smoke"),
    "vns_adapter": demo.get_config("adapter,smoke"),
}
CLI = {
    "sam_decoder": "configs/sam_finetune.py:decoder,smoke",
    "sam_token": "configs/sam_finetune.py:token,smoke",
    "sam_encoder_decoder": "configs/sam_finetune.py:encoder_decoder,smoke",
    "sam_adapter": "configs/sam_finetune.py:adapter,smoke",
    "hq": "configs/hq_sam.py:smoke",
    "vns_adapter": "configs/demo.py:adapter,smoke",
}


def _keys(state) -> set[tuple]:
    return {tuple(str(k) for k in path) for path, _ in nnx.to_flat_state(state)}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_only_the_recipe_has_optimizer_state(name):
    config = SMOKE[name]
    state, frozen, setup = ts.init_train_state(config, sharding.make_mesh(), steps_per_epoch=1)
    trainable, frozen_keys = _keys(state.trainable), _keys(frozen)
    assert trainable and not trainable & frozen_keys
    n_leaves, n_size = ts.count_leaves(state.trainable)
    scalars = [x for x in jax.tree.leaves(state.opt_state) if x.shape == ()]
    opt_leaves, opt_size = ts.count_leaves(state.opt_state)
    assert (opt_leaves - len(scalars), opt_size - len(scalars)) == (2 * n_leaves, 2 * n_size)  # Adam mu, nu
    adapters = {k for k in trainable if "adapter" in k}
    assert bool(adapters) == bool(config.encoder_adapter_ratio)
    assert not any("adapter" in k for k in frozen_keys)
    assert setup.recipe.train_encoder == (name in ("sam_encoder_decoder", "sam_adapter", "vns_adapter"))
    if name == "sam_decoder":
        assert {k[1] for k in trainable} == {
            "transformer",
            "mask_tokens",
            "output_upscaling",
            "output_hypernetworks_mlps",
        }
    if name == "sam_token":
        assert {k[1] for k in trainable} == {"mask_tokens", "output_hypernetworks_mlps"}
    if name == "sam_encoder_decoder":
        # Everything but the prompt encoder's random Fourier projection, a buffer in SAM, not a parameter.
        assert frozen_keys == {("prompt_encoder", "pe_layer", "positional_encoding_gaussian_matrix")}
    if name == "hq":
        assert {k[1] for k in trainable} == {
            "hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature"
        }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLI))
def test_smoke_run_keeps_the_frozen_part(name, tmp_path):
    """`python -m vnsjax.train --config ...:smoke` trains; the saved model equals the initial one outside the recipe's
    trainable set, bit for bit, and loads for prediction and evaluation (the smoke run evaluates it at the end)."""
    cmd = [*tu.train_cmd(tmp_path, config=CLI[name])[:-1]]  # keep the smoke config's end-of-run evaluation
    proc = subprocess.run(cmd, cwd=tu.ROOT, env=tu.env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    config = SMOKE[name]
    metrics = tu.metrics(tmp_path)
    steps = list(range(1, config.num_train_steps + 1))
    assert sorted(metrics) == steps and all(np.isfinite(m["loss"]) for m in metrics.values())
    assert (tmp_path / "eval.jsonl").read_text().strip()  # the trained model went through the evaluation runner

    initial = ts.build_model(
        config.model_type, config.seed, variant=config.variant, adapter_ratio=config.encoder_adapter_ratio
    )
    trained = load_model(tmp_path / "model")
    assert trained.config == initial.config and trained.variant == initial.variant
    before, after = ts.split_model(initial, config.trainable), ts.split_model(trained, config.trainable)
    b, a = dict(nnx.to_flat_state(before.frozen)), dict(nnx.to_flat_state(after.frozen))
    assert b.keys() == a.keys()
    for k in b:
        np.testing.assert_array_equal(np.asarray(a[k].get_value()), np.asarray(b[k].get_value()), err_msg=str(k))
    bt, at = dict(nnx.to_flat_state(before.trainable)), dict(nnx.to_flat_state(after.trainable))
    moved = {k for k in bt if not np.array_equal(np.asarray(bt[k].get_value()), np.asarray(at[k].get_value()))}
    # Not every leaf needs to move in three steps: without a single-point prompt SAM's tokens 1-3 get no gradient.
    assert moved
    if config.encoder_adapter_ratio:
        assert any("adapter" in str(k) and "up" in str(k) for k in moved)
    image = np.random.default_rng(0).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    predictor = SamPredictor(trained)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=np.array([20, 30, 180, 150]))
    assert masks.shape[-2:] == (200, 240) and np.all(np.isfinite(scores))


def test_recipe_config_errors():
    for field, value, message in [
        ("variant", "sam2", "config.variant = 'sam2'"),
        ("loss", "vns", "the sam variant trains with"),
        ("trainable", "-mask_decoder.iou_token", "config.trainable="),
        ("encoder_adapter_ratio", 2.0, "config.encoder_adapter_ratio = 2.0"),
        ("prompts", "clicks", "config.prompts = 'clicks'"),
    ]:
        c = sam_finetune.get_config("token,smoke")
        c[field] = value
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config(c)
    with pytest.raises(ValueError, match="expected at most one of"):
        sam_finetune.get_config("tokn")
    assert vit_l.get_config("adapter").encoder_adapter_ratio == 0.25
