"""Converter: key mapping, layouts, round trips, VNS-SAM/HQ-SAM files and bad inputs."""

import ast
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from convert_weights.__main__ import main as convert_main
from convert_weights.convert import convert_state_dict, detect_kind, infer_config
from convert_weights.mapping import MappingError, export_state_dict, iter_modules, iter_torch_keys
from vnsjax import MODEL_CONFIGS, load_model
from vnsjax.modeling.common import ConvTranspose2x2

torch = pytest.importorskip("torch", reason="parity against PyTorch needs the [dev] extra")
from tests.torch_ref.sam import build_torch_sam, torch_state_dict  # noqa: E402

TSV = Path(__file__).parents[1] / "fixtures" / "state-dict-keys.tsv"


def _tsv(model: str) -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in TSV.open() if not line.startswith("#")]
    return {r[1]: tuple(ast.literal_eval(r[3])) for r in rows if r[0] == model}


def _random_sd(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = np.asarray(7, np.int64)
        elif k.endswith("running_var"):
            sd[k] = rng.uniform(0.5, 1.5, s).astype(np.float32)
        else:
            sd[k] = rng.normal(size=s).astype(np.float32)
    return sd


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
    ref = build_torch_sam(MODEL_CONFIGS["tiny"], seed=5)
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, path)
    return path, torch_state_dict(ref)


@pytest.mark.slow
def test_cli_round_trip_and_determinism(tiny_pth, tmp_path, capsys):
    path, ref_sd = tiny_pth
    assert convert_main(["--checkpoint", str(path), "--output", str(tmp_path / "a")]) == 0
    assert "0 unmapped, 0 missing" in capsys.readouterr().out
    assert convert_main(["--checkpoint", str(path), "--output", str(tmp_path / "b"), "--model-type", "tiny"]) == 0
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    assert a.config == MODEL_CONFIGS["tiny"] and a.variant == "sam"
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    back = export_state_dict(a)
    assert set(back) == set(ref_sd)
    for k, v in ref_sd.items():
        assert np.array_equal(back[k], v), k


@pytest.mark.slow
def test_bad_inputs(tiny_pth, tmp_path, capsys):
    path, ref_sd = tiny_pth
    out = str(tmp_path / "x")
    assert convert_main(["--checkpoint", str(tmp_path / "nope.pth"), "--output", out]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert convert_main(["--checkpoint", str(junk), "--output", out]) == 1
    assert f"{junk}: not a PyTorch checkpoint" in capsys.readouterr().err
    assert convert_main(["--checkpoint", str(path), "--output", out, "--model-type", "vit_b"]) == 1
    assert "shapes are those of tiny" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a SAM, HQ-SAM or VNS-SAM checkpoint"):
        detect_kind({"foo.weight": np.zeros(3)})

    bad = dict(ref_sd)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    bad[key] = np.zeros((256, 255), np.float32)
    with pytest.raises(MappingError, match=r"shape mismatch for mask_decoder\.iou_prediction_head\.layers\.0\.weight"):
        convert_state_dict(bad)
    bad = dict(ref_sd, **{"mask_decoder.extra.weight": np.zeros(3, np.float32)})
    del bad["prompt_encoder.no_mask_embed.weight"]
    with pytest.raises(MappingError) as e:
        convert_state_dict(bad)
    assert "mask_decoder.extra.weight" in str(e.value) and "prompt_encoder.no_mask_embed.weight" in str(e.value)


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
@pytest.mark.slow
def test_official_key_lists_map_exactly(model_type):
    """Every key and shape of the official checkpoints (and the VNS decoder) has exactly one place."""
    model = nnx.eval_shape(lambda: __import__("vnsjax").build_sam(model_type, "vns"))
    ours = {k: v.shape for k, v, _ in iter_torch_keys(model)}
    sam = _tsv("sam_" + model_type)
    vns = {"mask_decoder." + k: s for k, s in _tsv("vns_decoder_" + model_type).items()}
    expected = {**sam, **vns}
    expected = {k: s for k, s in expected.items() if not k.endswith("num_batches_tracked")}
    assert set(ours) == set(expected)
    cfg = infer_config({k: np.empty(s, np.float32) for k, s in sam.items()})
    assert cfg == MODEL_CONFIGS[model_type]


def _numpy_layer(module, sd: dict[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    """NumPy forward of one layer from the PyTorch tensors, NHWC / (..., features)."""
    w = sd.get(prefix + "weight")
    b = sd.get(prefix + "bias")
    if isinstance(module, nnx.Linear):
        return x @ w.T + (0 if b is None else b)
    if isinstance(module, ConvTranspose2x2):
        n, h, wd, _ = x.shape
        y = np.einsum("nhwc,coab->nhawbo", x, w).reshape(n, 2 * h, 2 * wd, w.shape[1])
        return y + b
    if isinstance(module, nnx.Conv) and w.ndim == 4:
        (ph, _), (pw, _) = module.padding
        s = module.strides[0]
        kh, kw = w.shape[2:]
        xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        ho, wo = (xp.shape[1] - kh) // s + 1, (xp.shape[2] - kw) // s + 1
        y = np.zeros((x.shape[0], ho, wo, w.shape[0]), np.float64)
        for i in range(kh):
            for j in range(kw):
                y += xp[:, i : i + s * ho : s, j : j + s * wo : s] @ w[:, :, i, j].T
        return y + (0 if b is None else b)
    if isinstance(module, nnx.Conv):  # Conv1d over the last axis with one channel
        xp = np.pad(x, ((0, 0), (1, 1), (0, 0)))
        return sum(xp[:, k : k + x.shape[1]] * w[0, 0, k] for k in range(3))
    if isinstance(module, nnx.LayerNorm):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + module.epsilon) * w + b
    if isinstance(module, nnx.BatchNorm):
        return (x - sd[prefix + "running_mean"]) / np.sqrt(sd[prefix + "running_var"] + 1e-5) * w + b
    raise AssertionError(type(module))


def _layer_input(module, rng) -> np.ndarray:
    if isinstance(module, nnx.Linear):
        return rng.normal(size=(3, module.in_features))
    if isinstance(module, nnx.Conv) and len(module.kernel_size) == 1:
        return rng.normal(size=(2, 12, 1))
    if isinstance(module, nnx.LayerNorm | nnx.BatchNorm):
        c = module.num_features
    else:
        c = module.in_features if isinstance(module, nnx.Conv) else module.kernel.shape[2]
    return rng.normal(size=(2, 6, 6, c))


@pytest.mark.parametrize("layout", ["decoder_only", "merged"])
@pytest.mark.slow
def test_released_vns_files_convert_and_land(layout, tmp_path):
    """Random tensors with every key/shape of the released files; each layer checked against NumPy."""
    sam_sd = _random_sd(_tsv("sam_vit_b"), 0)
    dec_sd = _random_sd(_tsv("vns_decoder_vit_b"), 1)
    for k in list(dec_sd):  # the released decoder file carries SAM's frozen decoder verbatim
        if "mask_decoder." + k in sam_sd:
            dec_sd[k] = sam_sd["mask_decoder." + k]
    if layout == "decoder_only":
        sam_path = tmp_path / "sam_vit_b.pth"
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sam_sd.items()}, sam_path)
        assert detect_kind(dec_sd) == "vns_decoder"
        with pytest.raises(ValueError, match="--sam-checkpoint"):
            convert_state_dict(dec_sd)
        model, info = convert_state_dict(dec_sd, sam_checkpoint=sam_path)
        assert info["frozen_decoder_max_abs_diff"] == 0.0
    else:  # sam_hq_epoch_N.pth: the SAM checkpoint plus mask_decoder.<new key>
        merged = dict(sam_sd)
        merged.update({"mask_decoder." + k: v for k, v in dec_sd.items() if "mask_decoder." + k not in sam_sd})
        assert detect_kind(merged) == "vns"
        model, info = convert_state_dict(merged)
    assert info["variant"] == "vns" and info["model_type"] == "vit_b"
    assert info["unmapped"] == [] and info["missing"] == []

    full = {**sam_sd, **{"mask_decoder." + k: v for k, v in dec_sd.items()}}
    rng = np.random.default_rng(0)
    checked = 0
    model.eval()
    for name, module in iter_modules(model.mask_decoder, "mask_decoder."):
        if not isinstance(module, nnx.Linear | nnx.Conv | ConvTranspose2x2 | nnx.LayerNorm | nnx.BatchNorm):
            continue
        prefix = name + "."
        x = _layer_input(module, rng).astype(np.float32)
        got = np.asarray(module(x), np.float64)
        want = _numpy_layer(module, full, prefix, x.astype(np.float64))
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), prefix
        checked += 1
    assert checked > 100


@pytest.mark.slow
def test_hq_checkpoint_converts(tmp_path):
    ref = build_torch_sam(MODEL_CONFIGS["tiny"], variant="hq", seed=2)
    path = tmp_path / "sam_hq_tiny.pth"
    torch.save(ref.state_dict(), path)
    assert convert_main(["--checkpoint", str(path), "--output", str(tmp_path / "hq")]) == 0
    model = load_model(tmp_path / "hq")
    assert model.variant == "hq"
    back = export_state_dict(model)
    for k, v in torch_state_dict(ref).items():
        assert np.array_equal(back[k], v), k
