"""grain training and evaluation pipelines for VNS-SEG (MyTrain.py's loaders, re-expressed for JAX).

Training, per element: global seeded shuffle (reshuffled each epoch) -> edge target -> random horizontal flip ->
large-scale jitter; then per batch (drop_remainder): prompt sampling and the mask scaled to [0, 1]. Every batch
has the same keys, shapes and dtypes (``TRAIN_BATCH_SPEC``), so a jitted step compiles once.

Evaluation, per image: the exact 1024 x 1024 resize and the three prompt modes, with per-image seeded generators.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from data_pipeline import edges, prompts, transforms, vns_seg

OUTPUT_SIZE = transforms.OUTPUT_SIZE
JITTER_SCALE = (0.1, 2.0)  # the released LargeScaleJitter range

# key: (shape without the batch dimension, dtype)
TRAIN_BATCH_SPEC: dict[str, tuple[tuple[int, ...], Any]] = {
    "image": ((OUTPUT_SIZE, OUTPUT_SIZE, 3), np.uint8),
    "mask": ((OUTPUT_SIZE, OUTPUT_SIZE), np.float32),
    "edge": ((OUTPUT_SIZE, OUTPUT_SIZE), np.float32),
    "box": ((4,), np.float32),
    "points": ((prompts.NUM_POINTS, 2), np.float32),
    "point_labels": ((prompts.NUM_POINTS,), np.int32),
    "mask_input": ((prompts.MASK_INPUT_SIZE, prompts.MASK_INPUT_SIZE), np.float32),
    "prompt_type": ((), np.int32),
}

Source = str | os.PathLike | Sequence


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _plane(x: np.ndarray) -> np.ndarray:
    """TFDS stores single-channel images as (H, W, 1); the reader gives (H, W)."""
    x = np.asarray(x)
    return x[:, :, 0] if x.ndim == 3 else x


def as_source(
    root_or_source: Source, names: str | Sequence[str], *, with_boundary: bool = True, skip_bad: bool = False
) -> Sequence:
    """A directory becomes a ``VnsSegSource`` of ``names``; anything else (e.g. ``tfds.data_source``) is kept.

    ``skip_bad``: files the start-up scan rejects are skipped, and an example that fails to decode later is
    replaced by the next readable one (``SkipBadSource``).
    """
    if isinstance(root_or_source, (str, os.PathLike)):
        root_or_source = vns_seg.VnsSegSource(root_or_source, names, with_boundary=with_boundary, skip_bad=skip_bad)
    return SkipBadSource(root_or_source) if skip_bad else root_or_source


class SkipBadSource:
    """A random-access source whose unreadable example (``DataError``) is replaced by the next readable one.

    The replacement of index i is the first readable of i + 1, i + 2, ... (mod len): a function of the index
    alone, so the stream stays deterministic and a resumed run reads the same examples, never stopping at the same
    bad file again. Each bad index is logged once per process and counted in ``skipped``.
    """

    def __init__(self, source: Sequence):
        self.source = source
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        n = len(self.source)
        for k in range(n):
            j = (index + k) % n
            try:
                return self.source[j]
            except vns_seg.DataError as e:
                if j not in self.skipped:
                    self.skipped.add(j)
                    logging.warning("skip_bad: skipped training example %d (%d so far): %s", j, len(self.skipped), e)
        raise vns_seg.DataError(f"skip_bad: none of the {n} training examples can be read")


def augment(
    record: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    output_size: int = OUTPUT_SIZE,
    jitter_scale: tuple[float, float] = JITTER_SCALE,
) -> dict:
    """Edge target, RandomHFlip and LargeScaleJitter (long side x `jitter_scale` x output_size) of one record
    (reader or TFDS) -> 1024^2 arrays.

    ``mask`` stays 0..255 here because the prompt samplers threshold it at 128; ``_batch_prompts`` rescales it.
    """
    image = np.asarray(record["image"])
    mask = _plane(record["mask"])
    edge = edges.edge_target(_plane(record["boundary"]))
    image, mask, edge = transforms.random_hflip(rng, image, mask, edge)
    lo, hi = jitter_scale
    image, mask, edge = transforms.large_scale_jitter(
        image, mask, edge, rng, output_size=output_size, scale_min=lo, scale_max=hi
    )
    return {"image": image, "mask": mask, "edge": edge}


def _batch_prompts(batch: dict, rng: np.random.Generator) -> dict:
    out = dict(batch)
    out.update(prompts.sample_train_prompts(batch["mask"], rng))
    out["mask"] = batch["mask"] / np.float32(255.0)
    return out


def _seeds(seed: int, n: int, *extra: int) -> list[int]:
    """Independent 32-bit seeds for the random stages (grain wants seeds < 2**32)."""
    return [int(s) for s in np.random.SeedSequence([seed, *extra]).generate_state(n)]


def resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """(index, count); None means one shard per JAX process (multi-host training)."""
    if shard_index is None or shard_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    return shard_index, shard_count


def make_train_dataset(
    root_or_source: Source,
    *,
    batch_size: int,
    seed: int,
    shard_index: int | None = 0,
    shard_count: int | None = 1,
    num_epochs: int | None = None,
    subsets: str | Sequence[str] = "train",
    image_size: int = OUTPUT_SIZE,
    skip_bad: bool = False,
    jitter_scale: tuple[float, float] = JITTER_SCALE,
) -> grain.MapDataset:
    """Random-access training dataset of batches (see ``TRAIN_BATCH_SPEC``).

    Shuffling and augmentation are indexed by the global (pre-shard) position, so the union of all shards is the
    single-process stream and shards are disjoint within an epoch (like DistributedSampler). Epochs are
    concatenated before batching: ``num_epochs=None`` repeats forever; a batch may straddle an epoch boundary.
    """
    shard_index, shard_count = resolve_shard(shard_index, shard_count)
    shuffle_seed, augment_seed = _seeds(seed, 2)
    (prompt_seed,) = _seeds(seed, 1, shard_index + 1)
    ds = grain.MapDataset.source(as_source(root_or_source, subsets, skip_bad=skip_bad))
    ds = ds.shuffle(seed=shuffle_seed).repeat(num_epochs)
    ds = ds.random_map(
        functools.partial(augment, output_size=image_size, jitter_scale=tuple(jitter_scale)), seed=augment_seed
    )
    ds = ds[shard_index::shard_count]
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.random_map(_batch_prompts, seed=prompt_seed)


def make_train_iterator(
    root_or_source: Source,
    *,
    batch_size: int,
    seed: int,
    shard_index: int | None = 0,
    shard_count: int | None = 1,
    num_workers: int = 0,
    num_threads: int = 2,
    prefetch: int = 2,
    num_epochs: int | None = None,
    subsets: str | Sequence[str] = "train",
    image_size: int = OUTPUT_SIZE,
    skip_bad: bool = False,
    jitter_scale: tuple[float, float] = JITTER_SCALE,
) -> grain.DatasetIterator:
    """Checkpointable iterator of training batches (``get_state`` / ``set_state``, ``grain.checkpoint``).

    ``root_or_source``: the VNS-SEG root directory, or a random-access source such as
    ``tfds.data_source("vns_seg/train", ...)``. ``num_workers > 0`` processes batches in worker processes
    (``mp_prefetch``); ``num_threads``/``prefetch`` bound the in-process threads and buffer (in batches).
    The stream for a seed is the same whatever ``num_workers`` and ``num_threads`` are. ``image_size`` is the
    square training size (1024 for SAM; smaller for the tiny demo model). ``skip_bad``: see ``as_source``.
    ``jitter_scale``: the LargeScaleJitter range (the long side over ``image_size``).
    """
    ds = make_train_dataset(
        root_or_source,
        batch_size=batch_size,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        num_epochs=num_epochs,
        subsets=subsets,
        image_size=image_size,
        skip_bad=skip_bad,
        jitter_scale=jitter_scale,
    )
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    if num_workers > 0:
        from absl import flags

        # grain's worker processes read absl flags; outside an absl app (pytest, notebooks) they are unparsed.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=1))
    return iter(it_ds)


def steps_per_epoch(num_examples: int, *, batch_size: int, shard_count: int = 1) -> int:
    """Batches per process and epoch with DistributedSampler + drop_last semantics."""
    return num_examples // shard_count // batch_size


def eval_example(
    record: Mapping[str, Any],
    index: int,
    *,
    seed: int = 42,
    num_points: int = prompts.NUM_POINTS,
    box_noise_scale: float = prompts.BOX_NOISE_SCALE,
    image_size: int = OUTPUT_SIZE,
) -> dict:
    """The released evaluation input for one image.

    Image and mask bilinearly resized to exactly 1024 x 1024 (``image_size``: a model's other input size, e.g. 256
    for the tiny demo model; ``image1024`` then holds that size); prompts from the resized mask (> 128): GT box,
    noisy box (scale 0.1, clamped to [0, image_size]) and ``num_points`` random positive points. Points and the
    noisy box use separate generators seeded by (seed, index), so each image's prompts do not depend on the order of
    evaluation (the release draws them from torch's CPU and CUDA generators respectively). ``mask`` is the
    original-resolution mask (uint8, 0..255) on which metrics are computed.
    """
    image = np.asarray(record["image"])
    mask = _plane(record["mask"])
    image1024, mask1024 = transforms.eval_resize(image, mask, image_size)
    point_rng, box_rng = (np.random.default_rng([seed, index, stream]) for stream in (0, 1))
    box = prompts.box_from_mask(mask1024)
    points, labels = prompts.sample_points(mask1024, point_rng, num_points)
    return {
        "image1024": image1024,
        "box": box,
        "noise_box": prompts.noisy_box(box, box_rng, box_noise_scale, float(image_size)),
        "points": points,
        "point_labels": labels,
        "mask": mask,
        "size": np.array(mask.shape, np.int32),
        "name": _text(record["name"]),
        "subset": _text(record["subset"]),
    }


def make_eval_dataset(
    root_or_source: Source,
    subset: str,
    *,
    seed: int = 42,
    num_points: int = prompts.NUM_POINTS,
    image_size: int = OUTPUT_SIZE,
) -> grain.MapDataset:
    """Per-image evaluation dataset of one subset (batch 1, original sizes differ), in file-name order."""
    source = as_source(root_or_source, subset, with_boundary=False)
    return grain.MapDataset.source(source).map_with_index(
        lambda i, r: eval_example(r, i, seed=seed, num_points=num_points, image_size=image_size)
    )
