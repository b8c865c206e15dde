"""Synthetic VNS-SEG: small scenes written in the released folder layout, plus a salient stand-in for COCO.

Scene kinds (``SubsetSpec.kind``), the paper's sources of non-salience and one salient control:
  camouflage   - object with the background's texture statistics and a slightly shifted palette
                 (COD-TR, CAMO, COD10K, NC4K);
  low_contrast - polyp-like domes on similar mucosa texture, vignetting, specular highlights
                 (Polyp-TR, Kvasir, ClinicDB, ColonDB, ETIS);
  defect       - a faint stain or scratch on a metal / fabric / stone surface (CDS2K);
  low_light    - an ordinary scene (blobs and thin structures) shot in the dark with ``lowlight.darken``
                 (DIS-TR-Dark, Thin-TR-Dark, FSS-Dark, DIS-Dark, Thin-Dark, LIS);
  salient      - several distinct, high-contrast objects, one mask per object (Salient).
Textures carry detail down to single pixels on both sides of the boundary, and contrast, blending, texture
roughness and darkness are drawn per image, so the VNS-score spreads as on real data (docs/data.md has the
distributions; ``--report`` recomputes them).

Every subset of ``vns_seg.SUBSETS`` gets ``num`` images, so the reader finds them with the same table; training
sources also get their pre-computed edge maps. Usage: ``python -m data_pipeline.synthetic --out DIR --num N --seed S``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from data_pipeline import edges, lowlight, vns_seg


@dataclasses.dataclass(frozen=True)
class SceneParams:
    """Scene knobs; None means the kind's default (``KIND_DEFAULTS``).

    ``contrast`` fixes the kind's contrast knob instead of drawing it per image: camouflage and low light, the norm
    of the object's RGB shift / 255; low contrast, how much redder the polyp is; defect, the relative darkening or
    lightening of the flaw. Salient scenes ignore it (their colours are chosen to stand out).
    """

    num_objects: tuple[int, int] | None = None  # inclusive range
    object_size: tuple[float, float] | None = None  # object radius as a fraction of min(H, W)
    contrast: float | None = None
    width: tuple[int, int] = (320, 512)
    height: tuple[int, int] = (240, 384)


@dataclasses.dataclass(frozen=True)
class KindDefaults:
    num_objects: tuple[int, int]
    object_size: tuple[float, float]
    contrast: tuple[float, float]  # colour difference, drawn per image (see ``_draw``)
    blend: tuple[float, float]  # sigma (px) of the blended boundary: the first goes with the lowest contrast


KIND_DEFAULTS = {
    "camouflage": KindDefaults((1, 2), (0.15, 0.4), (0.02, 0.22), (4.0, 0.5)),
    "low_contrast": KindDefaults((1, 2), (0.15, 0.4), (0.03, 0.35), (7.0, 1.0)),
    "defect": KindDefaults((1, 2), (0.08, 0.25), (0.02, 0.3), (3.0, 0.5)),
    "low_light": KindDefaults((1, 2), (0.15, 0.4), (0.2, 0.9), (1.5, 0.5)),
    "salient": KindDefaults((3, 6), (0.1, 0.25), (0.0, 0.0), (0.6, 0.6)),  # colours are picked far apart instead
}


def _draw(
    kind: str, p: SceneParams, rng: np.random.Generator
) -> tuple[tuple[int, int], tuple[float, float], float, float]:
    """(object count range, size range, contrast, blend sigma) of one image.

    One uniform draw sets both contrast and boundary sharpness, so a scene is faint overall or clearer overall:
    both move the VNS-score the same way, which widens its spread across images.
    """
    d = KIND_DEFAULTS[kind]
    u = float(rng.random())
    contrast = d.contrast[0] + u * (d.contrast[1] - d.contrast[0]) if p.contrast is None else p.contrast
    return (
        p.num_objects or d.num_objects,
        p.object_size or d.object_size,
        contrast,
        d.blend[0] + u * (d.blend[1] - d.blend[0]),
    )


def _image_size(rng: np.random.Generator, p: SceneParams) -> tuple[int, int]:
    """(H, W), not square unless the ranges leave no other choice; one image in four is portrait."""
    w = int(rng.integers(p.width[0], p.width[1] + 1))
    h = int(rng.integers(p.height[0], max(p.height[0], min(p.height[1], w - 16)) + 1))
    return (w, h) if rng.random() < 0.25 else (h, w)


# ---------------------------------------------------------------- textures


def noise_field(
    rng: np.random.Generator,
    h: int,
    w: int,
    gain: float = 0.6,
    cells: Sequence[int] = (64, 32, 16, 8, 4, 2, 1),
    stretch: float = 1.0,
) -> np.ndarray:
    """Zero-mean, unit-std float32 (H, W): octaves of upsampled random grids, octave i weighted ``gain**i``.

    Cells run from coarse to fine; cell 1 is per-pixel noise, so ``gain`` sets how much single-pixel detail there
    is (real photos have it on both sides of an object boundary, which the VNS-score's blur term measures).
    ``stretch`` > 1 elongates the grain along x (brushed metal, fibres).
    """
    out = None
    for i, cell in enumerate(cells):
        # Pyramid: upsample the sum so far to this octave's grid and add its noise (one resize per octave, each
        # at its own resolution, instead of one full-size resize per octave).
        gh, gw = max(h // cell, 2), max(int(w / (cell * stretch)), 2)
        grid = (rng.random((gh, gw), dtype=np.float32) - np.float32(0.5)) * np.float32(gain**i)
        out = grid if out is None else cv2.resize(out, (gw, gh), interpolation=cv2.INTER_CUBIC) + grid
    if out.shape != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC)
    out -= out.mean()
    return out / max(float(out.std()), 1e-6)


def fractal_noise(rng: np.random.Generator, h: int, w: int, octaves: Sequence[int] = (64, 32, 16, 8, 4)) -> np.ndarray:
    """float32 (H, W) in [0, 1]: ``noise_field`` over the given cell sizes (gain 0.6), scaled to its min and max."""
    out = noise_field(rng, h, w, 0.6, octaves)
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


@dataclasses.dataclass(frozen=True)
class Texture:
    """A two-colour pattern: a noise field pushed through tanh, plus luminance grain.

    ``sharp`` near 0.5 gives smooth shading, above 2 mottled patches with crisp edges (camouflage patterns).
    """

    colours: np.ndarray  # (2, 3) RGB 0..255: the pattern runs from the first colour to the second
    gain: float  # octave gain of the pattern
    sharp: float
    grain: float  # std of per-pixel luminance grain, grey levels
    stretch: float = 1.0

    def render(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        t = 0.5 + 0.5 * np.tanh(self.sharp * noise_field(rng, h, w, self.gain, stretch=self.stretch))
        c0, c1 = np.asarray(self.colours, np.float32)
        img = c0 + t[:, :, None] * (c1 - c0)
        if self.grain > 0:
            img += (self.grain * noise_field(rng, h, w, 0.7, (2, 1), self.stretch))[:, :, None]
        return img


def _random_texture(rng: np.random.Generator, colours: np.ndarray, grain: tuple[float, float]) -> Texture:
    return Texture(
        np.asarray(colours, np.float32),
        gain=float(rng.uniform(0.45, 0.8)),
        sharp=float(np.exp(rng.uniform(np.log(0.5), np.log(5.0)))),
        grain=float(rng.uniform(*grain)),
    )


def _shift(rng: np.random.Generator, size: float) -> np.ndarray:
    """A random RGB direction of norm ``size`` * 255."""
    v = rng.normal(0, 1, 3).astype(np.float32)
    return v * np.float32(size * 255 / max(float(np.linalg.norm(v)), 1e-6))


# ---------------------------------------------------------------- shapes


def _blob(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """A random smooth star-shaped blob (uint8 0/255) fully inside the image."""
    cy = rng.uniform(radius * 1.3, h - radius * 1.3) if h > 2.6 * radius else h / 2
    cx = rng.uniform(radius * 1.3, w - radius * 1.3) if w > 2.6 * radius else w / 2
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    x, y = radius * r * np.cos(theta), aspect * radius * r * np.sin(theta)
    pts = np.stack([cx + x * np.cos(angle) - y * np.sin(angle), cy + x * np.sin(angle) + y * np.cos(angle)], -1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def _polygon(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """A convex-ish polygon (triangle to octagon) or a rotated rectangle: man-made, straight-edged objects."""
    cy = rng.uniform(radius, h - radius) if h > 2 * radius else h / 2
    cx = rng.uniform(radius, w - radius) if w > 2 * radius else w / 2
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.4:
        size = (2 * radius * rng.uniform(0.5, 1.0), 2 * radius * rng.uniform(0.3, 1.0))
        box = cv2.boxPoints(((cx, cy), size, rng.uniform(0, 180)))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 255)
        return mask
    n = int(rng.integers(3, 9))
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.7, 1.0, n)
    pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], -1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def _thin(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """Thin branching strokes (ThinObject-like) inside a box of half-size ``radius``."""
    mask = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
    for _ in range(int(rng.integers(3, 7))):
        pts = [(cx, cy)]
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(6):
            angle += rng.normal(0, 0.5)
            step = radius / 5
            pts.append(
                (
                    np.clip(pts[-1][0] + step * np.cos(angle), 0, w - 1),
                    np.clip(pts[-1][1] + step * np.sin(angle), 0, h - 1),
                )
            )
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, int(rng.integers(2, 5)))
    return mask


def _scratch(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """One long, slightly wandering line 1-4 px wide (scratch or crack)."""
    mask = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
    angle, n = rng.uniform(0, np.pi), 12
    offsets = np.linspace(-radius * 1.5, radius * 1.5, n)
    wobble = np.cumsum(rng.normal(0, radius * 0.04, n))
    pts = np.stack(
        [cx + offsets * np.cos(angle) - wobble * np.sin(angle), cy + offsets * np.sin(angle) + wobble * np.cos(angle)],
        -1,
    )
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, int(rng.integers(1, 5)))
    return mask


Shape = Callable[[np.random.Generator, int, int, float], np.ndarray]


def _objects(
    rng: np.random.Generator,
    h: int,
    w: int,
    count: tuple[int, int],
    size: tuple[float, float],
    shapes: Sequence[tuple[Shape, float]] = ((_blob, 1.0),),
) -> np.ndarray:
    """Union mask of ``count`` objects, each shape picked with the given probabilities."""
    funcs, probs = zip(*shapes, strict=True)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        shape = funcs[int(rng.choice(len(funcs), p=np.asarray(probs) / sum(probs)))]
        mask = np.maximum(mask, shape(rng, h, w, rng.uniform(*size) * min(h, w)))
    return mask


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Blending weight in [0, 1] (H, W, 1): a blurred mask gives a blended, hard-to-see boundary."""
    a = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)
    return a[:, :, None]


def _vignette(h: int, w: int, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    return np.clip(1.0 - strength * r2, 0.15, 1.0)[:, :, None]


# ---------------------------------------------------------------- scene kinds
# Each returns (float RGB image (H, W, 3) on 0..255, list of uint8 masks). The VNS kinds label all objects in one
# mask, as VNS-SEG does; the salient kind returns one non-overlapping mask per visible object.


def camouflage(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, list[np.ndarray]]:
    count, size, contrast, blend = _draw("camouflage", p, rng)
    base = rng.uniform([50, 50, 25], [180, 170, 120]).astype(np.float32)  # earthy palette
    colours = np.stack([base, base * rng.uniform(0.35, 0.85)])
    bg_tex = _random_texture(rng, colours, (0, 50))
    # The animal: the background's pattern statistics with nearby settings and a shifted palette.
    obj_tex = dataclasses.replace(
        bg_tex,
        colours=colours + _shift(rng, contrast),
        gain=bg_tex.gain * rng.uniform(0.9, 1.1),
        sharp=bg_tex.sharp * rng.uniform(0.7, 1.4),
    )
    mask = _objects(rng, h, w, count, size)
    a = _soft(mask, blend)
    img = bg_tex.render(rng, h, w) * (1 - a) + obj_tex.render(rng, h, w) * a
    return img * np.float32(rng.uniform(0.55, 1.1)), [mask]


def low_contrast(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, list[np.ndarray]]:
    count, size, contrast, blend = _draw("low_contrast", p, rng)
    tissue = rng.uniform([170, 80, 70], [225, 135, 115]).astype(np.float32)
    tex = Texture(
        np.stack([tissue, tissue * rng.uniform(0.75, 0.95)]),
        gain=float(rng.uniform(0.5, 0.8)),
        sharp=float(rng.uniform(0.5, 1.5)),
        grain=float(rng.uniform(0, 70)),
    )
    img = tex.render(rng, h, w)
    vessels = np.abs(noise_field(rng, h, w, 0.5, (24, 12))) < 0.06  # thin dark ridges, vessel-like
    img[vessels] *= np.float32(rng.uniform(0.75, 0.95))
    mask = _objects(rng, h, w, count, size)
    # Polyp: the same mucosa, slightly redder, shaded as a dome (brighter towards its centre).
    dist = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 5)
    dome = (dist / max(float(dist.max()), 1.0))[:, :, None]
    redder = np.array([1.0, 1 - contrast, 1 - contrast], np.float32)
    polyp = tex.render(rng, h, w) * redder * (0.9 + rng.uniform(0.0, 0.3) * dome)
    a = _soft(mask, blend)
    img = img * (1 - a) + polyp * a
    for _ in range(int(rng.integers(2, 8))):  # specular highlights
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(1, 5)), (255, 255, 255), -1)
    return img * _vignette(h, w, rng.uniform(0.1, 0.7)) * np.float32(rng.uniform(0.6, 1.15)), [mask]


def defect(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, list[np.ndarray]]:
    count, size, contrast, blend = _draw("defect", p, rng)
    grey = rng.uniform(70, 200)
    base = np.float32(grey) + rng.normal(0, 12, 3).astype(np.float32)  # metal, concrete, fabric: near grey
    tex = Texture(
        np.stack([base, base * rng.uniform(0.6, 0.95)]),
        gain=float(rng.uniform(0.5, 0.85)),
        sharp=float(rng.uniform(0.4, 2.0)),
        grain=float(rng.uniform(0, 55)),
        stretch=float(np.exp(rng.uniform(0, np.log(12)))),
    )
    img = tex.render(rng, h, w)
    mask = _objects(rng, h, w, count, size, ((_blob, 0.5), (_scratch, 0.5)))
    # Stain or scratch: the surface darkened or lightened by ``contrast``, with its own faint grain.
    sign = np.float32(rng.choice([-1.0, 1.0]))
    flaw = (
        img * (1 + sign * np.float32(contrast))
        + np.float32(rng.uniform(0, 10)) * noise_field(rng, h, w, 0.7, (4, 2, 1))[:, :, None]
    )
    a = _soft(mask, blend)
    return (img * (1 - a) + flaw * a) * np.float32(rng.uniform(0.45, 1.1)), [mask]  # lighting varies too


def low_light(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, list[np.ndarray]]:
    count, size, contrast, blend = _draw("low_light", p, rng)
    bg_colour = rng.uniform(60, 220, 3).astype(np.float32)
    bg = _random_texture(rng, np.stack([bg_colour, bg_colour * rng.uniform(0.5, 0.9)]), (0, 50)).render(rng, h, w)
    mask = _objects(rng, h, w, count, size, ((_blob, 0.6), (_thin, 0.4)))
    colour = np.clip(bg_colour + _shift(rng, contrast), 0, 255)
    obj = _random_texture(rng, np.stack([colour, colour * rng.uniform(0.6, 0.9)]), (0, 50)).render(rng, h, w)
    a = _soft(mask, blend)
    return lowlight.darken(np.clip(bg * (1 - a) + obj * a, 0, 255), rng).astype(np.float32), [mask]


def _lab(rgb: np.ndarray) -> np.ndarray:
    """OpenCV 8-bit Lab (the VNS-score's colour space) of RGB colours (N, 3)."""
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb[:, None], cv2.COLOR_RGB2LAB)[:, 0].astype(np.float32)


def _distinct_colour(rng: np.random.Generator, background: np.ndarray, others: np.ndarray) -> np.ndarray:
    """A saturated RGB colour that stands out: Lab distance >= 45 (OpenCV 8-bit Lab) from the ``background`` colour
    and the ``others`` (N, 3), and grey-level distance >= 40 from the background and >= 20 from the others (so edges
    show in luminance too, where the VNS-score's blur term looks). The first of 32 random candidates that
    qualifies, else the one closest to qualifying."""
    hsv = np.stack([rng.uniform(0, 180, 32), rng.uniform(120, 255, 32), rng.uniform(40, 255, 32)], -1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[:, None], cv2.COLOR_HSV2RGB)[:, 0].astype(np.float32)
    avoid = np.concatenate([background[None], others])
    dist = np.linalg.norm(_lab(rgb)[:, None] - _lab(avoid)[None], axis=-1).min(1)
    to_grey = np.array([0.299, 0.587, 0.114], np.float32)  # cv2's RGB -> grey, which the VNS-score uses
    lum = np.abs((rgb @ to_grey)[:, None] - (avoid @ to_grey)[None])  # (32, N + 1)
    merit = np.minimum(np.minimum(dist / 45.0, lum[:, 0] / 40.0), lum[:, 1:].min(1, initial=np.inf) / 20.0)
    return rgb[int(np.argmax(merit >= 1)) if (merit >= 1).any() else int(np.argmax(merit))]


def salient(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, list[np.ndarray]]:
    """Several distinct objects over a textured background; later objects occlude earlier ones.

    Objects are placed first: one that would leave an earlier object less than half visible, or that would itself
    be tiny, is redrawn, so every mask returned is a large visible part of an object in the image.
    """
    count, size, _, blend = _draw("salient", p, rng)
    bg_colour = rng.uniform(40, 220, 3).astype(np.float32)
    # A calm background (low-contrast shading, fine grain) so that every object stands out wherever it lies.
    bg_tex = Texture(
        np.stack([bg_colour, bg_colour * rng.uniform(0.8, 0.95)]),
        gain=float(rng.uniform(0.45, 0.8)),
        sharp=float(rng.uniform(0.5, 1.5)),
        grain=float(rng.uniform(0, 10)),
    )
    img = bg_tex.render(rng, h, w)
    target = int(rng.integers(count[0], count[1] + 1))
    full: list[np.ndarray] = []  # each object's whole silhouette, in painting order
    visible: list[np.ndarray] = []
    for _ in range(target * 6):
        if len(full) == target:
            break
        shape = (_blob, _polygon)[int(rng.integers(0, 2))]
        m = shape(rng, h, w, rng.uniform(*size) * min(h, w)) > 0
        too_small = m.sum() < (0.004 * h * w if full else 1)  # the first object only has to exist
        hides = any((v & ~m).sum() < 0.5 * f.sum() for v, f in zip(visible, full, strict=True))
        if too_small or hides:
            continue
        visible = [v & ~m for v in visible] + [m]
        full.append(m)
    detail = noise_field(rng, h, w, rng.uniform(0.4, 0.7))  # fine texture shared by the objects
    colours = np.zeros((0, 3), np.float32)
    for m in full:
        colour = _distinct_colour(rng, bg_tex.colours.mean(0), colours)
        colours = np.concatenate([colours, colour[None]])
        # Paint inside the bounding box only (3 px margin for the anti-aliased edge): most objects are small.
        x, y, bw, bh = cv2.boundingRect(m.astype(np.uint8))
        box = np.s_[max(y - 3, 0) : min(y + bh + 3, h), max(x - 3, 0) : min(x + bw + 3, w)]
        yy, xx = np.mgrid[box].astype(np.float32)
        light = rng.normal(0, 0.15, 2)  # a directional shading gradient across the object
        shade = 1 + light[0] * (xx - x) / max(bw, 1) + light[1] * (yy - y) / max(bh, 1)
        obj = colour * (shade + np.float32(rng.uniform(0.02, 0.12)) * detail[box])[:, :, None]
        a = _soft(m[box].astype(np.uint8) * 255, blend)  # anti-aliased, crisp edge
        img[box] = img[box] * (1 - a) + obj * a
    return img, [v.astype(np.uint8) * 255 for v in visible]


SCENES = {
    "camouflage": camouflage,
    "low_contrast": low_contrast,
    "defect": defect,
    "low_light": low_light,
    "salient": salient,
}
VNS_KINDS = ("camouflage", "low_contrast", "defect", "low_light")


def make_instances(
    kind: str, rng: np.random.Generator, params: SceneParams = SceneParams()
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One scene: RGB uint8 (H, W, 3) and its masks, uint8 (H, W) 0/255 each.

    VNS kinds give one mask (all objects, as VNS-SEG labels them); ``salient`` gives one per visible object,
    non-overlapping, in painting order (a later mask's object lies on top of the earlier ones).
    """
    h, w = _image_size(rng, params)
    img, masks = SCENES[kind](rng, h, w, params)
    return np.clip(img, 0, 255).astype(np.uint8), masks


def make_scene(
    kind: str, rng: np.random.Generator, params: SceneParams = SceneParams()
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: RGB uint8 (H, W, 3) and the mask of all its objects, uint8 (H, W) 0/255."""
    image, masks = make_instances(kind, rng, params)
    return image, np.maximum.reduce(masks)


def _write(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.endswith(".jpg") else []
    if not cv2.imwrite(path, array, params):
        raise OSError(f"cannot write {path}")


def generate(
    out_dir: str | os.PathLike,
    num: int = 8,
    seed: int = 0,
    *,
    subsets: str | Sequence[str] = "all",
    params: SceneParams = SceneParams(),
) -> dict[str, int]:
    """Writes ``num`` images per subset under ``out_dir`` in the VNS-SEG layout; returns images per subset.

    Per-object subsets (Salient) get one mask per object, ``<stem>_<k>.png``. Each subset draws from its own
    generator (seed, subset index), so adding subsets does not change the others.
    """
    out_dir = os.fspath(out_dir)
    counts = {}
    for name in vns_seg.resolve_names(subsets):
        spec = vns_seg.SUBSETS[name]
        rng = np.random.default_rng([seed, list(vns_seg.SUBSETS).index(name)])
        for i in range(num):
            image, masks = make_instances(spec.kind, rng, params)
            stem = f"{spec.tfds_config}_{i:05d}"
            _write(os.path.join(out_dir, spec.im_dir, stem + spec.im_ext), image)
            named = (
                {f"{stem}_{k}": m for k, m in enumerate(masks)} if spec.per_object else {stem: np.maximum.reduce(masks)}
            )
            for mask_stem, mask in named.items():
                _write(os.path.join(out_dir, spec.gt_dir, mask_stem + spec.gt_ext), mask)
                if spec.edge_dir is not None:
                    _write(
                        os.path.join(out_dir, spec.edge_dir, mask_stem + spec.gt_ext), edges.boundary_from_mask(mask)
                    )
        counts[name] = num
    return counts


# ---------------------------------------------------------------- VNS-score report


def score_report(
    num: int = 200, seed: int = 0, params: SceneParams = SceneParams(), kinds: Sequence[str] = tuple(SCENES)
) -> dict[str, dict[str, float]]:
    """VNS-score distribution per kind over ``num`` generated images (salient: one score per object).

    Also the generation rate: images per CPU second of this process (scoring excluded), which unlike wall time
    does not depend on what else runs on the machine. Scores outside [0, 1] or NaN are dropped
    as the released script does; ``count`` says how many remained.
    """
    from vnsjax.evaluation.vns_score import vns_terms  # vnsjax imports JAX; only the report needs it

    out, pooled = {}, []
    for kind in kinds:
        rng = np.random.default_rng([seed, list(SCENES).index(kind)])
        scenes, start = [], time.process_time()
        for _ in range(num):
            scenes.append(make_instances(kind, rng, params))
        rate = num / max(time.process_time() - start, 1e-9)
        terms = [vns_terms(image, m, channel_order="rgb") for image, masks in scenes for m in masks]
        valid = [t for t in terms if t.valid]
        out[kind] = _distribution([t.score for t in valid], len(terms)) | {
            "color": float(np.mean([t.color for t in valid])),
            "texture": float(np.mean([t.texture for t in valid])),
            "blur": float(np.mean([t.blur for t in valid])),
            "images_per_s": rate,
        }
        if kind in VNS_KINDS:
            pooled += [t.score for t in valid]
    if pooled:
        out["all VNS kinds"] = _distribution(pooled, sum(out[k]["total"] for k in out if k in VNS_KINDS))
    return out


def _distribution(scores: Sequence[float], total: int) -> dict[str, float]:
    s = np.asarray(scores, np.float64)
    q = dict(zip(("q05", "q25", "q50", "q75", "q95"), np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95]), strict=True))
    return {
        "count": len(s),
        "total": total,
        "mean": float(s.mean()),
        "std": float(s.std()),
        **{k: float(v) for k, v in q.items()},
        "above_0.7": float((s > 0.7).mean()),
    }


def format_report(report: dict[str, dict[str, float]]) -> str:
    """Markdown table of ``score_report``: one row per kind, valid / total scores, quantiles, mean terms, speed."""
    cols = ["mean", "std", "q05", "q25", "q50", "q75", "q95", "above_0.7", "color", "texture", "blur"]
    lines = [
        "| kind | valid | " + " | ".join(cols) + " | images per CPU s |",
        "| --- | ---: |" + " ---: |" * (len(cols) + 1),
    ]
    for kind, row in report.items():
        cells = [f"{row[c]:.3f}" if c in row else "" for c in cols]
        rate = f"{row['images_per_s']:.0f}" if "images_per_s" in row else ""
        lines.append(f"| {kind} | {row['count']}/{row['total']} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output root (the VNS-SEG root the reader expects)")
    parser.add_argument("--num", type=int, default=8, help="images per subset (per kind with --report)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--subsets", nargs="+", default=["all"], help="subset names or train/seen/unseen/eval/salient/all"
    )
    parser.add_argument(
        "--objects",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="objects per image (default per kind: 1-2, salient 3-6)",
    )
    parser.add_argument(
        "--size",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="object radius as a fraction of min(H, W) (default per kind)",
    )
    parser.add_argument(
        "--contrast",
        type=float,
        default=None,
        help="fixed object/background contrast (default: drawn per image within the kind's range)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=4,
        default=None,
        metavar=("WMIN", "WMAX", "HMIN", "HMAX"),
        help="image width and height ranges before the portrait swap (default 320 512 240 384)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print per-kind VNS-score distributions and images/s of --num images per kind, writing nothing",
    )
    args = parser.parse_args(argv)
    sizes = (
        {} if args.image_size is None else {"width": tuple(args.image_size[:2]), "height": tuple(args.image_size[2:])}
    )
    params = SceneParams(
        num_objects=args.objects and tuple(args.objects),
        object_size=args.size and tuple(args.size),
        contrast=args.contrast,
        **sizes,
    )
    if args.report:
        print(format_report(score_report(args.num, args.seed, params)))
        return
    if not args.out:
        parser.error("--out is required (or --report)")
    counts = generate(args.out, args.num, args.seed, subsets=args.subsets, params=params)
    print(f"wrote {sum(counts.values())} images to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
