"""VNS-SAM per prompt: vnsjax's VnsPredictor.predict vs the released PyTorch VNS-SAM decoder, each in its own process.

    python -m benchmarks.vns_decoder [--model vit_b] [--rounds 3] [--repeats 5]

Times one box prompt end to end with the image already set, what a user calls: on the vnsjax side
`VnsPredictor.predict(box=...)` (prompt transform, prompt encoder, decoder with the NSFM features cached by
`set_image`, upscaling the fused mask to the original size, host copies); on the PyTorch side the same steps
with segment_anything's prompt encoder, transforms and postprocessing around the released VNS-SAM decoder
(tests/torch_ref), which recomputes its NSFM inside every forward, as released. Its image features are random
tensors of the encoder's output shapes (the values do not change the work); vnsjax runs `set_image` once, untimed.
Random weights on both sides. Processes and rounds as in benchmarks/sam_cpu.py (`benchmarks.timing`); a sanity
line compares PyTorch's predict with its prompt encoder + decoder timed alone.
"""

from __future__ import annotations

import numpy as np

from benchmarks.sam_cpu import inputs
from benchmarks.timing import TABLE_HEADER, compare, environment, row, sanity, timings
from vnsjax import MODEL_CONFIGS


def run_torch(model_type: str, repeats: int) -> dict:
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    from tests.torch_ref.sam import build_torch_sam, randomize_
    from tests.torch_ref.vns_decoder import VnsSamDecoder

    cfg = MODEL_CONFIGS[model_type]
    sam = build_torch_sam(cfg)
    decoder = randomize_(VnsSamDecoder(vit_dim=cfg.encoder_embed_dim), seed=1).eval()
    image, box = inputs(model_type)
    size = image.shape[:2]
    transform = ResizeLongestSide(cfg.img_size)
    input_size = transform.get_preprocess_shape(*size, cfg.img_size)
    rng = np.random.default_rng(0)
    e, c = cfg.image_embedding_size, cfg.encoder_embed_dim
    emb = torch.from_numpy(rng.standard_normal((1, 256, e, e)).astype(np.float32))
    interm = [torch.from_numpy(rng.standard_normal((1, e, e, c)).astype(np.float32)) for _ in range(4)]
    pe = sam.prompt_encoder.get_dense_pe()

    def decode(boxes):
        sparse, dense = sam.prompt_encoder(None, boxes, None)
        return decoder(emb, [pe], [sparse], [dense], True, interm)

    def predict():  # segment_anything's SamPredictor.predict around the VNS decoder; the fused mask is its output
        boxes = torch.as_tensor(transform.apply_boxes(box[None], size))
        out = decode(boxes)
        masks = sam.postprocess_masks(out["fused_mask"], input_size, size) > sam.mask_threshold
        return masks[0].numpy(), out["iou_predictions"][0].numpy(), out["fused_mask"][0].numpy()

    with torch.inference_mode():
        predict_t = timings(predict, repeats)
        tb = torch.as_tensor(transform.apply_boxes(box[None], size))
        decoder_t = timings(lambda: decode(tb), repeats)
    return {"predict": predict_t, "decoder": decoder_t, "threads": torch.get_num_threads()}


def run_jax(model_type: str, repeats: int) -> dict:
    import jax

    from vnsjax import VnsPredictor, build_sam

    predictor = VnsPredictor(build_sam(model_type, "vns"))
    image, box = inputs(model_type)
    predictor.set_image(image)
    jax.block_until_ready(predictor.features)
    # predict returns NumPy arrays (already on the host), so timing the call covers the device work.
    return {"predict": timings(lambda: predictor.predict(box=box), repeats)}


def main(argv: list[str] | None = None) -> None:
    sides = {"torch": run_torch, "jax": run_jax}
    help_ = "timed predict calls per process"
    parsed = compare("benchmarks.vns_decoder", __doc__.splitlines()[0], sides, 5, help_, argv)
    if parsed is None:
        return
    args, results = parsed
    print(f"{args.model} VNS-SAM, {args.rounds} rounds x (PyTorch process, vnsjax process); {environment(results)}")
    print(TABLE_HEADER)
    print(
        row("VnsPredictor.predict(box=...) vs released decoder", results["torch"]["predict"], results["jax"]["predict"])
    )
    print(sanity("prompt encoder + VNS-SAM decoder", results["torch"]["decoder"], results["torch"]["predict"]))


if __name__ == "__main__":
    main()
