"""HQ-SAM decoder parity with segment_anything_hq (PyPI), every tensor randomised, tiny config."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convert_weights.mapping import export_state_dict, load_state_dict
from vnsjax.build_sam import MODEL_CONFIGS
from vnsjax.modeling.mask_decoder_hq import MaskDecoderHQ

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything_hq")

from tests.torch_ref.sam import build_torch_sam, torch_prompt_embeddings, torch_state_dict  # noqa: E402

CFG = MODEL_CONFIGS["tiny"]
PREFIX = "mask_decoder."


@functools.cache
def _models():
    ref = build_torch_sam(CFG, "hq", seed=11)
    sd = {k.removeprefix(PREFIX): v for k, v in torch_state_dict(ref).items() if k.startswith(PREFIX)}
    model = nnx.eval_shape(
        lambda: MaskDecoderHQ(transformer_dim=CFG.prompt_embed_dim, vit_dim=CFG.encoder_embed_dim, rngs=nnx.Rngs(0))
    )
    load_state_dict(model, sd, strict=True)
    nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
    # The image features come from segment_anything_hq's own encoder: (embedding, interm_embeddings).
    image = torch.from_numpy(np.random.default_rng(12).standard_normal((1, 3, CFG.img_size, CFG.img_size)))
    with torch.no_grad():
        emb, interm = ref.image_encoder(image.float())
    return ref, model, sd, emb, interm


@functools.partial(nnx.jit, static_argnames=("multimask", "hq_only"))
def _forward(model, emb, pe, sparse, dense, interm, multimask, hq_only):
    features = model.image_features(emb, interm)
    out = model(emb, pe, sparse, dense, features=features, multimask_output=multimask, hq_token_only=hq_only)
    return out.masks, out.iou_predictions


def _nhwc(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 2, 3, 1)


def test_state_dict_round_trip():
    _, model, sd, _, _ = _models()
    out = export_state_dict(model)
    assert set(out) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(out[k], v, err_msg=k)


@pytest.mark.parametrize(
    ("kind", "n", "multimask", "hq_only"),
    [
        ("box", 2, False, False),
        ("box", 2, False, True),
        ("box", 2, True, False),
        ("box", 2, True, True),
        ("points", 3, True, False),
        ("mask", 1, False, True),
    ],
)
def test_parity_with_segment_anything_hq(kind, n, multimask, hq_only):
    """n prompts on one image; masks (n, 1, 64, 64) logits and IoU (n, 1) as MaskDecoderHQ.forward returns them."""
    ref, model, _, emb, interm = _models()
    sparse, dense, pe = torch_prompt_embeddings(ref.prompt_encoder, kind, n, CFG.img_size, seed=13)
    with torch.no_grad():
        want_masks, want_iou = ref.mask_decoder(
            image_embeddings=emb,
            image_pe=torch.from_numpy(pe),
            sparse_prompt_embeddings=torch.from_numpy(sparse),
            dense_prompt_embeddings=torch.from_numpy(dense),
            multimask_output=multimask,
            hq_token_only=hq_only,
            interm_embeddings=interm,
        )
    with jax.default_matmul_precision("highest"):
        masks, iou = _forward(
            model, _nhwc(emb), _nhwc(pe), sparse, _nhwc(dense), [x.numpy() for x in interm], multimask, hq_only
        )
    assert masks.shape == tuple(want_masks.shape) == (n, 1, 64, 64) and iou.shape == tuple(want_iou.shape) == (n, 1)
    dm = float(np.max(np.abs(np.asarray(masks) - want_masks.numpy())))
    di = float(np.max(np.abs(np.asarray(iou) - want_iou.numpy())))
    print(f"\nHQ parity {kind} n={n} multimask={multimask} hq_only={hq_only}: |dmask|={dm:.1e} |diou|={di:.1e}")
    assert dm <= 1e-4 and di <= 1e-4
