"""VNS-SAM decoder semantics: per-prompt batching, the released token indexing (fixtures from test_vns_parity)."""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerance import assert_close
from vnsjax.modeling.vns_decoder import VnsDecoder, results_fusion

pytest.importorskip("torch")

from tests.modeling.test_vns_parity import CFG, OUTPUTS, _forward, _image_inputs, _nhwc, fresh_models  # noqa: E402
from tests.torch_ref.sam import torch_prompt_embeddings  # noqa: E402


def test_prompts_are_independent_in_a_batch():
    """B prompts on one image (batch-1 image features broadcast) == each prompt alone."""
    prompt_encoder, _, model = fresh_models()
    emb, interm = _image_inputs(1, seed=5)
    sparse, dense, pe = torch_prompt_embeddings(prompt_encoder, "points", 3, CFG.img_size, seed=6)
    with jax.default_matmul_precision("highest"):
        batch = _forward(model, _nhwc(emb), _nhwc(pe), sparse, _nhwc(dense), interm, True)
        for i in range(3):
            one = _forward(model, _nhwc(emb), _nhwc(pe), sparse[i : i + 1], _nhwc(dense[i : i + 1]), interm, True)
            for name in OUTPUTS:
                # Batched and single calls reduce in different orders: float32 noise relative to the outputs' scale.
                assert_close(np.asarray(getattr(batch, name))[i : i + 1], getattr(one, name), rel=1e-5, err_msg=name)
    assert batch.fused_mask.shape == (3, 1, 64, 64) and batch.dense_map.shape == (3, 1, 16, 16)
    np.testing.assert_allclose(results_fusion(batch), batch.fused_mask + batch.sam_masks)


@nnx.jit
def _bumped(model, bump, emb, pe, sparse, dense, interm):
    """Forward with `bump` added to the transformer's output tokens at both stages (a traced input: one compile)."""
    original = VnsDecoder.run_transformer

    def patched(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return out._replace(queries=out.queries + bump, interm_queries=out.interm_queries + bump)

    with mock.patch.object(VnsDecoder, "run_transformer", patched):
        return model(emb, pe, sparse, dense, features=model.image_features(emb, interm), multimask_output=False)


def test_released_token_indexing():
    """Outputs read transformer tokens 4 and 5 only (mask = hf_mlp(t4 + t5), edge = edge_mlp(t5)); token 6 is dead.

    Perturbs one transformer output token at a time (both stages) and checks which outputs move.
    """
    _, _, model = fresh_models()
    emb, interm = _image_inputs(1, seed=7)
    rng = np.random.default_rng(8)
    sparse = rng.standard_normal((1, 2, 256)).astype(np.float32)
    dense = rng.standard_normal((1, 16, 16, 256)).astype(np.float32)
    pe = rng.standard_normal((1, 16, 16, 256)).astype(np.float32)
    e = _nhwc(emb)
    n_tokens = 7 + sparse.shape[1]

    def run(token=None):
        bump = np.zeros((1, n_tokens, 256), np.float32)
        if token is not None:
            bump[:, token] = 1.0
        return _bumped(model, jnp.asarray(bump), e, pe, sparse, dense, interm)

    base = run()
    vns = ("vns_mask", "interm_mask", "fused_mask")
    edges = ("edge", "interm_edge")

    def moved(out):
        return {k for k in OUTPUTS if not np.allclose(getattr(out, k), getattr(base, k), atol=1e-6)}

    assert moved(run(6)) == set()  # hf_token row 1: never read
    assert moved(run(4)) == set(vns)  # SAM's 4th mask token feeds the VNS mask (not the single SAM mask 0)
    assert moved(run(5)) == set(vns + edges)  # hf_token row 0: VNS mask and edge
    assert moved(run(1)) == {"sam_masks"}  # mask token 0 -> SAM mask 0


def test_hf_token_row_1_still_attends():
    """Row 1 is never read out, but it takes part in the transformer's attention, so it changes every output."""
    prompt_encoder, _, model = fresh_models()
    emb, interm = _image_inputs(1, seed=9)
    # Same shapes as the single-prompt calls of test_prompts_are_independent_in_a_batch: reuses that compile.
    sparse, dense, pe = torch_prompt_embeddings(prompt_encoder, "points", 1, CFG.img_size, seed=10)
    args = (_nhwc(emb), _nhwc(pe), sparse, _nhwc(dense), interm, True)
    base = _forward(model, *args)
    saved = model.hf_token.embedding[...]
    model.hf_token.embedding[...] = saved.at[1].add(1.0)
    try:
        changed = _forward(model, *args)
    finally:
        model.hf_token.embedding[...] = saved
    assert not np.allclose(changed.vns_mask, base.vns_mask, atol=1e-6)
