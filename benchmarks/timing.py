"""Timing helpers shared by the CPU benchmarks that compare vnsjax with PyTorch.

Each side runs in a fresh subprocess (`python -m <module> --child <side> ...`, printing one JSON line) and the
rounds alternate sides, so neither side's thread pool is still spinning while the other is timed (XLA's CPU
workers keep spinning for a while after a computation) and slow drift of a shared machine hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def timings(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of `repeats` calls of `fn` after one warm-up call (JAX: the compile)."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(min, median) seconds of `fn` after a warm-up."""
    t = timings(fn, repeats)
    return min(t), statistics.median(t)


def child(module: str, side: str, args: Sequence[str]) -> dict:
    """Runs `python -m module --child side *args` and returns the JSON object on its last stdout line."""
    cmd = [sys.executable, "-m", module, "--child", side, *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def alternate(module: str, sides: Sequence[str], rounds: int, args: Sequence[str]) -> dict[str, dict[str, list]]:
    """`rounds` x one child process per side, in turn; each side's lists of timings concatenated per key."""
    results: dict[str, dict[str, list]] = {side: {} for side in sides}
    for _ in range(rounds):
        for side in sides:
            for key, value in child(module, side, args).items():
                results[side].setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return results


def row(name: str, torch_times: Sequence[float], jax_times: Sequence[float]) -> str:
    """A Markdown table row: PyTorch and vnsjax min / median and the ratio of medians."""
    tm, jm = statistics.median(torch_times), statistics.median(jax_times)
    return f"| {name} | {min(torch_times):.4f} / {tm:.4f} | {min(jax_times):.4f} / {jm:.4f} | {jm / tm:.2f} |"


TABLE_HEADER = "\n".join(
    (
        "| call | PyTorch min / median (s) | vnsjax min / median (s) | vnsjax / PyTorch (median) |",
        "| --- | --- | --- | --- |",
    )
)


def sanity(what: str, alone: Sequence[float], predict: Sequence[float]) -> str:
    """PyTorch's network timed alone must not be slower than its `predict`, which does the same work and more."""
    dec, pred = statistics.median(alone), statistics.median(predict)
    verdict = "consistent" if dec <= pred * 1.1 else "INCONSISTENT: the network alone should not be slower"
    return f"sanity: PyTorch {what} alone {dec:.4f} s (median), its predict(box) {pred:.4f} s ({verdict})"


def compare(
    module: str,
    description: str,
    sides: dict[str, Callable[[str, int], dict]],
    repeats: int,
    repeats_help: str,
    argv: Sequence[str] | None = None,
) -> tuple[argparse.Namespace, dict[str, dict[str, list]]] | None:
    """The command line of a PyTorch-vs-vnsjax benchmark. As a child (`--child SIDE`) it runs that side's function
    and prints its JSON line, returning None; otherwise it runs `--rounds` alternating children per side and returns
    (args, their timings)."""
    from vnsjax import MODEL_CONFIGS

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="vit_b", choices=sorted(MODEL_CONFIGS))
    ap.add_argument("--rounds", type=int, default=3, help="alternating PyTorch / vnsjax processes per side")
    ap.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    ap.add_argument("--child", choices=tuple(sides), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(sides[args.child](args.model, args.repeats)))
        return None
    return args, alternate(module, tuple(sides), args.rounds, ["--model", args.model, "--repeats", str(args.repeats)])


def environment(results: dict[str, dict[str, list]]) -> str:
    """Versions, PyTorch's thread count (reported by its child as "threads") and the machine's load."""
    import jax
    import torch

    threads = int(results["torch"].pop("threads")[0])
    return (
        f"torch {torch.__version__} ({threads} threads), jax {jax.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
