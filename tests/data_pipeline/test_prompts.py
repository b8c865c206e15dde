"""Prompt samplers against torch replays of utils/misc.py (masks_to_boxes, masks_sample_points, masks_noise,
box_noise)."""

import numpy as np
import pytest

from data_pipeline import prompts, transforms

torch = pytest.importorskip("torch", reason="parity against PyTorch needs the [dev] extra")
F = torch.nn.functional


def torch_masks_to_boxes(masks):
    h, w = masks.shape[-2:]
    y, x = torch.meshgrid(torch.arange(0, h, dtype=torch.float), torch.arange(0, w, dtype=torch.float), indexing="ij")
    x_mask = (masks > 128) * x.unsqueeze(0)
    x_max = x_mask.flatten(1).max(-1)[0]
    x_min = x_mask.masked_fill(~(masks > 128), 1e8).flatten(1).min(-1)[0]
    y_mask = (masks > 128) * y.unsqueeze(0)
    y_max = y_mask.flatten(1).max(-1)[0]
    y_min = y_mask.masked_fill(~(masks > 128), 1e8).flatten(1).min(-1)[0]
    return torch.stack([x_min, y_min, x_max, y_max], 1)


def torch_masks_noise(masks, noise):
    def incoherent(m, sfact):
        h, w = m.shape[-2:]
        small = F.interpolate(m, (h // sfact, w // sfact), mode="bilinear")
        return ((m - F.interpolate(small, (h, w), mode="bilinear")).abs() >= 0.01).float()

    v = masks / 255
    return ((v + noise * incoherent(v, 8)) > 0.5).float() * 255


def _masks(rng, n=4, size=1024):
    masks = np.zeros((n, size, size), np.float32)
    for i in range(n):
        y0, x0 = rng.integers(0, size - 200, 2)
        masks[i, y0 : y0 + rng.integers(20, 200), x0 : x0 + rng.integers(20, 200)] = 255
        masks[i] = np.clip(masks[i] + rng.normal(0, 60, (size, size)) * (masks[i] > 0), 0, 255)  # soft values
    return masks


def test_box_matches_released_including_empty():
    rng = np.random.default_rng(0)
    masks = _masks(rng)
    masks[3] = 100.0  # nothing above 128: the degenerate box
    expected = torch_masks_to_boxes(torch.from_numpy(masks)).numpy()
    got = np.stack([prompts.box_from_mask(m) for m in masks])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[3], prompts.EMPTY_BOX)


def test_points_are_distinct_foreground_pixels():
    rng = np.random.default_rng(0)
    mask = _masks(rng, 1)[0]
    pts, labels = prompts.sample_points(mask, np.random.default_rng(1))
    assert pts.shape == (10, 2) and pts.dtype == np.float32 and labels.dtype == np.int32
    assert (labels == 1).all() and len({tuple(p) for p in pts}) == 10
    assert (mask[pts[:, 1].astype(int), pts[:, 0].astype(int)] > 128).all()
    # Uniform over foreground: many draws cover the foreground evenly (each pixel ~ equally likely).
    small = np.zeros((8, 8), np.float32)
    small[2:4, 3:6] = 255  # 6 pixels
    hits = np.zeros((8, 8))
    g = np.random.default_rng(2)
    for _ in range(600):
        p, lab = prompts.sample_points(small, g)
        assert (lab[:6] == 1).all() and (lab[6:] == -1).all() and (p[6:] == 0).all()
        hits[p[:6, 1].astype(int), p[:6, 0].astype(int)] += 1
    assert (hits[2:4, 3:6] == 600).all() and hits.sum() == 3600


def test_noisy_mask_matches_masks_noise():
    rng = np.random.default_rng(0)
    masks = _masks(rng, 2)
    for i, m in enumerate(masks):
        g1, g2 = np.random.default_rng(i), np.random.default_rng(i)
        got = prompts.noisy_mask(m, g1)
        noise = torch.from_numpy(g2.standard_normal((256, 256), dtype=np.float32))[None, None]
        m256 = F.interpolate(torch.from_numpy(m)[None, None], size=(256, 256), mode="bilinear")
        expected = torch_masks_noise(m256, noise)[0, 0].numpy()
        assert got.shape == (256, 256) and got.dtype == np.float32 and set(np.unique(got)) <= {0.0, 255.0}
        assert (got != expected).mean() < 1e-3  # bilinear float ties at the 0.01 / 0.5 thresholds only
        assert (got != (transforms.resize_bilinear(m, (256, 256)) > 127.5) * 255).any()  # noise applied


def test_noisy_box_released_formula():
    box = np.array([100, 200, 300, 260], np.float32)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    got = prompts.noisy_box(box, g1)
    u = torch.from_numpy(g2.random(4, dtype=np.float32))
    b = torch.from_numpy(box)[None]
    cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], -1)
    diff = torch.zeros_like(cxcywh)
    diff[:, :2] = cxcywh[:, 2:] / 2
    diff[:, 2:] = cxcywh[:, 2:]
    cxcywh = cxcywh + torch.mul(u * 2 - 1.0, diff) * 0.1
    cx, cy, w, h = cxcywh.unbind(-1)
    expected = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1).clamp(0, 1024)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # Bounds: centre within 5% of the size, size within 10%; clamped to the 1024 frame.
    many = np.stack([prompts.noisy_box(box, np.random.default_rng(s)) for s in range(500)])
    w, h = many[:, 2] - many[:, 0], many[:, 3] - many[:, 1]
    assert (np.abs(w - 200) <= 20.01).all() and (np.abs(h - 60) <= 6.01).all()
    edge_box = prompts.noisy_box(np.array([0, 0, 1023, 1023], np.float32), np.random.default_rng(0))
    assert edge_box.min() >= 0 and edge_box.max() <= 1024


def test_batch_prompt_choice_rules():
    rng = np.random.default_rng(0)
    masks = _masks(rng, 4, 256)
    types = np.concatenate(
        [prompts.sample_train_prompts(masks, np.random.default_rng(s))["prompt_type"] for s in range(300)]
    )
    assert set(np.unique(types)) == {0, 1, 2} and all(0.28 < np.mean(types == t) < 0.39 for t in range(3))
    masks[1] = 0  # an empty mask in the batch: points are removed for the whole batch, as in the release
    for s in range(50):
        out = prompts.sample_train_prompts(masks, np.random.default_rng(s))
        assert set(np.unique(out["prompt_type"])) <= {0, 2}
        np.testing.assert_array_equal(out["box"][1], prompts.EMPTY_BOX)
        assert (out["point_labels"][1] == -1).all() and (out["point_labels"][0] == 1).all()
