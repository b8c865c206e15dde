"""`python -m vnsjax.demo`: the server in a subprocess, driven by headless Chromium and through its JSON API.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); without them these tests fail.
Set VNSJAX_DEMO_SCREENSHOT=docs/images/demo.png to keep the screenshot of the page.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline.synthetic import make_scene
from vnsjax.demo.models import default_models, load_models
from vnsjax.demo.server import MAX_PIXELS, BadInput, DemoApp, build_parser, decode_image, parse_prompt
from vnsjax.model_dir import save_model

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,950",
]
STARTUP_S = 900  # model build + compiles on 2 shared cores
WAIT_S = 300
# The server starts once per xdist worker: one group (pyproject: --dist loadgroup) keeps its tests on one worker.
SERVER = pytest.mark.xdist_group("demo_server")


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def _scene(seed: int) -> np.ndarray:
    image, _ = make_scene("camouflage", np.random.default_rng(seed))
    return image


# ---- no server ------------------------------------------------------------------------------------------------


def test_decode_image_names_the_file_and_refuses_bad_input():
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    image = decode_image(_png_bytes(rgba), "a.png")
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8 and (image[..., 0] == 200).all()

    with pytest.raises(BadInput, match=r"notes\.txt: not an image file"):
        decode_image(b"just some text", "notes.txt")
    with pytest.raises(BadInput, match=r"empty\.png: the file is empty"):
        decode_image(b"", "empty.png")
    with pytest.raises(BadInput, match=r"cut\.png: the image file is damaged"):
        decode_image(_png_bytes(_scene(0))[:2000], "cut.png")
    # A decompression bomb: a few KB that decode to 64 M pixels, refused from the header alone.
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000 and 8000 * 8000 > MAX_PIXELS
    with pytest.raises(BadInput, match=r"bomb\.png: 8000x8000 pixels is over"):
        decode_image(buf.getvalue(), "bomb.png")


def test_parse_prompt():
    coords, labels, box = parse_prompt({"points": [[3, 4, 1], [5.5, 6, 0]], "box": None})
    np.testing.assert_array_equal(coords, [[3, 4], [5.5, 6]])
    np.testing.assert_array_equal(labels, [1, 0])
    assert box is None
    coords, labels, box = parse_prompt({"points": [], "box": [1, 2, 3, 4]})
    assert coords is None and labels is None and box.tolist() == [1, 2, 3, 4]
    with pytest.raises(BadInput, match="labels must be 1"):
        parse_prompt({"points": [[3, 4, 2]]})
    with pytest.raises(BadInput, match="click a point or drag a box"):
        parse_prompt({"points": [], "box": None})
    with pytest.raises(BadInput, match="expected points"):
        parse_prompt({"points": [[1, 2]]})


def test_binds_to_localhost_by_default():
    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.checkpoint == []


# ---- the server ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The default models (the shipped base, VNS-SAM on it) written as checkpoints and served by
    `python -m vnsjax.demo --checkpoint`."""
    root = tmp_path_factory.mktemp("demo")
    models = default_models()
    dirs = [
        save_model(m.predictor.model, root / name) for m, name in zip(models, ("sam_base", "vns_base"), strict=True)
    ]
    cmd = [sys.executable, "-m", "vnsjax.demo", "--port", "0"]
    for d in dirs:
        cmd += ["--checkpoint", str(d)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    log, url, deadline = [], None, time.monotonic() + STARTUP_S
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        log.append(line)
        if line.startswith("Serving on "):
            url = line.split()[2]
    if url is None:
        proc.kill()
        pytest.fail("the demo server did not start:\n" + "".join(log))
    names = [m.name for m in load_models(dirs)]  # the names the server gives its --checkpoint models
    yield {"url": url, "models": models, "names": names, "log": log}
    proc.terminate()
    proc.wait(timeout=30)


def _post(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=WAIT_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _predict(url: str, image_id: str, points, box=None, multimask=False) -> tuple[int, dict]:
    body = json.dumps({"id": image_id, "points": points, "box": box, "multimask": multimask}).encode()
    return _post(url + "/api/predict", body, {"Content-Type": "application/json"})


def _mask(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


@pytest.mark.slow
@SERVER
def test_default_models_are_the_base_and_untrained_vns_says_so(served):
    """The shipped SAM base is trained (no banner); VNS-SAM on it has untrained METI / NSFM, and the banner names it."""
    models = served["models"]
    assert [m.variant for m in models] == ["sam", "vns"] and [m.random_weights for m in models] == [False, True]
    assert [m.model_type for m in models] == ["mini", "mini"]
    banner = DemoApp(models).info()["banner"]
    assert "Random weights" in banner and models[1].name in banner and models[0].name not in banner
    # Served from --checkpoint directories, the same weights are not flagged.
    with urllib.request.urlopen(served["url"] + "/api/info", timeout=WAIT_S) as r:
        info = json.loads(r.read())
    assert info["banner"] is None and [m["variant"] for m in info["models"]] == ["sam", "vns"]
    assert info["samples"] == ["camouflage", "low_contrast", "low_light"]
    assert served["names"] == [m["name"] for m in info["models"]]


@pytest.mark.slow
@SERVER
def test_two_tabs_at_once_are_served_one_after_the_other(served):
    url = served["url"]
    ids = []
    for sample in ("camouflage", "low_light"):
        status, r = _post(url + f"/api/image?sample={sample}", b"")
        assert status == 200, r
        ids.append(r["id"])
    prompts = [[[60, 50, 1]], [[200, 120, 1]], [[100, 150, 1]]]
    expected = {}
    for i, image_id in enumerate(ids):
        for j, points in enumerate(prompts):
            status, r = _predict(url, image_id, points)
            assert status == 200, r
            expected[i, j] = [res["masks"][0] for res in r["results"]]

    # Two "tabs" alternate images on the same models: each answer must be its own image's, none may fail.
    got, errors = {}, []

    def tab(i: int) -> None:
        for j, points in enumerate(prompts):
            status, r = _predict(url, ids[i], points)
            if status != 200:
                errors.append(r)
                return
            got[i, j] = [res["masks"][0] for res in r["results"]]

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * WAIT_S)
    assert not errors and got == expected


@pytest.mark.slow
@SERVER
def test_large_image_is_resized_by_the_model_and_masks_come_back_full_size(served):
    big = np.asarray(Image.fromarray(_scene(1)).resize((2400, 1700), Image.BILINEAR))
    status, r = _post(served["url"] + "/api/image", _png_bytes(big), {"X-Filename": "big.png"})
    assert status == 200 and (r["width"], r["height"]) == (2400, 1700), r
    status, r = _predict(served["url"], r["id"], [[1200, 850, 1]], box=[300, 200, 2000, 1500])
    assert status == 200, r
    for res in r["results"]:
        assert _mask(res["masks"][0]).shape == (1700, 2400)


@pytest.mark.slow
@SERVER
def test_api_errors_are_messages(served):
    url = served["url"]
    status, r = _post(url + "/api/image", b"%PDF-1.4 not an image", {"X-Filename": "paper.pdf"})
    assert status == 400 and r["error"].startswith("paper.pdf: not an image file")
    status, r = _post(url + "/api/image?sample=nope", b"")
    assert status == 400 and "no sample named 'nope'" in r["error"]
    status, r = _predict(url, "0123456789abcdef", [[1, 1, 1]])
    assert status == 400 and "upload it again" in r["error"]
    status, r = _post(url + "/api/predict", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "not JSON" in r["error"]


# ---- in Chromium -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except Exception as e:
        message = driver.execute_script("return document.getElementById('message').textContent")
        raise AssertionError(f"timed out waiting for {what}; page message: {message!r}") from e


def _ready(driver) -> bool:
    return driver.execute_script("return document.body.dataset.state") == "ready"


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: _ready(d) and d.execute_script("return state.info !== null"), "the page to load")


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    before = driver.execute_script("return state.id")
    driver.find_element(By.ID, "upload").send_keys(str(path))
    _wait(
        driver,
        lambda d: _ready(d) and (d.execute_script("return state.id") != before or _error(d)),
        f"{path.name} to load",
    )


def _error(driver) -> str | None:
    return driver.execute_script(
        "const m = document.getElementById('message'); return m.className === 'error' ? m.textContent : null"
    )


def _results(driver, n_models: int) -> list[dict]:
    _wait(
        driver,
        lambda d: _ready(d) and len(d.execute_script("return state.results || []")) == n_models,
        "a mask from every model",
    )
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .result')].map(p => ({"
        "name: p.dataset.model, href: p.querySelector('a.download').href, stats: p.querySelector('.stats').textContent,"
        "choices: p.querySelectorAll('.choices button').length}))"
    )


@pytest.mark.slow
@SERVER
def test_browser_upload_click_prompts_and_bad_upload(served, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, names = browser, served["names"]
    _open(driver, served["url"])
    assert not driver.find_element(By.ID, "banner").is_displayed()  # real checkpoints: no random banner

    image = _scene(2)
    h, w = image.shape[:2]
    Image.fromarray(image).save(tmp_path / "scene.png")
    _upload(driver, tmp_path / "scene.png")
    assert _error(driver) is None
    canvas = driver.find_element(By.ID, "prompt-canvas")
    scale = driver.execute_script("return state.scale")

    # Left click 40 px left of and 20 px above the canvas centre: one foreground point there, in image pixels.
    ActionChains(driver).move_to_element_with_offset(canvas, -40, -20).click().perform()
    results = _results(driver, len(names))
    (x, y, label), *rest = driver.execute_script("return state.points")
    assert not rest and label == 1
    assert abs(x - (w / 2 - 40 / scale)) < 2 / scale and abs(y - (h / 2 - 20 / scale)) < 2 / scale
    assert [r["name"] for r in results] == names
    masks = {r["name"]: _mask(r["href"]) for r in results}
    for name, mask in masks.items():
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}, name
        assert (mask > 0).any(), f"{name}: empty mask"
    assert all("decoder" in r["stats"] and "score" in r["stats"] for r in results)

    # The page shows what the model computes for that point (the same SAM model, called directly).
    sam = served["models"][0]
    sam.set_image("direct", image)
    direct, _, _ = sam.predict(np.array([[x, y]]), np.array([1]), None, multimask=False)
    assert np.mean((masks[names[0]] > 0) != direct[0]) < 1e-3

    # Multimask: SAM offers three masks (best first), VNS-SAM has one.
    driver.find_element(By.ID, "multimask").click()
    _wait(driver, lambda d: _ready(d) and _results(d, len(names))[0]["choices"] == 3, "three SAM masks")
    assert [r["choices"] for r in _results(driver, len(names))] == [3, 0]

    # Right click adds a background point, a drag sets the box; both go to the models.
    ActionChains(driver).move_to_element_with_offset(canvas, 60, 40).context_click().perform()
    _wait(driver, lambda d: _ready(d) and len(d.execute_script("return state.points")) == 2, "the background point")
    ActionChains(driver).move_to_element_with_offset(canvas, -110, -70).click_and_hold().move_by_offset(
        80, 60
    ).move_by_offset(80, 60).release().perform()
    _wait(driver, lambda d: _ready(d) and d.execute_script("return state.box") is not None, "the box")
    expected_box = [w / 2 - 110 / scale, h / 2 - 70 / scale, w / 2 + 50 / scale, h / 2 + 50 / scale]
    assert np.abs(np.subtract(driver.execute_script("return state.box"), expected_box)).max() < 2 / scale
    assert [p[2] for p in driver.execute_script("return state.points")] == [1, 0]
    _results(driver, len(names))
    assert _error(driver) is None
    shot = tmp_path / "demo.png"
    driver.save_screenshot(str(shot))
    if os.environ.get("VNSJAX_DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["VNSJAX_DEMO_SCREENSHOT"])

    driver.find_element(By.ID, "clear").click()
    assert driver.execute_script(
        "return [state.points.length, state.box, document.querySelectorAll('.result').length]"
    ) == [0, None, 0]

    # A file that is not an image: a message in the page, the current image stays.
    (tmp_path / "notes.txt").write_text("not an image\n")
    current = driver.execute_script("return state.id")
    _upload(driver, tmp_path / "notes.txt")
    assert _error(driver).startswith("notes.txt: not an image file")
    assert driver.execute_script("return state.id") == current
