"""vnsjax vs the official PyTorch SAM on this machine, in one run.

    python benchmarks/sam_cpu.py [--model-type vit_b] [--repeats 3]

Times the image encoder at 1024x1024, the prompt encoder + mask decoder for one prompt, and for 64
prompts batched; prints min/median and the vnsjax/PyTorch ratios. Random weights (speed does not
depend on them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from convert_weights.mapping import load_state_dict
from tests.torch_ref.sam import build_torch_sam, torch_state_dict
from vnsjax import MODEL_CONFIGS, build_sam
from vnsjax.predictors.prompts import pack_prompts


def timeit(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-type", default="vit_b")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = MODEL_CONFIGS[args.model_type]
    ref = build_torch_sam(cfg)
    model = build_sam(args.model_type)
    load_state_dict(model, torch_state_dict(ref))
    s = cfg.img_size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, s, s, 3)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def encode(state, images):
        return nnx.merge(graphdef, state).image_features(images)

    @jax.jit
    def dec(state, feats, prompts):
        return nnx.merge(graphdef, state).decode(feats, prompts, multimask_output=True)[:2]

    rows = []
    with torch.inference_mode():
        t_enc = timeit(lambda: ref.image_encoder(xt), args.repeats)
        j_enc = timeit(lambda: jax.block_until_ready(encode(state, jnp.asarray(x * 58 + 120))), args.repeats)
        rows.append(("image encoder (1 image)", t_enc, j_enc))
        emb = ref.image_encoder(xt)
        feats = encode(state, jnp.asarray(x * 58 + 120))
        pe = ref.prompt_encoder.get_dense_pe()
        for n in (1, 64):
            boxes = np.sort(rng.uniform(0, s, (n, 2, 2)), axis=1).reshape(n, 4).astype(np.float32)
            tb = torch.from_numpy(boxes)

            def torch_dec(tb=tb):
                sp, de = ref.prompt_encoder(None, tb, None)
                return ref.mask_decoder(emb, pe, sp, de, True)

            prompts, _ = pack_prompts(boxes=boxes, mask_size=model.prompt_encoder.mask_input_size)
            prompts = jax.tree.map(jnp.asarray, prompts)
            t = timeit(torch_dec, args.repeats * 3)
            j = timeit(lambda p=prompts: jax.block_until_ready(dec(state, feats, p)), args.repeats * 3)
            rows.append((f"prompt encoder + decoder ({n} prompt{'s' if n > 1 else ''})", t, j))

    print(
        f"{args.model_type}, torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs, {jax.devices()[0].platform}"
    )
    print("| stage | PyTorch min / median (s) | vnsjax min / median (s) | vnsjax / PyTorch (median) |")
    print("| --- | --- | --- | --- |")
    for name, (tmin, tmed), (jmin, jmed) in rows:
        print(f"| {name} | {tmin:.3f} / {tmed:.3f} | {jmin:.3f} / {jmed:.3f} | {jmed / tmed:.2f} |")
    d1, d64 = rows[1][2][1], rows[2][2][1]
    print(f"vnsjax 64 prompts / 1 prompt: {d64 / d1:.2f}x")


if __name__ == "__main__":
    main()
