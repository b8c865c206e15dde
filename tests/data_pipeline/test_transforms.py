"""Transforms against a NumPy replay of F.interpolate(bilinear, align_corners=False) and against torch itself."""

import numpy as np
import pytest

from data_pipeline import transforms

torch = pytest.importorskip("torch", reason="parity against PyTorch needs the [dev] extra")
F = torch.nn.functional


def np_bilinear(x, size):
    """Torch-free reference of F.interpolate(mode="bilinear", align_corners=False), float64, separable."""
    x = np.asarray(x, np.float64)

    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, ly = taps(x.shape[0], size[0])
    x0, x1, lx = taps(x.shape[1], size[1])
    ly = ly.reshape((-1, 1) + (1,) * (x.ndim - 2))
    rows = x[y0] * (1 - ly) + x[y1] * ly
    lx = lx.reshape((1, -1) + (1,) * (x.ndim - 2))
    return rows[:, x0] * (1 - lx) + rows[:, x1] * lx


def torch_bilinear(x, size):
    t = torch.from_numpy(np.asarray(x, np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    out = F.interpolate(t, size=size, mode="bilinear")[0]
    return (out.permute(1, 2, 0) if x.ndim == 3 else out[0]).numpy()


SIZES = [
    ((240, 320), (1536, 2048)),
    ((384, 512), (77, 102)),
    ((301, 401), (1024, 1024)),
    ((1024, 1024), (256, 256)),
    ((256, 256), (32, 32)),
    ((32, 32), (256, 256)),
    ((50, 70), (50, 70)),
]


@pytest.mark.parametrize("src,dst", SIZES)
def test_resize_matches_references(src, dst):
    x = np.random.default_rng(0).uniform(0, 255, src + (3,)).astype(np.float32)
    y = transforms.resize_bilinear(x, dst)
    assert y.shape == dst + (3,) and y.dtype == np.float32
    np.testing.assert_allclose(y, np_bilinear(x, dst), atol=2e-2, rtol=0)
    np.testing.assert_allclose(y, torch_bilinear(x, dst), atol=2e-2, rtol=0)
    # The uint8 truncation agrees with torch's up to rare float ties.
    assert (y.astype(np.uint8) != torch_bilinear(x, dst).astype(np.uint8)).mean() < 5e-3
    np.testing.assert_allclose(transforms.resize_bilinear(x[..., 0], dst), np_bilinear(x[..., 0], dst), atol=2e-2)


def test_jitter_size_replays_torch_float32_arithmetic():
    rng = np.random.default_rng(0)
    desired = torch.tensor(1024)
    for _ in range(300):
        h, w = int(rng.integers(20, 3000)), int(rng.integers(20, 3000))
        u = np.float32(rng.random())
        image_size = torch.tensor([h, w])
        random_scale = torch.tensor([u]) * (2.0 - 0.1) + 0.1
        scaled = (random_scale * desired).round()
        scale = torch.minimum(scaled / image_size[0], scaled / image_size[1])
        expected = tuple((image_size * scale).round().long().tolist())
        assert transforms.jitter_size(h, w, u) == expected
    assert max(transforms.jitter_size(300, 400, 0.999999)) == 2048
    assert max(transforms.jitter_size(300, 400, 0.0)) == 102


def torch_large_scale_jitter(image, mask, edge, u, rng):
    """LargeScaleJitter.__call__ of utils/dataloader_edge.py with the scale draw given and offsets from rng."""
    im = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
    label = torch.from_numpy(mask.astype(np.float32))[None]
    ed = torch.from_numpy(edge)[None]
    desired = torch.tensor(1024)
    image_size = torch.tensor(im.shape[-2:])
    scaled_size = (torch.tensor([np.float32(u)]) * (2.0 - 0.1) + 0.1) * desired
    scaled_size = scaled_size.round()
    scale = torch.minimum(scaled_size / image_size[0], scaled_size / image_size[1])
    scaled_size = (image_size * scale).round().long()
    out = [F.interpolate(t[None], scaled_size.tolist(), mode="bilinear")[0] for t in (im, label, ed)]
    crop = (min(desired, scaled_size[0]), min(desired, scaled_size[1]))
    off_h = int(rng.integers(0, max(scaled_size[0] - crop[0], 0).item() + 1))
    off_w = int(rng.integers(0, max(scaled_size[1] - crop[1], 0).item() + 1))
    out = [t[:, off_h : off_h + crop[0].item(), off_w : off_w + crop[1].item()] for t in out]
    pad_h, pad_w = max(desired - out[0].size(1), 0).item(), max(desired - out[0].size(2), 0).item()
    im, label, ed = (F.pad(t, [0, pad_w, 0, pad_h], value=v) for t, v in zip(out, (128, 0, 0), strict=True))
    return im.permute(1, 2, 0).numpy().astype(np.uint8), label[0].numpy(), ed[0].numpy()


@pytest.mark.parametrize("seed", range(6))
def test_large_scale_jitter_matches_released(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(200, 600)), int(rng.integers(200, 600))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h // 2, w // 3 : w // 2] = 255
    edge = rng.random((h, w), dtype=np.float32)
    ours_rng, ref_rng = np.random.default_rng(seed + 100), np.random.default_rng(seed + 100)
    got = transforms.large_scale_jitter(image, mask, edge, ours_rng)
    expected = torch_large_scale_jitter(image, mask, edge, ref_rng.random(), ref_rng)
    assert got[0].shape == (1024, 1024, 3) and got[0].dtype == np.uint8
    assert got[1].shape == got[2].shape == (1024, 1024) and got[1].dtype == got[2].dtype == np.float32
    assert (got[0] != expected[0]).mean() < 5e-3 and np.abs(got[0].astype(int) - expected[0]).max() <= 1
    np.testing.assert_allclose(got[1], expected[1], atol=2e-2)
    np.testing.assert_allclose(got[2], expected[2], atol=1e-4)


def test_jitter_pads_bottom_right_with_128_and_0():
    rng = np.random.default_rng(0)
    image = np.full((300, 400, 3), 7, np.uint8)
    mask = np.full((300, 400), 255, np.uint8)
    # Draw a small scale: the image occupies the top-left corner only.
    while True:
        state = rng.bit_generator.state
        if rng.random() < 0.3:
            break
    rng.bit_generator.state = state
    img, m, e = transforms.large_scale_jitter(image, mask, mask.astype(np.float32) / 255, rng)
    nh, nw = int((m > 0).any(axis=1).sum()), int((m > 0).any(axis=0).sum())
    assert nh < 1024 and nw < 1024
    assert (img[:nh, :nw] == 7).all() and (img[nh:] == 128).all() and (img[:, nw:] == 128).all()
    assert (m[nh:] == 0).all() and (e[:, nw:] == 0).all() and (m[:nh, :nw] == 255).all()


def test_hflip_flips_all_together():
    rng = np.random.default_rng(0)
    a, b = rng.random((4, 5, 3)), rng.random((4, 5))
    fa, fb = transforms.hflip(a, b)
    np.testing.assert_array_equal(fa, a[:, ::-1]) and np.testing.assert_array_equal(fb, b[:, ::-1])
    flips = [transforms.random_hflip(np.random.default_rng(s), b)[0] is not b for s in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_eval_resize_exact_1024_no_aspect():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 333, 3), dtype=np.uint8)
    mask = (rng.random((240, 333)) > 0.5).astype(np.uint8) * 255
    img1024, mask1024 = transforms.eval_resize(image, mask)
    assert img1024.shape == (1024, 1024, 3) and img1024.dtype == np.uint8 and mask1024.dtype == np.float32
    ref = torch_bilinear(image.astype(np.float32), (1024, 1024))
    assert (img1024 != ref.astype(np.uint8)).mean() < 5e-3  # truncation, not rounding
    np.testing.assert_allclose(mask1024, torch_bilinear(mask.astype(np.float32), (1024, 1024)), atol=2e-2)
