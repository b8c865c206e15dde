"""Throughput of the VNS-SEG grain training pipeline (1024 x 1024 batches) on the synthetic data.

    python benchmarks/data_pipeline.py [--batches 12] [--batch-size 4] [--large] [--no-write]

Prints a table and writes it into benchmarks/RESULTS.md, section "Data pipeline" (other sections are kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
# This script shares its name with the package it measures: drop its own folder from the path, add the repo root.
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from data_pipeline import pipeline, synthetic  # noqa: E402

RESULTS = os.path.join(_HERE, "RESULTS.md")
SECTION = "## Data pipeline"


def measure(root: str, *, batch_size: int, batches: int, num_workers: int, num_threads: int) -> float:
    """Samples per second after two warm-up batches (worker start-up and first reads excluded)."""
    it = pipeline.make_train_iterator(
        root, batch_size=batch_size, seed=0, num_workers=num_workers, num_threads=num_threads, prefetch=2
    )
    for _ in range(2):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def write_section(text: str) -> None:
    """Replaces (or appends) this script's section of RESULTS.md."""
    old = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = text.rstrip("\n") + "\n\n"
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block
    with open(RESULTS, "w") as f:
        f.write(new.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num", type=int, default=16, help="synthetic images per training source")
    parser.add_argument("--large", action="store_true", help="also measure ~1024 x 768 source images")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = {
        "320-512 px": synthetic.SceneParams(),
        "~1024x768": synthetic.SceneParams(width=(960, 1100), height=(700, 800)),
    }
    if not args.large:
        sizes.pop("~1024x768")
    configs = [(0, 0), (0, 2), (1, 2), (2, 1)]  # (worker processes, threads per process)
    rows = []
    for size, params in sizes.items():
        with tempfile.TemporaryDirectory() as root:
            synthetic.generate(root, args.num, 0, subsets="train", params=params)
            rows += [
                (
                    size,
                    w,
                    t,
                    measure(root, batch_size=args.batch_size, batches=args.batches, num_workers=w, num_threads=t),
                )
                for w, t in configs
            ]
    lines = (
        [
            SECTION,
            "",
            f"Training pipeline (read + decode, edge dilation, flip, large-scale jitter to 1024x1024, prompts, batch "
            f"{args.batch_size}) on synthetic training sources; {os.cpu_count()} CPU cores "
            f"({platform.machine()}, load average {os.getloadavg()[0]:.1f} at the end: the machine is shared, so "
            f"numbers move with other jobs); `python benchmarks/data_pipeline.py{' --large' if args.large else ''}`.",
            "",
            "| source images | worker processes | threads per process | samples/s | ms/sample |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        + [f"| {size} | {w} | {t} | {sps:.1f} | {1000 / sps:.0f} |" for size, w, t, sps in rows]
        + [""]
    )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
