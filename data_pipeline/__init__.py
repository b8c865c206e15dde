"""VNS-SEG data: reader, edge targets, transforms, prompts, grain pipelines, TFDS builder, synthetic generator.

The TFDS builder (``data_pipeline.tfds_builder``) is imported on demand because importing tfds is slow.
"""

from data_pipeline.images import ImageReadError, read_image
from data_pipeline.pipeline import (
    TRAIN_BATCH_SPEC,
    eval_example,
    make_eval_dataset,
    make_train_dataset,
    make_train_iterator,
    steps_per_epoch,
)
from data_pipeline.vns_seg import (
    EVAL_SUBSETS,
    SEEN,
    SUBSETS,
    TRAIN_SOURCES,
    UNSEEN,
    DataError,
    VnsSegSource,
    scan,
)

__all__ = [
    "DataError",
    "EVAL_SUBSETS",
    "ImageReadError",
    "SEEN",
    "SUBSETS",
    "TRAIN_BATCH_SPEC",
    "TRAIN_SOURCES",
    "UNSEEN",
    "VnsSegSource",
    "eval_example",
    "make_eval_dataset",
    "make_train_dataset",
    "make_train_iterator",
    "read_image",
    "scan",
    "steps_per_epoch",
]
