"""Synthetic VNS-SEG generator: layout found by the reader, determinism, image sizes, CLI."""

import os

import numpy as np

from data_pipeline import synthetic, vns_seg


def test_all_subsets_found_by_the_reader(tmp_path):
    counts = synthetic.generate(tmp_path, num=1, seed=0)
    assert counts == {name: 1 for name in vns_seg.SUBSETS}
    report = vns_seg.scan(tmp_path, "all")
    assert report.absent == [] and report.skipped == []
    # One example per image, except per-object subsets (Salient): one per object mask.
    per_image = [ref for ref in report.examples if not vns_seg.SUBSETS[ref.subset].per_object]
    assert sorted(ref.subset for ref in per_image) == sorted(n for n, s in vns_seg.SUBSETS.items() if not s.per_object)
    assert {ref.subset for ref in report.examples} == set(vns_seg.SUBSETS)
    for ref in report.examples:
        assert (ref.edge_path is not None) == (vns_seg.SUBSETS[ref.subset].split == "train")
        ex = vns_seg.load_example(ref)
        h, w = ex["mask"].shape
        assert h != w and 240 <= min(h, w) <= 384 and 320 <= max(h, w) <= 512
        assert set(np.unique(ex["mask"])) == {0, 255}


def test_deterministic_and_parameterised():
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    for kind in synthetic.SCENES:
        a, b = synthetic.make_scene(kind, rng()), synthetic.make_scene(kind, rng())
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    big = synthetic.SceneParams(num_objects=(1, 1), object_size=(0.4, 0.4))
    small = synthetic.SceneParams(num_objects=(1, 1), object_size=(0.08, 0.08))
    assert (synthetic.make_scene("camouflage", rng(), big)[1] > 0).mean() > 4 * (
        synthetic.make_scene("camouflage", rng(), small)[1] > 0
    ).mean()


def _contrast(image, mask):
    fg, bg = image[mask > 0].mean(0), image[mask == 0].mean(0)
    return float(np.linalg.norm(fg - bg))


def test_kinds_are_non_salient():
    rng = np.random.default_rng(0)
    for kind in ("camouflage", "low_contrast"):
        c = np.mean([_contrast(*synthetic.make_scene(kind, rng)) for _ in range(5)])
        assert c < 60, kind  # object colour close to the background colour
    dark = [synthetic.make_scene("low_light", rng)[0].mean() for _ in range(5)]
    assert np.mean(dark) < 50
    loud = synthetic.SceneParams(contrast=0.8)
    assert np.mean([_contrast(*synthetic.make_scene("camouflage", rng, loud)) for _ in range(5)]) > 100


def test_cli(tmp_path):
    synthetic.main(["--out", str(tmp_path), "--num", "2", "--seed", "5", "--subsets", "ETIS", "LIS"])
    spec = vns_seg.SUBSETS["LIS"]
    assert sorted(os.listdir(tmp_path / spec.im_dir)) == ["lis_00000.jpg", "lis_00001.jpg"]
    assert vns_seg.scan(tmp_path, ["ETIS", "LIS"]).absent == []
