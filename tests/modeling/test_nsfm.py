"""NSFM (TFD neck): checkpoint keys, one-to-one key -> path mapping, parameter counts, PyTorch parity."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from convert_weights.mapping import LAYOUTS, iter_torch_keys, load_state_dict, resolve
from vnsjax.modeling.nsfm import TFD, pixel_shuffle

torch = pytest.importorskip("torch")

from tests.torch_ref import vns_neck  # noqa: E402
from tests.torch_ref.sam import randomize_  # noqa: E402

VIT_WIDTH = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
NSFM_PARAMS = {768: 765_640, 1024: 863_944, 1280: 962_248}  # docs/released-code.md#trainable


TSV = Path(__file__).parents[1] / "fixtures" / "state-dict-keys.tsv"


def _tsv_neck_shapes(model: str) -> dict[str, list[int]]:
    rows = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, key, _kind, shape, *_ = line.split("\t")
        if name == f"vns_decoder_{model}" and key.startswith("neck."):
            rows[key.removeprefix("neck.")] = json.loads(shape)
    return rows


@pytest.mark.parametrize("model", sorted(VIT_WIDTH))
def test_torch_reference_keys_equal_checkpoint(model):
    want = _tsv_neck_shapes(model)
    ref = vns_neck.TFD(in_channels=[VIT_WIDTH[model]] * 4)
    got = {k: list(v.shape) for k, v in ref.state_dict().items()}
    assert got == want


@pytest.mark.parametrize("model", sorted(VIT_WIDTH))
def test_every_key_maps_to_one_flax_path(model):
    c = VIT_WIDTH[model]
    flax_model = nnx.eval_shape(lambda: TFD((c,) * 4, rngs=nnx.Rngs(0)))
    state_dict = vns_neck.TFD(in_channels=[c] * 4).state_dict()
    expected = {}
    for key, tensor in state_dict.items():
        hit = resolve(flax_model, key)
        if hit is None:
            assert key.endswith("num_batches_tracked")
            continue
        var, layout = hit
        assert LAYOUTS[layout][0](tensor.numpy()).shape == tuple(var.shape), key
        expected[key] = id(var)
    # The inverse walk names every Flax variable exactly once, with the same key.
    assert {k: id(v) for k, v, _ in iter_torch_keys(flax_model)} == expected


@pytest.mark.parametrize("width", sorted(NSFM_PARAMS))
def test_param_count(width):
    model = nnx.eval_shape(lambda: TFD((width,) * 4, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == NSFM_PARAMS[width]


def test_pixel_shuffle_matches_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 8)).astype(np.float32)  # NHWC, 8 = 2 * 2x2
    ref = torch.nn.PixelShuffle(2)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(x)), ref)


@nnx.jit
def _forward(model: TFD, features):
    return model(features)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("width", [32, 768])
def test_parity_with_torch(width):
    """M and G at float32 in eval mode (running stats) and train mode (batch stats); BN running-stat update."""
    ref = vns_neck.TFD(in_channels=[width] * 4)
    randomize_(ref, seed=width)
    model = TFD((width,) * 4, rngs=nnx.Rngs(0))
    load_state_dict(model, {k: v.numpy() for k, v in ref.state_dict().items()}, strict=True)

    rng = np.random.default_rng(width)
    feats = [rng.standard_normal((2, 64, 64, width)).astype(np.float32) for _ in range(4)]
    torch_feats = [torch.from_numpy(f) for f in feats]
    report = {}
    with jax.default_matmul_precision("highest"):
        for mode in ("eval", "train"):
            getattr(ref, mode)()
            getattr(model, mode)()
            with torch.no_grad():
                m_ref, g_ref = ref(torch_feats)
            m, g = _forward(model, feats)
            assert m.shape == (2, 256, 256, 32) and g.shape == (2, 64, 64, 256)
            m_ref, g_ref = m_ref.permute(0, 2, 3, 1).numpy(), g_ref.permute(0, 2, 3, 1).numpy()
            scale = (float(np.abs(m_ref).max()), float(np.abs(g_ref).max()))
            report[mode] = (_max_diff(m, m_ref), _max_diff(g, g_ref), *scale)
    print(
        f"\nNSFM parity C={width}: "
        + ", ".join(
            f"{k}: |dM|={v[0]:.2e} |dG|={v[1]:.2e} (max|M|={v[2]:.2f} max|G|={v[3]:.2f})" for k, v in report.items()
        )
    )
    for mode, (dm, dg, _, _) in report.items():
        assert dm <= 1e-4 and dg <= 1e-4, (mode, dm, dg)

    # One train-mode step updated the running stats in both. PyTorch folds in the unbiased batch variance, flax the
    # biased one: a relative difference of 1/(n-1) with n = B*H*W >= 2*32*32, hence the rtol on var.
    for key, tensor in ref.state_dict().items():
        hit = resolve(model, key)
        if hit is None or not key.endswith(("running_mean", "running_var")):
            continue
        var, _ = hit
        rtol = 1e-3 if key.endswith("running_var") else 1e-5
        np.testing.assert_allclose(np.asarray(var[...]), tensor.numpy(), rtol=rtol, atol=1e-5, err_msg=key)
