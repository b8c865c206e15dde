"""Writes the demo's bundled sample scenes (vnsjax/demo/assets/*.png) with the synthetic VNS-SEG generator.

    python -m vnsjax.demo.samples [--out vnsjax/demo/assets]

One small scene per kind of visual non-salience (camouflage, low contrast, low light), fixed seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipeline.synthetic import SCENES, SceneParams, make_scene

# 320x240 keeps the three PNGs near 260 KB together (noisy textures compress poorly).
PARAMS = SceneParams(width=(320, 320), height=(240, 240))


def write_samples(out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, kind in enumerate(SCENES):
        image, _ = make_scene(kind, np.random.default_rng(seed), PARAMS)
        path = out_dir / f"{kind}.png"
        Image.fromarray(image).save(path, "PNG", optimize=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent / "assets"))
    for path in write_samples(p.parse_args(argv).out):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
