"""VNS-SAM decoder vs SAM's decoder (vnsjax) and the PyTorch HQ-SAM / released VNS-SAM decoders, in one run.

    python benchmarks/vns_decoder.py [--repeats 5]

ViT-B sizes (64x64 embedding, 768-wide global-block features), random weights, box prompts. vnsjax's
decoders reuse their per-image features (HQ feature, NSFM), as the predictors cache them; those are timed on
their own rows. The PyTorch HQ-SAM decoder recomputes its HQ feature on every call, as released.
The released VNS-SAM decoder supports one prompt per image, so it has no 64-prompt row.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from benchmarks.sam_cpu import timeit
from tests.torch_ref.sam import build_torch_sam, randomize_
from tests.torch_ref.vns_decoder import VnsSamDecoder
from vnsjax import MODEL_CONFIGS, build_sam
from vnsjax.modeling.sam import Features, eval_view
from vnsjax.predictors.prompts import pack_prompts


def _time_vnsjax(variant, emb, interm, rng, repeats, rows) -> dict[int, float]:
    """Decoder time per prompt batch, with the decoder's per-image features (HQ feature, NSFM) cached as the
    predictors cache them; those are timed on their own row."""
    graphdef, state = nnx.split(eval_view(build_sam("vit_b", variant)))
    run = jax.jit(lambda s, f, pr: nnx.merge(graphdef, s).decode(f, pr).masks)
    emb, interm = jnp.asarray(emb), [jnp.asarray(x) for x in interm]
    per_image = jax.jit(lambda s, e, x: nnx.merge(graphdef, s).mask_decoder.image_features(e, x))
    feats = Features(emb, per_image(state, emb, interm))
    if feats.decoder:
        rows[f"vnsjax {variant} decoder features (once per image)"] = {
            1: timeit(lambda: jax.block_until_ready(per_image(state, emb, interm)), repeats)[1]
        }
    out = {}
    for n in (1, 64):
        boxes = np.sort(rng.uniform(0, 1024, (n, 2, 2)), axis=1).reshape(n, 4).astype(np.float32)
        prompts = jax.tree.map(jnp.asarray, pack_prompts(boxes=boxes)[0])
        out[n] = timeit(lambda pr=prompts: jax.block_until_ready(run(state, feats, pr)), repeats)[1]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cfg = MODEL_CONFIGS["vit_b"]
    rng = np.random.default_rng(0)
    e, c = cfg.image_embedding_size, cfg.encoder_embed_dim
    emb = rng.standard_normal((1, e, e, 256)).astype(np.float32)
    interm = [rng.standard_normal((1, e, e, c)).astype(np.float32) for _ in range(4)]

    hq = build_torch_sam(cfg, "hq").eval()
    vns_ref = randomize_(VnsSamDecoder(vit_dim=c), seed=1).eval()
    rows: dict[str, dict[int, float]] = {}

    with torch.inference_mode():
        t_emb = torch.from_numpy(emb.transpose(0, 3, 1, 2).copy())
        t_interm = [torch.from_numpy(x) for x in interm]
        pe = hq.prompt_encoder.get_dense_pe()
        for n in (1, 64):
            boxes = torch.from_numpy(np.sort(rng.uniform(0, 1024, (n, 2, 2)), axis=1).reshape(n, 4).astype(np.float32))
            sp, de = hq.prompt_encoder(None, boxes, None)
            rows.setdefault("PyTorch HQ-SAM decoder", {})[n] = timeit(
                lambda sp=sp, de=de: hq.mask_decoder(t_emb, pe, sp, de, False, False, t_interm), args.repeats
            )[1]
            if n == 1:
                rows.setdefault("PyTorch VNS-SAM decoder (released, incl. NSFM)", {})[n] = timeit(
                    lambda sp=sp, de=de: vns_ref(t_emb, [pe], [sp], [de], False, t_interm), args.repeats
                )[1]

    rows["vnsjax SAM decoder"] = _time_vnsjax("sam", emb, interm, rng, args.repeats, rows)
    rows["vnsjax HQ-SAM decoder (HQ feature cached)"] = _time_vnsjax("hq", emb, interm, rng, args.repeats, rows)
    rows["vnsjax VNS-SAM decoder (NSFM cached)"] = _time_vnsjax("vns", emb, interm, rng, args.repeats, rows)

    print(f"ViT-B sizes, torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}")
    print("| decoder | 1 prompt (s, median) | 64 prompts (s, median) | 64 / 1 |")
    print("| --- | --- | --- | --- |")
    for name, r in rows.items():
        t64 = f"{r[64]:.3f}" if 64 in r else "-"
        ratio = f"{r[64] / r[1]:.1f}x" if 64 in r else "-"
        print(f"| {name} | {r[1]:.3f} | {t64} | {ratio} |")
    base = rows["PyTorch HQ-SAM decoder"]
    for name in ("HQ-SAM decoder (HQ feature cached)", "VNS-SAM decoder (NSFM cached)"):
        r = rows[f"vnsjax {name}"]
        print(f"vnsjax {name} / PyTorch HQ-SAM: {r[1] / base[1]:.2f} (1 prompt), {r[64] / base[64]:.2f} (64 prompts)")


if __name__ == "__main__":
    main()
