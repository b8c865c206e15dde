"""Synthetic scene kinds: VNS-score separation of salient vs VNS kinds, salient per-object masks, Salient layout."""

import os

import cv2
import numpy as np
import pytest

from data_pipeline import synthetic, vns_seg
from vnsjax.evaluation.vns_score import vns_terms

SMALL = synthetic.SceneParams(width=(256, 320), height=(192, 256))


def _scores(kind, num, seed=0):
    rng = np.random.default_rng([seed, 7])
    terms = [
        vns_terms(image, m, channel_order="rgb")
        for image, masks in (synthetic.make_instances(kind, rng, SMALL) for _ in range(num))
        for m in masks
    ]
    return np.array([t.score for t in terms if t.valid])


def test_vns_score_separates_salient_from_vns_kinds():
    # The targets: VNS kinds in the non-salient range (mean > 0.7) and spread (std >= 0.1), salient scenes
    # clearly below 0.7. 30 images per VNS kind: the pooled std's sampling error is about 0.006.
    vns = {kind: _scores(kind, 30) for kind in synthetic.VNS_KINDS}
    salient = _scores("salient", 12)
    pooled = np.concatenate(list(vns.values()))
    assert len(salient) >= 36 and len(pooled) >= 0.95 * 30 * len(vns)
    assert pooled.mean() > 0.7 and pooled.std() >= 0.1
    assert salient.mean() < 0.6
    for kind, s in vns.items():
        assert s.mean() > salient.mean() + 0.15, kind


def test_smooth_textures_would_not_spread():
    # The property the spread rests on: fine grain lowers the score (the blur term sees texture at the boundary).
    rng = np.random.default_rng(0)
    h, w = 200, 260
    mask = synthetic._blob(rng, h, w, 60)
    colours = np.array([[120, 110, 80], [80, 70, 50]], np.float32)
    scores = []
    for grain in (0.0, 50.0):
        tex = synthetic.Texture(colours, gain=0.6, sharp=1.0, grain=grain)
        img = tex.render(np.random.default_rng(1), h, w)
        scores.append(vns_terms(np.clip(img, 0, 255).astype(np.uint8), mask, channel_order="rgb").score)
    assert scores[0] - scores[1] > 0.15


def _edge_strength(image, mask):
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    m = (mask > 0).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    ring = cv2.dilate(m, kernel) > cv2.erode(m, kernel)
    inner = cv2.erode(m, np.ones((9, 9), np.uint8)) > 0
    return grad[ring].mean(), grad[inner].mean() if inner.any() else 0.0


def test_salient_scenes_have_several_disjoint_objects_matching_the_image():
    rng = np.random.default_rng(3)
    counts = []
    for _ in range(15):
        image, masks = synthetic.make_instances("salient", rng, SMALL)
        h, w = image.shape[:2]
        counts.append(len(masks))
        assert len(masks) >= 2
        stack = np.stack(masks) > 0
        assert set(np.unique(masks)) <= {0, 255}
        assert stack.sum(0).max() == 1  # layered: each pixel belongs to at most the top object
        assert (stack.sum((1, 2)) >= 0.002 * h * w).all()
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        background = ~stack.any(0)
        for m in stack:
            # An object differs in colour from the background and its outline is a strong edge in the image.
            assert np.linalg.norm(lab[m].mean(0) - lab[background].mean(0)) > 25
            ring, inner = _edge_strength(image, m.astype(np.uint8) * 255)
            assert ring > 2.5 * inner
        assert np.array_equal(
            synthetic.make_scene("salient", np.random.default_rng(9), SMALL)[1] > 0,
            np.stack(synthetic.make_instances("salient", np.random.default_rng(9), SMALL)[1]).any(0),
        )
    assert np.mean(counts) >= 3


def test_salient_subset_one_example_per_object(tmp_path):
    synthetic.generate(tmp_path, num=2, seed=0, subsets="salient", params=SMALL)
    spec = vns_seg.SUBSETS["Salient"]
    report = vns_seg.scan(tmp_path, "salient")
    assert report.absent == [] and report.skipped == []
    images = sorted(os.listdir(tmp_path / spec.im_dir))
    assert images == ["salient_00000.jpg", "salient_00001.jpg"]
    masks = sorted(os.listdir(tmp_path / spec.gt_dir))
    assert sorted(f"{r.name}.png" for r in report.examples) == masks and len(masks) >= 4
    for ref in report.examples:
        assert os.path.basename(ref.image_path) == ref.name.rsplit("_", 1)[0] + ".jpg"
        ex = vns_seg.load_example(ref)
        assert ex["mask"].shape == ex["image"].shape[:2] and ex["mask"].max() == 255
    # The VNS-SEG subsets are unchanged: no salient data among them.
    assert "Salient" not in vns_seg.EVAL_SUBSETS + vns_seg.TRAIN_SOURCES

    first = os.path.join(tmp_path, spec.im_dir, images[0])
    for name in masks:
        if name.startswith("salient_00000_"):
            os.remove(tmp_path / spec.gt_dir / name)
    with pytest.raises(vns_seg.DataError, match="has no mask") as e:
        vns_seg.scan(tmp_path, "Salient")
    assert first in str(e.value)
    assert {r.name.rsplit("_", 1)[0] for r in vns_seg.scan(tmp_path, "Salient", skip_bad=True).examples} == {
        "salient_00001"
    }
