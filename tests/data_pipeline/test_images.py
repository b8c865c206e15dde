"""The one image reader: full decode, truncation and decompression bombs refused, explicit 16-bit / float scaling."""

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from data_pipeline import ImageReadError, read_image, synthetic, vns_seg
from data_pipeline.images import read_grey
from data_pipeline.vns_seg import DataError


def _scene(seed: int = 0, shape=(90, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3)).astype(np.uint8), (5, 5), 1.5)


def _truncated(tmp_path: Path, ext: str, keep: float = 0.5) -> Path:
    full = tmp_path / f"full{ext}"
    cv2.imwrite(str(full), _scene())
    data = full.read_bytes()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("ext, keep", [(".jpg", 0.5), (".jpg", 0.97), (".png", 0.5)])
def test_truncated_files_are_refused_by_name(tmp_path, ext, keep):
    path = _truncated(tmp_path, ext, keep)
    if ext == ".jpg":  # what the released code and vns_score read: a partial image with a grey bottom
        assert cv2.imread(str(path)) is not None
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    assert str(e.value).startswith(f"{path}: truncated (")


def test_truncation_is_caught_even_if_pil_was_told_to_accept_it(tmp_path):
    path = _truncated(tmp_path, ".jpg")
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as some libraries set it globally
    try:
        with pytest.raises(ImageReadError, match="truncated"):
            read_image(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A few hundred bytes that declare a width x height 8-bit grey PNG (IHDR, a tiny IDAT, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [20000, 10000])  # over 2x PIL's limit (an error in PIL), and over 1x (a warning)
def test_decompression_bombs_are_bad_files(tmp_path, side):
    path = _png_header_only(tmp_path / "bomb.png", side, side)
    assert path.stat().st_size < 1000
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: refused: ") and f"{side * side}" in msg and "decompression bomb" in msg


def test_damaged_and_missing_files_are_named(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=f"^{junk}: not a readable image"):
        read_image(junk)
    with pytest.raises(ImageReadError, match=f"^{tmp_path / 'none.png'}: no such file"):
        read_image(tmp_path / "none.png")


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 257, 32896, 65535], [1000, 20000, 40000, 60000]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    expected = np.round(values / 257.0).astype(np.uint8)
    assert image.shape == (2, 4, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.repeat(expected[:, :, None], 3, axis=2))
    assert (expected[0] == [0, 1, 128, 255]).all()  # before: every non-zero pixel became 255


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    values = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    image = read_image(path)
    np.testing.assert_array_equal(image[:, :, 0], np.round(values.astype(np.float64) * 255).astype(np.uint8))
    assert image[-1, -1, 0] == 255  # before: all black


@pytest.mark.parametrize(
    "values, expected",
    [
        (np.array([[0.0, 17.5], [250.0, 255.0]], np.float32), r"values in \[0, 255\]; only floats in \[0, 1\]"),
        (np.array([[0.0, np.nan], [0.5, 1.0]], np.float32), r"values in \[nan, nan\]"),
    ],
)
def test_float_tiff_of_unknown_scale_is_refused(tmp_path, values, expected):
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(ImageReadError, match=f"^{path}: float image with {expected}"):
        read_image(path)


def test_32_bit_integer_tiff_is_refused(tmp_path):
    path = tmp_path / "i.tif"
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(path)
    with pytest.raises(ImageReadError, match=f"^{path}: 32-bit integer image"):
        read_image(path)


def test_one_bit_image_is_0_255(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    path = tmp_path / "b.png"
    Image.fromarray(bits).save(path)
    np.testing.assert_array_equal(read_image(path)[:, :, 1], np.where(bits, 255, 0))


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_8_bit_pixels_equal_opencv(tmp_path, ext):
    """vns_score used cv2.imread; the shared reader decodes 8-bit files (and grey masks) to the same pixels."""
    path = tmp_path / f"a{ext}"
    cv2.imwrite(str(path), _scene(3, (61, 83)))
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path))[:, :, ::-1])
    grey_png = tmp_path / "g.png"
    cv2.imwrite(str(grey_png), _scene(4, (20, 30))[:, :, 0])
    np.testing.assert_array_equal(read_grey(grey_png), cv2.imread(str(grey_png), cv2.IMREAD_GRAYSCALE))
    # A colour file becomes grey with cvtColor's weights (cv2.imread converts inside the decoder: +-1 apart).
    np.testing.assert_array_equal(read_grey(path), cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY))


# ---------------------------------------------------------------- through the VNS-SEG reader


@pytest.fixture()
def root(tmp_path):
    synthetic.generate(tmp_path, num=2, seed=1, subsets=["CAMO", "COD-TR"])
    return tmp_path


def _paths(root, name):
    spec = vns_seg.SUBSETS[name]
    stem = f"{name.lower().replace('-', '_')}_00000"
    return (
        os.path.join(root, spec.im_dir, stem + spec.im_ext),
        os.path.join(root, spec.gt_dir, stem + spec.gt_ext),
        os.path.join(root, spec.edge_dir, stem + spec.gt_ext) if spec.edge_dir else None,
    )


def _cut(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def test_scan_decodes_fully_and_skips_a_truncated_image(root):
    im_path, _, _ = _paths(root, "CAMO")
    _cut(im_path)
    with pytest.raises(DataError) as e:
        vns_seg.scan(root, "CAMO")
    assert str(e.value).startswith(f"cannot read {im_path}: truncated")
    report = vns_seg.scan(root, "CAMO", skip_bad=True)
    assert len(report.examples) == 1 and len(report.skipped) == 1 and im_path in report.skipped[0]


@pytest.mark.parametrize("which", [1, 2])  # the mask, the stored edge map
def test_load_example_names_a_truncated_mask_or_edge_map(root, which):
    paths = _paths(root, "COD-TR")
    _cut(paths[which])
    ref = vns_seg.scan(root, "COD-TR", check_sizes=False).examples[0]
    with pytest.raises(DataError) as e:
        vns_seg.load_example(ref)
    assert f"{paths[which]}: truncated" in str(e.value)
