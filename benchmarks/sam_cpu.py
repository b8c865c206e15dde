"""vnsjax vs the official PyTorch segment_anything, timed the way users call them, each side in its own process.

    python -m benchmarks.sam_cpu [--model vit_b] [--rounds 3] [--repeats 3]

Times `SamPredictor.set_image` and `SamPredictor.predict(box=...)` end to end (pre- and post-processing
included) on both sides, with the same random weights (tests/torch_ref builds the PyTorch model, vnsjax loads
its state dict). Each side runs in a fresh subprocess, and the rounds alternate PyTorch / vnsjax, so neither
side's thread pool is still spinning while the other is timed and slow drift of a shared machine hits both.
Prints min / median over all rounds, the vnsjax / PyTorch ratio of medians, and a sanity line: PyTorch's prompt
encoder + mask decoder timed alone, which `predict` (the same work plus resizing the masks) must not undercut.
"""

from __future__ import annotations

import numpy as np

from benchmarks.timing import TABLE_HEADER, compare, environment, row, sanity, timings
from vnsjax import MODEL_CONFIGS


def inputs(model_type: str) -> tuple[np.ndarray, np.ndarray]:
    """A 3:4 uint8 image at the model's input size and one box, the same in both processes."""
    s = MODEL_CONFIGS[model_type].img_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (s * 3 // 4, s, 3), dtype=np.uint8)
    return image, np.array([s * 0.2, s * 0.15, s * 0.6, s * 0.5], np.float32)


def run_torch(model_type: str, repeats: int) -> dict[str, list[float]]:
    import torch
    from segment_anything import SamPredictor

    from tests.torch_ref.sam import build_torch_sam

    ref = build_torch_sam(MODEL_CONFIGS[model_type])
    predictor = SamPredictor(ref)
    image, box = inputs(model_type)
    with torch.inference_mode():
        set_image = timings(lambda: predictor.set_image(image), repeats)
        predict = timings(lambda: predictor.predict(box=box), repeats * 3)
        emb, pe = predictor.features, ref.prompt_encoder.get_dense_pe()
        tb = torch.from_numpy(predictor.transform.apply_boxes(box[None], predictor.original_size))

        def decoder_alone():
            sparse, dense = ref.prompt_encoder(None, tb, None)
            return ref.mask_decoder(emb, pe, sparse, dense, True)

        decoder = timings(decoder_alone, repeats * 3)
    return {"set_image": set_image, "predict": predict, "decoder": decoder, "threads": torch.get_num_threads()}


def run_jax(model_type: str, repeats: int) -> dict[str, list[float]]:
    import jax

    from convert_weights.mapping import load_state_dict
    from tests.torch_ref.sam import build_torch_sam, torch_state_dict
    from vnsjax import SamPredictor, build_sam

    model = build_sam(model_type)
    load_state_dict(model, torch_state_dict(build_torch_sam(MODEL_CONFIGS[model_type])))
    predictor = SamPredictor(model)
    image, box = inputs(model_type)
    # predict returns NumPy arrays (already on the host), so timing the call covers the device work.
    set_image = timings(lambda: (predictor.set_image(image), jax.block_until_ready(predictor.features)), repeats)
    predict = timings(lambda: predictor.predict(box=box), repeats * 3)
    return {"set_image": set_image, "predict": predict}


def main(argv: list[str] | None = None) -> None:
    sides = {"torch": run_torch, "jax": run_jax}
    help_ = "timed set_image calls per process (predict: 3x)"
    parsed = compare("benchmarks.sam_cpu", __doc__.splitlines()[0], sides, 3, help_, argv)
    if parsed is None:
        return
    args, results = parsed
    print(f"{args.model}, {args.rounds} rounds x (PyTorch process, vnsjax process); {environment(results)}")
    print(TABLE_HEADER)
    for name, key in (("SamPredictor.set_image", "set_image"), ("SamPredictor.predict(box=...)", "predict")):
        print(row(name, results["torch"][key], results["jax"][key]))
    print(sanity("prompt encoder + mask decoder", results["torch"]["decoder"], results["torch"]["predict"]))


if __name__ == "__main__":
    main()
