"""VNS-SAM decoder: checkpoint keys, trainable set, parity with the released PyTorch decoder (tiny config)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convert_weights.mapping import LAYOUTS, iter_torch_keys, load_state_dict
from vnsjax.build_sam import MODEL_CONFIGS
from vnsjax.modeling.vns_decoder import EXTRAS, TRAINABLE, VnsDecoder

torch = pytest.importorskip("torch")

from tests.torch_ref.sam import build_torch_sam, randomize_, torch_prompt_embeddings, torch_state_dict  # noqa: E402
from tests.torch_ref.vns_decoder import VnsSamDecoder  # noqa: E402

TSV = Path(__file__).parents[1] / "fixtures" / "state-dict-keys.tsv"
VIT_WIDTH = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
CFG = MODEL_CONFIGS["tiny"]
OUTPUTS = ("iou_predictions", *EXTRAS)  # every named output of a call (DecoderOutput attributes)


def _tsv_rows(model: str) -> dict[str, tuple[list[int], str]]:
    rows = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, key, _kind, shape, trainable = line.split("\t")
        if name == f"vns_decoder_{model}":
            rows[key] = (json.loads(shape), trainable)
    assert len(rows) == 247
    return rows


@pytest.mark.parametrize("model", sorted(VIT_WIDTH))
def test_torch_reference_state_dict_equals_checkpoint(model):
    ref = VnsSamDecoder(vit_dim=VIT_WIDTH[model])
    got = {k: list(v.shape) for k, v in ref.state_dict().items()}
    assert got == {k: shape for k, (shape, _) in _tsv_rows(model).items()}


@pytest.mark.parametrize("model", sorted(VIT_WIDTH))
def test_flax_keys_shapes_and_trainable_set_equal_checkpoint(model):
    rows = _tsv_rows(model)
    decoder = nnx.eval_shape(lambda: VnsDecoder(vit_dim=VIT_WIDTH[model], rngs=nnx.Rngs(0)))
    flax_keys = {}
    for key, var, layout in iter_torch_keys(decoder):
        torch_shape = LAYOUTS[layout][1](np.zeros(var.shape, np.int8)).shape
        flax_keys[key] = list(torch_shape)
    assert flax_keys == {k: s for k, (s, _) in rows.items() if not k.endswith("num_batches_tracked")}

    # nnx.state hands back the model's own Variable objects, so identity links a filtered leaf to its key.
    by_var = {id(var): key for key, var, _ in iter_torch_keys(decoder)}
    got = {by_var[id(var)] for _, var in nnx.to_flat_state(nnx.state(decoder, TRAINABLE))}
    assert got == {k for k, (_, t) in rows.items() if t == "trainable"}


@functools.partial(nnx.jit, static_argnames=("multimask",))
def _forward(model, emb, pe, sparse, dense, interm, multimask):
    features = model.image_features(emb, interm)
    return model(emb, pe, sparse, dense, features=features, multimask_output=multimask)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1)


@functools.cache
def _built():
    prompt_encoder = build_torch_sam(CFG, "sam", seed=1).prompt_encoder
    ref = randomize_(VnsSamDecoder(vit_dim=CFG.encoder_embed_dim), seed=2)
    weights = {k: v.clone() for k, v in ref.state_dict().items()}
    # Abstract init + a strict load: every value comes from the checkpoint, no random init to pay for.
    model = nnx.eval_shape(lambda: VnsDecoder(vit_dim=CFG.encoder_embed_dim, rngs=nnx.Rngs(0)))
    return prompt_encoder, ref, model, weights


def fresh_models():
    """(torch prompt encoder, reference, Flax decoder) with fresh equal weights.

    Reloaded per test: train-mode calls update BatchNorm running stats in both models.
    """
    prompt_encoder, ref, model, weights = _built()
    ref.load_state_dict(weights)
    load_state_dict(model, torch_state_dict(ref), strict=True)
    nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
    ref.eval()
    model.eval()
    return prompt_encoder, ref, model


def _image_inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    e = CFG.image_embedding_size
    emb = rng.standard_normal((n, CFG.prompt_embed_dim, e, e)).astype(np.float32)
    interm = [rng.standard_normal((n, e, e, CFG.encoder_embed_dim)).astype(np.float32) for _ in range(4)]
    return emb, interm


@pytest.mark.parametrize(("kind", "multimask"), [("box", True), ("points", False), ("mask", False)])
def test_parity_with_released_decoder(kind, multimask):
    """Two images with one prompt each (the only case the release supports); BN eval and train mode."""
    prompt_encoder, ref, model = fresh_models()
    n = 2
    emb, interm = _image_inputs(n, seed=3)
    sparse, dense, pe = torch_prompt_embeddings(prompt_encoder, kind, n, CFG.img_size, seed=4)
    t = torch.from_numpy
    report = {}
    with jax.default_matmul_precision("highest"):
        for mode in ("eval", "train"):
            getattr(ref, mode)()
            getattr(model, mode)()
            with torch.no_grad():
                want = ref(
                    t(emb),
                    [t(pe)] * n,
                    [t(s[None]) for s in sparse],
                    [t(d[None]) for d in dense],
                    multimask,
                    [t(x) for x in interm],
                )
            got = _forward(model, _nhwc(emb), _nhwc(pe), sparse, _nhwc(dense), interm, multimask)
            for name in OUTPUTS:
                a, b = np.asarray(getattr(got, name)), want[name].numpy()
                assert a.shape == b.shape, (name, a.shape, b.shape)
                report[f"{mode}/{name}"] = (float(np.max(np.abs(a - b))), float(np.max(np.abs(b))))
    print(
        f"\nVNS parity {kind} multimask={multimask}: "
        + ", ".join(f"{k} {d:.1e} (|x|<={s:.1f})" for k, (d, s) in report.items())
    )
    assert all(d <= 1e-4 for d, _ in report.values()), report
