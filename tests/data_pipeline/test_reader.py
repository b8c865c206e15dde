"""VNS-SEG reader: layout table, bad inputs, pixel conventions, edge maps."""

import logging
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from data_pipeline import edges, synthetic, vns_seg
from data_pipeline.vns_seg import DataError


@pytest.fixture()
def root(tmp_path):
    synthetic.generate(tmp_path, num=2, seed=1, subsets=["COD-TR", "CAMO", "Kvasir", "Thin-Dark"])
    return tmp_path


def _camo(root, stem="camo_00000"):
    spec = vns_seg.SUBSETS["CAMO"]
    return os.path.join(root, spec.im_dir, stem + spec.im_ext), os.path.join(root, spec.gt_dir, stem + spec.gt_ext)


def test_table_has_the_paper_subsets():
    assert vns_seg.SEEN == ("CAMO", "COD10K", "Kvasir", "ClinicDB", "DIS-Dark", "Thin-Dark")
    assert vns_seg.UNSEEN == ("NC4K", "ColonDB", "ETIS", "LIS", "CDS2K")
    assert len(vns_seg.TRAIN_SOURCES) == 5
    assert all(vns_seg.SUBSETS[n].edge_dir for n in vns_seg.TRAIN_SOURCES)
    assert vns_seg.resolve_names("thin_dark") == ["Thin-Dark"]
    with pytest.raises(KeyError, match="unknown VNS-SEG subset"):
        vns_seg.resolve_names("nope")


def test_absent_subsets_are_reported_by_name(root, caplog):
    with caplog.at_level(logging.WARNING):
        report = vns_seg.scan(root, "all")
    assert set(report.absent) == set(vns_seg.SUBSETS) - {"COD-TR", "CAMO", "Kvasir", "Thin-Dark"}
    assert "ETIS" in caplog.text and "LIS" in caplog.text
    assert len(report.examples) == 8 and "absent subsets: " in report.summary()


def test_same_folder_images_and_masks(root):
    # Thin-Dark keeps .jpg images and .png masks in one folder: only the images are listed.
    refs = vns_seg.scan(root, "Thin-Dark").examples
    assert [r.name for r in refs] == ["thin_dark_00000", "thin_dark_00001"]
    assert all(r.image_path.endswith(".jpg") and r.mask_path.endswith(".png") for r in refs)


def test_missing_mask_names_both_files(root):
    im_path, gt_path = _camo(root)
    os.remove(gt_path)
    with pytest.raises(DataError) as e:
        vns_seg.scan(root, "CAMO")
    assert im_path in str(e.value) and gt_path in str(e.value)
    report = vns_seg.scan(root, "CAMO", skip_bad=True)
    assert len(report.examples) == 1 and len(report.skipped) == 1 and "skipped 1 files" in report.summary()


def test_mask_of_other_size_names_both_files(root):
    im_path, gt_path = _camo(root)
    cv2.imwrite(gt_path, np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match="size mismatch") as e:
        vns_seg.scan(root, "CAMO")
    assert im_path in str(e.value) and gt_path in str(e.value)
    assert len(vns_seg.scan(root, "CAMO", skip_bad=True).skipped) == 1
    # Also caught at load time when the scan skipped the header check.
    ref = vns_seg.scan(root, "CAMO", check_sizes=False).examples[0]
    with pytest.raises(DataError, match="size mismatch") as e:
        vns_seg.load_example(ref)
    assert im_path in str(e.value) and gt_path in str(e.value)


def test_corrupt_image(root):
    im_path, _ = _camo(root)
    with open(im_path, "wb") as f:
        f.write(b"this is not a jpeg")
    with pytest.raises(DataError, match="cannot read") as e:
        vns_seg.scan(root, "CAMO")
    assert im_path in str(e.value)
    assert len(vns_seg.scan(root, "CAMO", skip_bad=True).examples) == 1
    ref = vns_seg.scan(root, "CAMO", check_sizes=False).examples[0]
    with pytest.raises(DataError, match="cannot read") as e:
        vns_seg.load_example(ref)
    assert im_path in str(e.value)


def test_zero_one_mask_becomes_0_255(root):
    _, gt_path = _camo(root)
    original = cv2.imread(gt_path, cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(gt_path, (original > 128).astype(np.uint8))
    ex = vns_seg.load_example(vns_seg.scan(root, "CAMO").examples[0])
    assert set(np.unique(ex["mask"])) == {0, 255}
    np.testing.assert_array_equal(ex["mask"], np.where(original > 128, 255, 0))
    # Soft masks whose max is not 1 are left alone; RGB masks keep their first channel.
    assert vns_seg.to_mask(np.array([[0, 1, 2]], np.uint8)).tolist() == [[0, 1, 2]]
    rgb_mask = np.dstack([np.full((2, 2), 7), np.zeros((2, 2)), np.zeros((2, 2))]).astype(np.uint8)
    assert vns_seg.to_mask(rgb_mask).max() == 7


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P"])
def test_grey_and_alpha_images_become_rgb(root, mode):
    im_path, _ = _camo(root)
    rgb = np.asarray(Image.open(im_path).convert("RGB"))
    png_path = im_path[: -len(".jpg")] + ".png"
    Image.fromarray(rgb).convert(mode).save(png_path)
    ref = vns_seg.ExampleRef("CAMO", "x", png_path, _camo(root)[1], None)
    image = vns_seg.load_example(ref)["image"]
    assert image.shape == rgb.shape and image.dtype == np.uint8
    expected = np.asarray(Image.fromarray(rgb).convert(mode).convert("RGB")) if mode == "P" else rgb
    if mode in ("L", "LA"):
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        expected = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(image, expected)


def _reference_boundary(mask):
    contours, _ = cv2.findContours(mask.copy(), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 255, 5)
    return out


def test_edges_read_when_present_else_computed(root):
    refs = vns_seg.scan(root, "COD-TR").examples
    assert all(r.edge_path is not None for r in refs)
    stored = vns_seg.load_example(refs[0])
    os.remove(refs[0].edge_path)
    ref = vns_seg.scan(root, "COD-TR").examples[0]
    assert ref.edge_path is None
    computed = vns_seg.load_example(ref)
    np.testing.assert_array_equal(stored["boundary"], computed["boundary"])
    np.testing.assert_array_equal(computed["boundary"], _reference_boundary(computed["mask"]))
    assert computed["boundary"].max() == 255


def test_edge_target_is_5x5_dilation_scaled():
    boundary = np.zeros((20, 30), np.uint8)
    boundary[10, 15] = 255
    target = edges.edge_target(boundary)
    assert target.dtype == np.float32
    expected = np.zeros((20, 30), np.float32)
    expected[8:13, 13:18] = 1.0
    np.testing.assert_array_equal(target, expected)


def test_source_len_and_items(root):
    src = vns_seg.VnsSegSource(root, ["CAMO", "Kvasir"])
    assert len(src) == 4
    ex = src[3]
    assert ex["subset"] == "Kvasir" and ex["image"].shape[:2] == ex["mask"].shape == ex["boundary"].shape
    with pytest.raises(DataError, match="no VNS-SEG examples"):
        vns_seg.VnsSegSource(root, ["ETIS"])
