"""vnsjax SAM vs the official segment_anything (PyPI), every tensor randomised and seeded."""

import numpy as np
import pytest

from convert_weights.mapping import load_state_dict
from vnsjax import MODEL_CONFIGS, SamPredictor, build_sam

torch = pytest.importorskip("torch", reason="parity against PyTorch needs the [dev] extra")
TorchPredictor = pytest.importorskip(
    "segment_anything", reason="needs segment-anything from the [dev] extra"
).SamPredictor
from tests.torch_ref.sam import build_torch_sam, torch_state_dict  # noqa: E402

TOL = 1e-4


def _pair(model_type: str, seed: int = 0):
    cfg = MODEL_CONFIGS[model_type]
    ref = build_torch_sam(cfg, seed=seed)
    model = build_sam(model_type)
    load_state_dict(model, torch_state_dict(ref))
    return ref, model


@pytest.fixture(scope="module")
def tiny():
    ref, model = _pair("tiny")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)  # non-square
    tp, jp = TorchPredictor(ref), SamPredictor(model)
    tp.set_image(image)
    jp.set_image(image)
    return ref, model, tp, jp, image


def test_image_embeddings_and_global_blocks(tiny):
    ref, model, tp, jp, _ = tiny
    assert np.abs(tp.get_image_embedding().numpy() - jp.get_image_embedding()).max() <= TOL
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    # Collect the global-block outputs of the PyTorch encoder with hooks.
    outs = []
    hooks = [
        blk.register_forward_hook(lambda m, i, o: outs.append(o.numpy()))
        for blk in ref.image_encoder.blocks
        if blk.window_size == 0
    ]
    emb = ref.image_encoder(x).numpy()
    for h in hooks:
        h.remove()
    jemb, interm = model.image_encoder(x.numpy().transpose(0, 2, 3, 1))
    assert np.abs(emb - np.asarray(jemb).transpose(0, 3, 1, 2)).max() <= TOL
    assert len(interm) == 4
    for a, b in zip(outs, interm, strict=True):
        assert np.abs(a - np.asarray(b)).max() <= TOL


def test_prompt_embeddings(tiny):
    ref, model, *_ = tiny
    rng = np.random.default_rng(2)
    pts = rng.uniform(0, 256, (2, 3, 2)).astype(np.float32)
    labels = np.array([[1, 0, 1], [0, 1, 1]])
    boxes = np.array([[10, 20, 200, 150], [0, 0, 255, 255]], np.float32)
    masks = rng.normal(size=(2, 1, 64, 64)).astype(np.float32)
    for p, b, m in [((pts, labels), None, None), (None, boxes, None), ((pts, labels), boxes, masks)]:
        tp_ = None if p is None else (torch.from_numpy(p[0]), torch.from_numpy(p[1]))
        ts, td = ref.prompt_encoder(
            tp_, None if b is None else torch.from_numpy(b), None if m is None else torch.from_numpy(m)
        )
        js, jmask, jd = model.prompt_encoder(p, b, None if m is None else m[:, 0])
        assert np.asarray(jmask).all()
        assert np.abs(ts.numpy() - np.asarray(js)).max() <= TOL
        assert np.abs(td.numpy() - np.asarray(jd).transpose(0, 3, 1, 2)).max() <= TOL


CASES = {
    "pos+neg points": dict(point_coords=[[50.0, 60.0], [300.0, 200.0]], point_labels=[1, 0]),
    "box": dict(box=[30.0, 40.0, 350.0, 260.0]),
    "points+box": dict(point_coords=[[120.0, 100.0]], point_labels=[1], box=[30.0, 40.0, 350.0, 260.0]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_mask", [False, True])
def test_predict(tiny, case, multimask, with_mask):
    *_, tp, jp, image = tiny
    kw = {k: np.asarray(v) for k, v in CASES[case].items()}
    if with_mask:
        kw["mask_input"] = tp.predict(**kw, multimask_output=False)[2]
    a = tp.predict(**kw, multimask_output=multimask)
    b = jp.predict(**kw, multimask_output=multimask)
    assert a[0].shape == b[0].shape == ((3 if multimask else 1), *image.shape[:2])
    assert a[0].dtype == b[0].dtype == bool
    assert (a[0] == b[0]).mean() >= 0.999
    assert np.abs(a[1] - b[1]).max() <= TOL
    assert np.abs(a[2] - b[2]).max() <= TOL
    logits = jp.predict(**kw, multimask_output=multimask, return_logits=True)[0]
    assert logits.dtype == np.float32 and (logits > 0).mean() == b[0].mean()


def test_batched_prompts_match_single_calls(tiny):
    *_, tp, jp, _ = tiny
    boxes = np.array([[30, 40, 350, 260], [0, 0, 100, 100], [200, 150, 400, 290]], np.float64)
    masks, iou, low = jp.predict_batch(boxes=boxes, multimask_output=True)
    assert masks.shape == (3, 3, 300, 410)
    tb = torch.as_tensor(tp.transform.apply_boxes(boxes, (300, 410)), dtype=torch.float)
    tmasks, tiou, tlow = tp.predict_torch(None, None, tb, multimask_output=True)
    assert np.abs(tiou.numpy() - iou).max() <= TOL
    assert np.abs(tlow.numpy() - low).max() <= TOL
    assert (tmasks.numpy() == masks).mean() >= 0.999


def test_compilations_stay_bounded(tiny):
    *_, jp, _ = tiny
    jp.set_image(np.zeros((200, 300, 3), np.uint8))
    rng = np.random.default_rng(0)
    before = jp._decode._cache_size()
    for i in range(24):
        n = int(rng.integers(1, 5))
        kw = {}
        if i % 3 != 1:
            kw["point_coords"] = rng.uniform(0, 200, (n, 2))
            kw["point_labels"] = rng.integers(0, 2, n)
        if i % 3 != 0:
            kw["box"] = np.array([10, 10, 150, 120])
        if i % 4 == 0:
            kw["mask_input"] = rng.normal(size=(1, 64, 64)).astype(np.float32)
        jp.predict(**kw, multimask_output=bool(i % 2))
    # point buckets {1, 2, 4, 8} x multimask {on, off}: mixing prompt kinds adds nothing.
    assert jp._decode._cache_size() - before <= 8


@pytest.mark.slow
def test_full_vit_b_once():
    """Real shapes: 64x64 tokens, window padding 64 -> 70, 12 blocks, 4 global blocks."""
    ref, model = _pair("vit_b", seed=3)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tp, jp = TorchPredictor(ref), SamPredictor(model)
    tp.set_image(image)
    jp.set_image(image)
    emb = np.abs(tp.get_image_embedding().numpy() - jp.get_image_embedding()).max()
    kw = dict(point_coords=np.array([[100.0, 200.0], [500.0, 50.0]]), point_labels=np.array([1, 0]))
    a = tp.predict(**kw, box=np.array([50, 60, 600, 400]))
    b = jp.predict(**kw, box=np.array([50, 60, 600, 400]))
    logit_diff, iou_diff = np.abs(a[2] - b[2]).max(), np.abs(a[1] - b[1]).max()
    print(f"\nvit_b: embedding {emb:.2e}, low-res logits {logit_diff:.2e}, iou {iou_diff:.2e}")
    assert emb <= TOL
    assert np.abs(a[2] - b[2]).max() <= TOL
    assert np.abs(a[1] - b[1]).max() <= TOL
    assert (a[0] == b[0]).mean() >= 0.999
