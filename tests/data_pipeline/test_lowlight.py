"""Low-light synthesis: darker, Poisson-Gaussian noise statistics, seeded, camera-curve round trip, folder CLI."""

import os

import cv2
import numpy as np
import pytest

from data_pipeline import lowlight, synthetic


def _photo(seed=0):
    return synthetic.make_scene(
        "camouflage", np.random.default_rng(seed), synthetic.SceneParams(width=(160, 200), height=(120, 140))
    )[0]


def test_darker_for_every_draw():
    image = _photo()
    for seed in range(8):
        dark = lowlight.darken(image, np.random.default_rng(seed))
        assert dark.shape == image.shape and dark.dtype == np.uint8
        assert dark.mean() < 0.75 * image.mean()


def test_curves_round_trip_without_degradation():
    # Exposure 1, no cast and (almost) no noise: only the inverse and forward camera curves remain, which must
    # cancel up to 8-bit rounding.
    image = _photo(1)
    clean = lowlight.LowLightParams(exposure=1.0, gains=(1.0, 1.0, 1.0), shot=1e-9, read=0.0)
    out = lowlight.darken(image, np.random.default_rng(0), clean)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1


@pytest.mark.parametrize("shot,read", [(4e-3, 1e-4), (2e-4, 2e-6)])
def test_noise_variance_is_affine_in_the_signal(shot, read):
    rng = np.random.default_rng(0)
    n = 200_000
    levels = (0.005, 0.05, 0.2, 0.6)
    variances = []
    for level in levels:
        y = lowlight.poisson_gaussian(np.full(n, level, np.float32), shot, read, rng)
        assert y.mean() == pytest.approx(level, rel=0.01, abs=3 * np.sqrt((shot * level + read) / n))
        variances.append(y.var())
        # Sample variance of n draws has a relative std of about sqrt(2 / n) = 0.3 %; 3 % is far outside chance.
        assert y.var() == pytest.approx(shot * level + read, rel=0.03)
    assert all(a < b for a, b in zip(variances, variances[1:], strict=False))


def test_seeded():
    image = _photo(2)
    a = lowlight.darken(image, np.random.default_rng(5))
    b = lowlight.darken(image, np.random.default_rng(5))
    c = lowlight.darken(image, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_synthetic_low_light_kind_uses_darken(monkeypatch):
    calls = []
    real = lowlight.darken
    monkeypatch.setattr(lowlight, "darken", lambda image, rng, params=None: calls.append(1) or real(image, rng, params))
    synthetic.make_scene("low_light", np.random.default_rng(0))
    assert calls == [1]


def _folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["a.png", "b.jpg"]):
        cv2.imwrite(str(src / name), cv2.cvtColor(_photo(i), cv2.COLOR_RGB2BGR))
    (src / "broken.png").write_bytes(b"not an image")
    (src / "notes.txt").write_text("ignored: not an image extension")
    return src


def test_folder_cli_skips_bad_files_and_fails_at_the_end(tmp_path, capsys):
    src = _folder(tmp_path)
    rc = lowlight.main(["--input", str(src), "--output", str(tmp_path / "out"), "--seed", "3"])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "skipped 1 bad files" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.jpg"]
    dark = cv2.imread(str(tmp_path / "out" / "a.png"))
    assert dark.mean() < cv2.imread(str(src / "a.png")).mean()
    # Same seed, another folder: identical pixels; another seed: different ones.
    lowlight.main(["--input", str(src), "--output", str(tmp_path / "again"), "--seed", "3"])
    lowlight.main(["--input", str(src), "--output", str(tmp_path / "other"), "--seed", "4"])
    again, other = (cv2.imread(str(tmp_path / d / "a.png")) for d in ("again", "other"))
    assert np.array_equal(dark, again) and not np.array_equal(dark, other)


def test_folder_cli_refuses_to_overwrite_or_write_into_the_input(tmp_path, capsys):
    src = _folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.jpg").write_bytes(b"user data")
    assert lowlight.main(["--input", str(src), "--output", str(out)]) == 2
    assert "b.jpg" in capsys.readouterr().err
    assert os.listdir(out) == ["b.jpg"] and (out / "b.jpg").read_bytes() == b"user data"

    before = sorted(os.listdir(src))
    for inside in (src, src / "dark"):
        assert lowlight.main(["--input", str(src), "--output", str(inside)]) == 2
        assert "inside --input" in capsys.readouterr().err
    assert sorted(os.listdir(src)) == before

    assert lowlight.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "x")]) == 2
    assert "is not a folder" in capsys.readouterr().err
