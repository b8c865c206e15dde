"""Training logs on process 0: WORKDIR/metrics.jsonl (every step), eval.jsonl, TensorBoard (tb/), a progress bar.

metrics.jsonl also gets one {"event": "start", "step": S, ...} line each time a run starts or resumes at step S,
with how the step computes (precision, attention implementation, backend); readers of the per-step rows skip
lines with an "event".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import jax


class Logs:
    """One JSON object per line and a TensorBoard scalar per value; silent on processes other than 0."""

    def __init__(self, workdir: Path, *, total_steps: int, start: int = 0, progress_bar: bool = False):
        self.active = jax.process_index() == 0
        self._bar = None
        if not self.active:
            return
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(workdir / "tb"))
        self._files: dict[str, IO[str]] = {
            "train": (workdir / "metrics.jsonl").open("a"),
            "eval": (workdir / "eval.jsonl").open("a"),
        }
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start, desc="train", dynamic_ncols=True)

    def _write(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        f = self._files[kind]
        f.write(json.dumps({"step": step, **scalars}) + "\n")
        f.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(f"{kind}/{k}", v, step)

    def start(self, step: int, info: dict[str, Any]) -> None:
        """The start line of metrics.jsonl (not a TensorBoard scalar), also printed."""
        if not self.active:
            return
        record = {"event": "start", "step": step, **info}
        self._files["train"].write(json.dumps(record) + "\n")
        self._files["train"].flush()
        print("run: " + " ".join(f"{k} {v}" for k, v in info.items()), flush=True)

    def train(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._write("train", step, scalars)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items() if k != "grad_norm"}, refresh=False)

    def eval(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._write("eval", step, scalars)
        if self._bar is not None:
            self._bar.write(f"step {step}: eval " + " ".join(f"{k} {v:.4f}" for k, v in scalars.items()))

    def close(self) -> None:
        if not self.active:
            return
        if self._bar is not None:
            self._bar.close()
        self._tb.close()
        for f in self._files.values():
            f.close()
