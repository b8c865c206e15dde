"""The demo's model calls, all in one place: load, encode an image, decode a prompt, each timed.

Only the predictors' public API is used (`set_image`, `predict`), so a change inside the predictors
does not reach the server.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from vnsjax.model_dir import DEFAULT_BASE, load_model
from vnsjax.modeling.precision import get_precision
from vnsjax.modeling.sam import Sam
from vnsjax.predictors.sam_predictor import SamPredictor
from vnsjax.training.state import build_model


@dataclasses.dataclass
class DemoModel:
    """One model of the page: its predictor holds the features of the image it last encoded (`image_key`)."""

    name: str
    predictor: SamPredictor
    random_weights: bool = False
    image_key: str | None = None
    sizes_seen: set[tuple[int, int]] = dataclasses.field(default_factory=set)

    @classmethod
    def from_model(
        cls, name: str, model: Sam, *, random_weights: bool = False, precision: str = "highest"
    ) -> DemoModel:
        # VNS-SAM: the fused mask with SAM's IoU score.
        return cls(name, SamPredictor(model, precision=precision), random_weights)

    @property
    def precision(self) -> str:
        return get_precision(self.predictor.model)

    @property
    def variant(self) -> str:
        return self.predictor.model.variant

    @property
    def model_type(self) -> str:
        return self.predictor.model.config.name

    def set_image(self, key: str, image: np.ndarray) -> float | None:
        """Encodes `image` (HWC uint8 RGB) unless it is already the current one; returns the encoder time in ms."""
        if key == self.image_key:
            return None
        self.image_key = None  # a failed encode must not leave a stale key behind
        start = time.perf_counter()
        self.predictor.set_image(image)
        jax.block_until_ready(self.predictor.features)  # set_image only dispatches the encoder
        ms = (time.perf_counter() - start) * 1e3
        self.image_key = key
        if image.shape[:2] not in self.sizes_seen:
            # The masks are resized to the image's size by a program compiled per size: compile it now, so
            # the first click on this image shows the decoder's time, not a compile.
            self.warm_points(1)
            self.sizes_seen.add(image.shape[:2])
        return ms

    def warmup(self) -> None:
        """Compiles the encoder and the one-point decoder, so the first click is not a compile."""
        self.set_image("warmup", np.full((48, 64, 3), 128, np.uint8))
        self.image_key = None  # the grey image stays in the predictor; warm_points may decode on it

    def warm_points(self, n: int) -> None:
        """Compiles the decoder for `n` points (0: a box alone) on whatever image is set.

        The predictor pads points (plus one slot) to a power of two: a box, 1, 2-3 and 4-7 points are 4 programs.
        """
        points, labels = (np.full((n, 2), 8.0), np.ones(n, np.int32)) if n else (None, None)
        box = None if n else np.array([4.0, 4.0, 16.0, 16.0])
        for multimask in (False, True):
            self.predict(points, labels, box, multimask)

    def predict(
        self, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None, multimask: bool
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Masks (C, H, W) bool, scores (C,), decoder time in ms, on the current image."""
        start = time.perf_counter()
        masks, scores, _ = self.predictor.predict(points, labels, box, multimask_output=multimask)
        return masks, scores, (time.perf_counter() - start) * 1e3


def load_models(checkpoints: list[str | Path], precision: str = "highest") -> list[DemoModel]:
    """One DemoModel per converted model directory, named after the directory (made unique)."""
    models, seen = [], set()
    for directory in checkpoints:
        model = load_model(directory)
        name = f"{Path(directory).name} ({model.variant}, {model.config.name})"
        base, k = name, 2
        while name in seen:
            name, k = f"{base} #{k}", k + 1
        seen.add(name)
        models.append(DemoModel.from_model(name, model, precision=precision))
    return models


def default_models(precision: str = "highest") -> list[DemoModel]:
    """What the demo serves without --checkpoint: the shipped SAM base (docs/base_model.md), and VNS-SAM on it.

    VNS-SAM's own modules (METI, NSFM) ship untrained, so it carries `random_weights` and the page's banner says
    so; `python -m vnsjax.train --config configs/demo.py` trains them (serve WORKDIR/model with --checkpoint).
    """
    base = load_model(DEFAULT_BASE)
    vns = build_model(base.config.name, 0, DEFAULT_BASE, variant="vns")
    return [
        DemoModel.from_model(f"SAM {base.config.name} (pre-trained)", base, precision=precision),
        DemoModel.from_model(
            f"VNS-SAM {base.config.name} (untrained VNS modules)", vns, random_weights=True, precision=precision
        ),
    ]
