"""VNS-SEG reader: the released folder layout, file pairing and pixel conventions.

Everything is found from one root directory (the authors' ``VNS-Seg`` folder, which the released
code reaches through the ``VNS-Train/data`` symlink). ``SUBSETS`` is the only place where relative
paths are written down; the TFDS builder, the grain pipelines and the synthetic generator all use it.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from data_pipeline import edges
from data_pipeline.images import ImageReadError, open_image, read_grey, read_image, read_image_size

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A file of the dataset is missing, unreadable or inconsistent with its pair."""


@dataclasses.dataclass(frozen=True)
class SubsetSpec:
    """Where one subset lives below the root. ``released_name`` is the name MyTrain.py prints."""

    name: str
    split: str  # "train", "seen" or "unseen" (VNS-SEG); "salient" or "pretrain" (synthetic salient scenes)
    released_name: str
    im_dir: str
    gt_dir: str
    im_ext: str
    gt_ext: str = ".png"
    edge_dir: str | None = None
    kind: str = ""  # scene type for the synthetic generator: camouflage, low_contrast, defect, low_light, salient
    per_object: bool = False  # one mask per object, <stem>_<k><gt_ext>; each object is its own example

    @property
    def tfds_config(self) -> str:
        """TFDS builder-config name (lower case, no punctuation)."""
        return self.name.lower().replace("-", "_")


def _spec(*args, **kwargs) -> tuple[str, SubsetSpec]:
    spec = SubsetSpec(*args, **kwargs)
    return spec.name, spec


# Relative paths as in datasets/build_datasets.py (build_nosl). LIS and CDS2K are not under the root in the
# released code (LIS is absent from it, CDS2K is an absolute path to "CDS2K/{Image,GroundTruth}"); we place
# them at LIS/{Imgs,GT} and CDS2K/{Image,GroundTruth}.
# fmt: off
SUBSETS: dict[str, SubsetSpec] = dict(
    [
        # Training sources. Edge maps are pre-computed in the release (generate_boundary.py).
        _spec("COD-TR", "train", "COD", "COD/TrainDataset/Imgs", "COD/TrainDataset/GT", ".jpg",
              edge_dir="COD/TrainDataset/Edge", kind="camouflage"),
        _spec("Polyp-TR", "train", "polyp-train", "PolySeg/TrainDataset/image", "PolySeg/TrainDataset/masks", ".png",
              edge_dir="PolySeg/TrainDataset/b-map", kind="low_contrast"),
        _spec("DIS-TR-Dark", "train", "DIS5K-TR", "DIS5K/DIS-TR-1536/lowlight_im", "DIS5K/DIS-TR-1536/gt", ".png",
              edge_dir="DIS5K/DIS-TR-1536/b-map", kind="low_light"),
        _spec("Thin-TR-Dark", "train", "ThinObject5k-TR-low", "thin_object_detection/ThinObject5K_low/images_train",
              "thin_object_detection/ThinObject5K_low/images_train", ".jpg",
              edge_dir="thin_object_detection/ThinObject5K_low/b_map", kind="low_light"),
        _spec("FSS-Dark", "train", "FSS-low", "cascade_psp/fss_all-low/fss_all-low",
              "cascade_psp/fss_all-low/fss_all-low", ".jpg", edge_dir="cascade_psp/fss_all-low/b_map",
              kind="low_light"),
        # Seen evaluation subsets.
        _spec("CAMO", "seen", "CAMO", "COD/TestDataset/CAMO/Imgs", "COD/TestDataset/CAMO/GT", ".jpg",
              kind="camouflage"),
        _spec("COD10K", "seen", "COD10K", "COD/TestDataset/COD10K/Imgs", "COD/TestDataset/COD10K/GT", ".jpg",
              kind="camouflage"),
        _spec("Kvasir", "seen", "Kvasir", "PolySeg/TestDataset/Kvasir/images", "PolySeg/TestDataset/Kvasir/masks",
              ".png", kind="low_contrast"),
        _spec("ClinicDB", "seen", "CVC-ClinicDB", "PolySeg/TestDataset/CVC-ClinicDB/images",
              "PolySeg/TestDataset/CVC-ClinicDB/masks", ".png", kind="low_contrast"),
        _spec("DIS-Dark", "seen", "DIS5K-VD-low", "DIS5K/DIS-VD-1536/lowlight_im", "DIS5K/DIS-VD-1536/gt", ".png",
              kind="low_light"),
        _spec("Thin-Dark", "seen", "ThinObject5k-TE-low", "thin_object_detection/ThinObject5K_low/images_test",
              "thin_object_detection/ThinObject5K_low/images_test", ".jpg", kind="low_light"),
        # Unseen evaluation subsets.
        _spec("NC4K", "unseen", "NC4K", "COD/TestDataset/NC4K/Imgs", "COD/TestDataset/NC4K/GT", ".jpg",
              kind="camouflage"),
        _spec("ColonDB", "unseen", "CVC-ColonDB", "PolySeg/TestDataset/CVC-ColonDB/images",
              "PolySeg/TestDataset/CVC-ColonDB/masks", ".png", kind="low_contrast"),
        _spec("ETIS", "unseen", "ETIS", "PolySeg/TestDataset/ETIS/images", "PolySeg/TestDataset/ETIS/masks", ".png",
              kind="low_contrast"),
        _spec("LIS", "unseen", "LIS", "LIS/Imgs", "LIS/GT", ".jpg", kind="low_light"),
        _spec("CDS2K", "unseen", "cds2k", "CDS2K/Image", "CDS2K/GroundTruth", ".jpg", kind="defect"),
        # Not part of VNS-SEG: salient scenes (the paper's COCO column), several objects per image, one mask each.
        _spec("Salient", "salient", "Salient", "Salient/Imgs", "Salient/GT", ".jpg", kind="salient", per_object=True),
        # SAM pre-training on salient scenes (configs/sam_pretrain.py): its own images, so Salient stays held out.
        _spec("Salient-TR", "pretrain", "Salient-TR", "Salient-TR/Imgs", "Salient-TR/GT", ".jpg", kind="salient",
              per_object=True),
    ]
)
# fmt: on

TRAIN_SOURCES: tuple[str, ...] = tuple(n for n, s in SUBSETS.items() if s.split == "train")
SEEN: tuple[str, ...] = tuple(n for n, s in SUBSETS.items() if s.split == "seen")
UNSEEN: tuple[str, ...] = tuple(n for n, s in SUBSETS.items() if s.split == "unseen")
EVAL_SUBSETS: tuple[str, ...] = SEEN + UNSEEN
SALIENT: tuple[str, ...] = tuple(n for n, s in SUBSETS.items() if s.split == "salient")


@dataclasses.dataclass(frozen=True)
class ExampleRef:
    """One image of a subset and the files that belong to it (edge_path None: computed from the mask)."""

    subset: str
    name: str
    image_path: str
    mask_path: str
    edge_path: str | None


@dataclasses.dataclass
class ScanReport:
    """Result of ``scan``: the usable examples, subsets not found under the root, files skipped and why."""

    examples: list[ExampleRef]
    absent: list[str]
    skipped: list[str]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for ex in self.examples:
            counts[ex.subset] = counts.get(ex.subset, 0) + 1
        parts = [f"{len(self.examples)} examples ({', '.join(f'{k}: {v}' for k, v in counts.items())})"]
        if self.absent:
            parts.append(f"absent subsets: {', '.join(self.absent)}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} files")
        return "; ".join(parts)


def resolve_names(names: str | Iterable[str]) -> list[str]:
    """Accepts subset names, TFDS config names, or the groups "train", "seen", "unseen", "eval", "salient", "all"."""
    groups = {
        "train": TRAIN_SOURCES,
        "seen": SEEN,
        "unseen": UNSEEN,
        "eval": EVAL_SUBSETS,
        "salient": SALIENT,
        "all": tuple(SUBSETS),
    }
    by_config = {s.tfds_config: n for n, s in SUBSETS.items()}
    out: list[str] = []
    for name in [names] if isinstance(names, str) else names:
        if name in groups:
            out.extend(groups[name])
        elif name in SUBSETS:
            out.append(name)
        elif name in by_config:
            out.append(by_config[name])
        else:
            raise KeyError(f"unknown VNS-SEG subset {name!r}; known: {', '.join(SUBSETS)} or {', '.join(groups)}")
    return out


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) after a full decode; raises DataError naming the file if it is unreadable or truncated."""
    try:
        return read_image_size(path)
    except ImageReadError as e:
        raise DataError(f"cannot read {e}") from e


def scan(
    root: str | os.PathLike,
    names: str | Iterable[str] = "all",
    *,
    skip_bad: bool = False,
    check_sizes: bool = True,
) -> ScanReport:
    """Lists the examples of the named subsets under ``root``.

    A subset whose image folder is missing is reported in ``absent`` (and logged), not raised. An image whose mask
    is missing, or (``check_sizes``: every file fully decoded) whose mask/edge has another size, or which is unreadable
    or truncated, is a ``DataError`` naming the file(s); with ``skip_bad`` it is skipped, counted in ``skipped`` and
    logged at the end.
    Files are sorted by name so that the order, hence any seeded shuffle, does not depend on the file system.
    """
    root = os.fspath(root)
    report = ScanReport([], [], [])
    for name in resolve_names(names):
        spec = SUBSETS[name]
        im_dir = os.path.join(root, spec.im_dir)
        if not os.path.isdir(im_dir):
            report.absent.append(name)
            continue
        image_paths = sorted(glob.glob(os.path.join(glob.escape(im_dir), "*" + spec.im_ext)))
        if not image_paths:
            report.absent.append(name)
            continue
        gt_dir = os.path.join(root, spec.gt_dir)
        objects = _per_object_masks(gt_dir, spec.gt_ext) if spec.per_object else {}
        for im_path in image_paths:
            stem = os.path.basename(im_path)[: -len(spec.im_ext)]
            # A per-object subset has one example per object mask, named like the mask.
            mask_stems = [f"{stem}_{k}" for k in objects.get(stem, [])] if spec.per_object else [stem]
            mask_paths = [os.path.join(gt_dir, m + spec.gt_ext) for m in mask_stems]
            try:
                if not mask_paths or not all(os.path.isfile(m) for m in mask_paths):
                    expected = os.path.join(gt_dir, stem + ("_<k>" if spec.per_object else "") + spec.gt_ext)
                    raise DataError(f"image {im_path} has no mask (expected {expected})")
                im_size = _image_size(im_path) if check_sizes else None
                refs = []
                for mask_stem, mask_path in zip(mask_stems, mask_paths, strict=True):
                    edge_path = None
                    if spec.edge_dir is not None:
                        candidate = os.path.join(root, spec.edge_dir, mask_stem + spec.gt_ext)
                        edge_path = candidate if os.path.isfile(candidate) else None
                    for other in (mask_path, edge_path) if check_sizes else ():
                        if other is not None and _image_size(other) != im_size:
                            raise DataError(
                                f"size mismatch: image {im_path} is {im_size}, {other} is {_image_size(other)}"
                            )
                    refs.append(ExampleRef(name, mask_stem, im_path, mask_path, edge_path))
            except DataError as e:
                if not skip_bad:
                    raise
                report.skipped.append(str(e))
                continue
            report.examples.extend(refs)
    if report.absent:
        log.warning("VNS-SEG subsets absent under %s: %s", root, ", ".join(report.absent))
    if report.skipped:
        log.warning("VNS-SEG: skipped %d bad files:\n  %s", len(report.skipped), "\n  ".join(report.skipped))
    return report


def _per_object_masks(gt_dir: str, gt_ext: str) -> dict[str, list[int]]:
    """Image stem -> sorted object indices k of the ``<stem>_<k><gt_ext>`` files in ``gt_dir``."""
    pattern = re.compile(r"(.+)_(\d+)" + re.escape(gt_ext) + "$")
    found: dict[str, list[int]] = {}
    for name in os.listdir(gt_dir) if os.path.isdir(gt_dir) else []:
        if m := pattern.match(name):
            found.setdefault(m[1], []).append(int(m[2]))
    return {stem: sorted(ks) for stem, ks in found.items()}


def _read_mask(path: str) -> np.ndarray:
    """The mask file's pixels, fully decoded; a palette becomes its colours (as the released skimage reader does)."""
    try:
        with open_image(path) as im:
            if im.mode in ("P", "PA"):
                return np.asarray(im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"))
            return np.asarray(im)
    except ImageReadError as e:
        raise DataError(f"cannot read {e}") from e


def to_mask(gt: np.ndarray) -> np.ndarray:
    """First channel only; a mask whose max is 1 becomes 0/255 (HQ-SAM issue #42). Returns uint8 (H, W)."""
    if gt.ndim > 2:
        gt = gt[:, :, 0]
    if gt.dtype == bool:
        gt = gt.astype(np.uint8)
    if gt.dtype.kind == "f":
        raise DataError(f"float masks are not read (dtype {gt.dtype}); save the mask as 8-bit 0/255")
    if gt.max(initial=0) > 255:
        raise DataError(f"mask values exceed 255 (dtype {gt.dtype})")
    gt = gt.astype(np.uint8)
    if gt.max(initial=0) == 1:
        gt = np.where(gt == 1, np.uint8(255), gt)
    return gt


def read_boundary(path: str) -> np.ndarray:
    """A stored edge file as uint8 grey (H, W) (``images.read_grey``)."""
    try:
        return read_grey(path)
    except ImageReadError as e:
        raise DataError(f"cannot read edge map {e}") from e


def load_example(ref: ExampleRef, *, with_boundary: bool = True) -> dict[str, np.ndarray | str]:
    """Reads one example: ``image`` uint8 (H, W, 3), ``mask`` uint8 (H, W) 0..255, ``boundary`` uint8 (H, W).

    ``boundary`` is the undilated edge file (0/255) or, when absent, computed from the mask exactly as
    generate_boundary.py does; ``edges.edge_target`` turns it into the [0, 1] training target.
    """
    try:
        image = read_image(ref.image_path)
    except ImageReadError as e:
        raise DataError(f"cannot read {e}") from e
    try:
        mask = to_mask(_read_mask(ref.mask_path))
    except DataError as e:
        raise DataError(f"{ref.image_path} / {ref.mask_path}: {e}") from e
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"size mismatch: image {ref.image_path} is {image.shape[:2]}, mask {ref.mask_path} is {mask.shape}"
        )
    out: dict[str, np.ndarray | str] = {"image": image, "mask": mask, "name": ref.name, "subset": ref.subset}
    if with_boundary:
        boundary = read_boundary(ref.edge_path) if ref.edge_path else edges.boundary_from_mask(mask)
        if boundary.shape != mask.shape:
            raise DataError(
                f"size mismatch: mask {ref.mask_path} is {mask.shape}, edge {ref.edge_path} is {boundary.shape}"
            )
        out["boundary"] = boundary
    return out


class VnsSegSource:
    """Random-access source (grain ``RandomAccessDataSource`` protocol) over files found by ``scan``."""

    def __init__(
        self,
        root: str | os.PathLike,
        names: str | Sequence[str] = "train",
        *,
        skip_bad: bool = False,
        with_boundary: bool = True,
    ):
        self.report = scan(root, names, skip_bad=skip_bad)
        self.refs = self.report.examples
        self.with_boundary = with_boundary
        if not self.refs:
            raise DataError(f"no VNS-SEG examples of {names!r} under {os.fspath(root)}: {self.report.summary()}")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, np.ndarray | str]:
        return load_example(self.refs[index], with_boundary=self.with_boundary)

    def __repr__(self) -> str:
        return f"VnsSegSource({self.report.summary()})"
