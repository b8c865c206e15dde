"""TFDS builder ``vns_seg``: VNS-SEG from a manual directory to ArrayRecord, readable without TensorFlow.

One builder config per subset (``camo``, ``cod10k``, ..., names from ``SubsetSpec.tfds_config``) and ``train``
(all training sources). Training configs have a ``train`` split, evaluation configs a ``test`` split.
Build and read::

    import tensorflow_datasets as tfds
    import data_pipeline.tfds_builder  # registers "vns_seg"
    src = tfds.data_source("vns_seg/train", split="train", data_dir=DATA_DIR,
                           download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(
                               manual_dir=VNS_SEG_ROOT), "file_format": "array_record"})

Images are stored as lossless PNG after the reader's normalisation (RGB, 0/255 masks); ``boundary`` holds the
undilated edge map (the released edge file, or computed from the mask when absent).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds
from PIL import Image

from data_pipeline import vns_seg


@dataclasses.dataclass
class VnsSegConfig(tfds.core.BuilderConfig):
    subsets: tuple[str, ...] = ()
    split: str = "test"


def _configs() -> list[VnsSegConfig]:
    configs = [
        VnsSegConfig(
            name="train",
            subsets=vns_seg.TRAIN_SOURCES,
            split="train",
            description="All VNS-SEG training sources: " + ", ".join(vns_seg.TRAIN_SOURCES),
        )
    ]
    for name in vns_seg.EVAL_SUBSETS:
        spec = vns_seg.SUBSETS[name]
        configs.append(
            VnsSegConfig(
                name=spec.tfds_config,
                subsets=(name,),
                split="test",
                description=f"{name} ({spec.split} evaluation subset, {spec.kind})",
            )
        )
    return configs


class VnsSeg(tfds.core.GeneratorBasedBuilder):
    """VNS-SEG (VNS-SAM, Guo et al.): camouflaged, low-contrast and low-light segmentation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: released VNS-Train layout, per-subset configs."}
    BUILDER_CONFIGS = _configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the VNS-SEG dataset released with VNS-SAM from Hugging Face (https://huggingface.co/guogq/VNS-SAM,"
        " dataset files linked from https://github.com/guangqian-guo/VNS-SAM) and extract it so that `manual_dir`"
        " is the folder the released code reaches as VNS-Train/data, i.e. it contains:\n"
        + "\n".join(
            f"  {s.name:13s} {s.im_dir} (*{s.im_ext}), {s.gt_dir} (*{s.gt_ext})"
            + (f", {s.edge_dir}" if s.edge_dir else "")
            for s in vns_seg.SUBSETS.values()
            if s.split in ("train", "seen", "unseen")
        )
        + "\nLIS and CDS2K are not under that folder in the release: place them at LIS/{Imgs,GT} and"
        " CDS2K/{Image,GroundTruth}. Edge folders are optional (computed from masks when missing).\n"
        "For a quick synthetic stand-in: python -m data_pipeline.synthetic --out DIR --num 8."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "boundary": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "name": tfds.features.Text(),
                    "subset": tfds.features.Text(),
                }
            ),
            homepage="https://github.com/guangqian-guo/VNS-SAM",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {self.builder_config.split: self._generate_examples(str(dl_manager.manual_dir))}

    def _generate_examples(self, root: str):
        report = vns_seg.scan(root, self.builder_config.subsets)
        if not report.examples:
            raise vns_seg.DataError(f"nothing to build for {self.builder_config.name} in {root}: {report.summary()}")
        for ref in report.examples:
            ex = vns_seg.load_example(ref)
            # tfds encodes PIL images without TensorFlow (numpy arrays would need tf for PNG encoding).
            yield (
                f"{ref.subset}/{ref.name}",
                {
                    "image": Image.fromarray(ex["image"]),
                    "mask": Image.fromarray(ex["mask"]),
                    "boundary": Image.fromarray(ex["boundary"]),
                    "name": ref.name,
                    "subset": ref.subset,
                },
            )


def data_source(config: str, data_dir: str, manual_dir: str | None = None):
    """``tfds.data_source`` of one config (built first from ``manual_dir`` if needed), split chosen by config."""
    builder_cls = VnsSeg
    split = next(c.split for c in builder_cls.BUILDER_CONFIGS if c.name == config)
    kwargs = {"file_format": "array_record"}
    if manual_dir is not None:
        kwargs["download_config"] = tfds.download.DownloadConfig(manual_dir=manual_dir)
    return tfds.data_source(f"vns_seg/{config}", split=split, data_dir=data_dir, download_and_prepare_kwargs=kwargs)
