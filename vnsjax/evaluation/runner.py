"""The VNS-SEG evaluation runner: any number of models side by side over the VNS-SEG subsets.

Used by `python -m vnsjax.evaluate` and by the trainer's periodic evaluation, so both print the same numbers.

Protocol, as released (generalised from 1024 to the model's img_size S): image and mask resized to exactly S x S
(aspect not kept, image truncated to uint8), prompts from the resized mask; one mask per prompt (multimask off):
SAM's mask, HQ-SAM's output, VNS-SAM's fused mask (optionally + its SAM mask, `results_fusion`). The low-res
logits are bilinearly upsampled directly to the original size and scored there (`vnsjax.evaluation.metrics`);
subsets and seen / unseen means as in `vnsjax.evaluation.report`. Images are read once and shared by all models; an
image that cannot be used (unreadable, mask missing or of another size) is recorded as failed with the reason.
"""

from __future__ import annotations

import collections
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from tqdm import tqdm

from data_pipeline import pipeline, prompts, transforms, vns_seg
from vnsjax.evaluation.metrics import evaluate_image
from vnsjax.evaluation.report import summarize
from vnsjax.modeling.sam import Sam
from vnsjax.predictors.sam_predictor import SamPredictor
from vnsjax.training.sharding import to_host

PROMPT_MODES = ("box", "noise_box", "point")

# Reading an image can fail in these ways; anything else is a bug and should stop the run.
LOAD_ERRORS = (vns_seg.DataError, OSError, ValueError)

Example = Mapping[str, Any]  # a `pipeline.eval_example` dict


class Predictor(Protocol):
    """Anything that maps a batch of eval examples (at its `image_size`) to original-size logits, one per example."""

    image_size: int

    def __call__(self, examples: Sequence[Example]) -> list[np.ndarray]: ...


def prompt_arrays(examples: Sequence[Example], prompt: str) -> dict[str, np.ndarray]:
    """`pack_prompts` keyword arguments for one prompt per example: a box (clean or noisy) or the sampled points."""
    if prompt == "point":
        return {
            "point_coords": np.stack([ex["points"] for ex in examples]),
            "point_labels": np.stack([ex["point_labels"] for ex in examples]),
        }
    if prompt in ("box", "noise_box"):
        return {"boxes": np.stack([ex[prompt] for ex in examples])}
    raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPT_MODES}")


def upsample_logits(low_res: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(h, w) low-res logits -> (H, W) at the original size, directly (not via S x S + crop), as released.

    Host-side torch-semantics bilinear (align_corners=False, no antialias; `data_pipeline.transforms`), so
    that the many distinct original sizes of a dataset do not each compile a program.
    """
    return transforms.resize_bilinear(np.asarray(low_res, np.float32), (int(size[0]), int(size[1])))


class ModelPredictor:
    """A `Sam` (any variant) through `SamPredictor`: a batch of examples encoded in one call (`set_resized_images`)
    and decoded in one call (`predict_low_res_images`). The last, short batch is padded with copies of its last
    example, so one program serves the whole run."""

    def __init__(
        self,
        model: Sam,
        *,
        prompt: str = "box",
        batch_size: int = 1,
        results_fusion: bool = False,
        hq_token_only: bool = False,
        precision: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prompt not in PROMPT_MODES:
            raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPT_MODES}")
        self.prompt, self.batch_size, self.variant = prompt, batch_size, model.variant
        self.image_size = model.config.img_size
        # Each option means something for its own variant only, so several models can share one CLI call.
        self.predictor = SamPredictor(
            model, hq_token_only=hq_token_only, results_fusion=results_fusion, precision=precision
        )

    def __call__(self, examples: Sequence[Example]) -> list[np.ndarray]:
        if not 0 < len(examples) <= self.batch_size:
            raise ValueError(f"expected 1..{self.batch_size} examples, got {len(examples)}")
        p = self.predictor
        s = self.image_size
        padded = [*examples, *[examples[-1]] * (self.batch_size - len(examples))]
        p.set_resized_images([ex["image1024"] for ex in padded], [(s, s)] * len(padded))
        arrays = prompt_arrays(padded, self.prompt)
        prompts = [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(len(padded))]
        low_res, _ = p.predict_low_res_images(prompts, multimask_output=False)
        low_res = to_host(low_res)
        p.reset_image()
        return [upsample_logits(low_res[i, 0, 0], ex["size"]) for i, ex in enumerate(examples)]


class _Loaded(NamedTuple):
    subset: str
    name: str
    examples: dict[int, dict[str, Any]] | None  # eval example per model input size; None if the image failed
    error: str


def _load(ref: vns_seg.ExampleRef, index: int, sizes: Iterable[int], seed: int, num_points: int) -> _Loaded:
    """One image, read once, prepared at every model input size. `index` is its position in the subset, so
    the prompts equal those of `pipeline.make_eval_dataset` for the same seed."""
    try:
        record = vns_seg.load_example(ref, with_boundary=False)
        examples = {
            s: pipeline.eval_example(record, index, seed=seed, num_points=num_points, image_size=s) for s in sizes
        }
    except LOAD_ERRORS as e:
        return _Loaded(ref.subset, ref.name, None, f"{type(e).__name__}: {e}")
    return _Loaded(ref.subset, ref.name, examples, "")


def _prefetch(fn: Any, jobs: Sequence[tuple], workers: int) -> Iterator[Any]:
    """fn(*job) for each job, in order, at most 2 x workers ahead (whole datasets do not fit in memory)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending: collections.deque[Future] = collections.deque()
        for job in jobs:
            pending.append(pool.submit(fn, *job))
            if len(pending) >= 2 * max(1, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def evaluate(
    models: Mapping[str, Sam | Predictor],
    data_root: str | Path,
    subsets: str | Sequence[str] = "eval",
    prompt: str = "box",
    *,
    num_points: int = prompts.NUM_POINTS,
    seed: int = 42,
    batch_size: int = 1,
    results_fusion: bool = False,
    hq_token_only: bool = False,
    workers: int = 2,
    progress: bool = True,
    max_images: int = -1,
    precision: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluates every model on the same images and prompts -> (`report.summarize` summary, per-image records).

    max_images >= 0: only the first `max_images` images of each subset (the trainer's periodic evaluation).
    `models` values are `Sam` models (wrapped in `ModelPredictor`, run at `precision`; None: the model's own) or
    ready `Predictor`s. The summary also has
    "absent_subsets" (not found under `data_root`) and "failed" (file, subset, reason of each unusable image).
    """
    predictors: dict[str, Predictor] = {
        name: ModelPredictor(
            m,
            prompt=prompt,
            batch_size=batch_size,
            results_fusion=results_fusion,
            hq_token_only=hq_token_only,
            precision=precision,
        )
        if isinstance(m, Sam)
        else m
        for name, m in models.items()
    }
    if not predictors:
        raise ValueError("no models to evaluate")
    sizes = sorted({p.image_size for p in predictors.values()})
    records: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []

    def fail(subset: str, name: str, error: str) -> None:
        failed.append({"subset": subset, "file": name, "error": error})
        records.extend({"model": m, "subset": subset, "file": name, "error": error} for m in predictors)

    # Per subset so that the prompts' image index restarts at 0 as in make_eval_dataset. check_sizes=False: a bad
    # file is found when it is read and becomes a per-image failure instead of stopping the scan; skip_bad lets an
    # image without a mask file through the scan, reported here as a failure too.
    jobs: list[tuple] = []
    absent: list[str] = []
    for subset in vns_seg.resolve_names(subsets):
        found = vns_seg.scan(data_root, subset, skip_bad=True, check_sizes=False)
        absent += found.absent
        refs = found.examples if max_images < 0 else found.examples[:max_images]
        jobs += [(ref, index, sizes, seed, num_points) for index, ref in enumerate(refs)]
        for message in found.skipped:
            # scan's message names the image path: "image PATH has no mask (expected ...)".
            match = re.match(r"image (.+) has no mask", message)
            fail(subset, Path(match[1]).stem if match else "?", message)
    if not jobs and not failed:
        raise vns_seg.DataError(f"no VNS-SEG images of {subsets!r} under {data_root} (absent: {', '.join(absent)})")

    def flush(batch: list[_Loaded]) -> None:
        for model_name, predictor in predictors.items():
            logits = predictor([item.examples[predictor.image_size] for item in batch])
            for item, pred in zip(batch, logits, strict=True):
                scores = evaluate_image(pred, item.examples[predictor.image_size]["mask"])
                records.append({"model": model_name, "subset": item.subset, "file": item.name, **scores, "error": ""})

    batch: list[_Loaded] = []
    with tqdm(total=len(jobs), unit="img", desc="evaluate", disable=not progress, file=sys.stderr) as bar:
        for item in _prefetch(_load, jobs, workers):
            bar.set_postfix_str(item.subset, refresh=False)
            if item.examples is None:
                fail(item.subset, item.name, item.error)
                bar.update(1)
                continue
            batch.append(item)
            if len(batch) == batch_size:
                flush(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            flush(batch)
            bar.update(len(batch))

    summary = summarize(records)
    summary["absent_subsets"] = absent
    summary["failed"] = failed
    return summary, records
