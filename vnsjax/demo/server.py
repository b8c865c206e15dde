"""A local page to prompt several models on the same image and compare their masks side by side.

    python -m vnsjax.demo --checkpoint ckpt/sam_vit_l --checkpoint ckpt/vns_vit_l [--port 7860] [--host 127.0.0.1]

The standard library serves one static page (static/index.html) and a JSON API:
  GET  /api/info            models, banner, bundled samples, upload limits
  GET  /api/sample/NAME     a bundled sample scene (PNG)
  POST /api/image           body: image bytes (or ?sample=NAME); encodes it once per model -> {"id", ...}
  GET  /api/image/ID        the decoded image as the models see it (JPEG), for the page to draw
  POST /api/predict         {"id", "points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null, "multimask"}
                            -> per model: masks (PNG data URLs, best score first), scores, latency
One lock serialises the model calls, so requests from several tabs run one after the other.
Why the standard library and not Gradio: docs/demo.md.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import io
import json
import sys
import threading
import traceback
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 64 * 2**20
# Masks come back at the image's own size, so the pixel count bounds the work per click; it also refuses
# decompression bombs (a small file that decodes to gigapixels) before any pixel is decoded.
MAX_PIXELS = 40_000_000
IMAGE_CACHE = 8  # decoded images kept for re-encoding when tabs alternate between images
FORMATS = "PNG, JPEG, BMP, TIFF, WebP or GIF"
RANDOM_BANNER = (
    "Random weights: {names} {verb} (partly) randomly initialised, untrained, so {pronoun} masks are meaningless. "
    "Pass --checkpoint DIR (a converted model) to compare real models."
)


class BadInput(ValueError):
    """A request the page should explain to the user (HTTP 400 with the message)."""


def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """Image file bytes -> HWC uint8 RGB (EXIF orientation applied), or BadInput naming the file."""
    if not data:
        raise BadInput(f"{name}: the file is empty; expected an image ({FORMATS})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        reason = "too many pixels" if "Bomb" in type(e).__name__ else "not an image file PIL can identify"
        raise BadInput(f"{name}: {reason}; expected {FORMATS}") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise BadInput(f"{name}: {w}x{h} pixels is over the demo's limit of {MAX_PIXELS:,} pixels")
        try:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt pixel data
            raise BadInput(f"{name}: the image file is damaged ({e}); expected {FORMATS}") from None


def png_data_url(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def parse_prompt(body: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """{"points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null} -> coords, labels, box (or BadInput)."""
    points, box = body.get("points") or [], body.get("box")
    try:
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        box = None if box is None else np.asarray(box, np.float64).reshape(4)
    except (TypeError, ValueError):
        raise BadInput("prompt: expected points as [[x, y, label], ...] and box as [x0, y0, x1, y1]") from None
    if not np.isin(pts[:, 2], (0, 1)).all():
        raise BadInput("prompt: point labels must be 1 (foreground) or 0 (background)")
    if not len(pts) and box is None:
        raise BadInput("prompt: click a point or drag a box first")
    if len(pts):
        return pts[:, :2], pts[:, 2].astype(np.int32), box
    return None, None, box


class DemoApp:
    """State shared by the request threads: the models, the decoded images, one lock for the model calls."""

    def __init__(self, models: list, samples_dir: Path | None = None):
        if not models:
            raise ValueError("the demo needs at least one model")
        self.models = models
        self.samples = {p.stem: p for p in sorted(samples_dir.glob("*.png"))} if samples_dir else {}
        self.images: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.images_lock = threading.Lock()
        self.model_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        random = [m.name for m in self.models if m.random_weights]
        banner = None
        if random:
            plural = len(random) > 1
            banner = RANDOM_BANNER.format(
                names=" and ".join(random), verb="are" if plural else "is", pronoun="their" if plural else "its"
            )
        return {
            "models": [
                {"name": m.name, "variant": m.variant, "model_type": m.model_type, "precision": m.precision}
                for m in self.models
            ],
            "banner": banner,
            "samples": list(self.samples),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "max_pixels": MAX_PIXELS,
        }

    def add_image(self, data: bytes, name: str) -> dict[str, Any]:
        image = decode_image(data, name)
        key = hashlib.sha256(image.tobytes() + repr(image.shape).encode()).hexdigest()[:16]
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=92)
        with self.images_lock:
            self.images[key] = {"image": image, "jpeg": buf.getvalue(), "name": name}
            self.images.move_to_end(key)
            while len(self.images) > IMAGE_CACHE:
                self.images.popitem(last=False)
        encode_ms = self._encode(key, image)
        h, w = image.shape[:2]
        return {"id": key, "name": name, "width": w, "height": h, "encode_ms": encode_ms}

    def image_entry(self, key: str) -> dict[str, Any]:
        with self.images_lock:
            if key not in self.images:
                raise BadInput("this image is no longer on the server (too many images since); upload it again")
            self.images.move_to_end(key)
            return self.images[key]

    def _encode(self, key: str, image: np.ndarray) -> dict[str, float | None]:
        with self.model_lock:
            return {m.name: m.set_image(key, image) for m in self.models}

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = self.image_entry(str(body.get("id")))
        coords, labels, box = parse_prompt(body)
        multimask = bool(body.get("multimask", False))
        results = []
        with self.model_lock:
            for m in self.models:
                # Another tab may have encoded a different image since: the predictor holds one image.
                encode_ms = m.set_image(str(body["id"]), entry["image"])
                masks, scores, ms = m.predict(coords, labels, box, multimask)
                order = np.argsort(-scores, kind="stable")
                results.append(
                    {
                        "name": m.name,
                        "variant": m.variant,
                        "masks": [png_data_url(masks[i]) for i in order],
                        "scores": [float(scores[i]) for i in order],
                        "latency_ms": ms,
                        "encode_ms": encode_ms,
                    }
                )
        return {"results": results}

    def warmup(self, more_points: tuple[int, ...] = (2, 0)) -> threading.Thread:
        """Compiles the encoder and the one-point decoder now; 2-3 points and a box alone in a thread.

        The thread takes the model lock one compile at a time, so a click waits for at most one compile.
        """
        with self.model_lock:
            for m in self.models:
                m.warmup()

        def compile_more() -> None:
            for n in more_points:
                for m in self.models:
                    with self.model_lock:
                        m.warm_points(n)

        thread = threading.Thread(target=compile_more, name="warmup", daemon=True)
        thread.start()
        return thread


class Handler(BaseHTTPRequestHandler):
    app: DemoApp  # set on the subclass made by make_server
    server_version = "vnsjax-demo"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would drown the startup messages; errors are printed below

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadInput("the request's Content-Length is not a number") from None
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise BadInput(f"the upload is {length / 2**20:.0f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
        return self.rfile.read(length)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            page = resources.files("vnsjax.demo").joinpath("static/index.html").read_bytes()
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        if path == "/api/info":
            return self._json(self.app.info())
        if path.startswith("/api/sample/"):
            sample = self.app.samples.get(unquote(path.removeprefix("/api/sample/")))
            if sample is None:
                return self._error(HTTPStatus.NOT_FOUND, f"no sample named {path.rsplit('/', 1)[-1]!r}")
            return self._send(HTTPStatus.OK, sample.read_bytes(), "image/png")
        if path.startswith("/api/image/"):
            try:
                entry = self.app.image_entry(path.removeprefix("/api/image/"))
            except BadInput as e:
                return self._error(HTTPStatus.NOT_FOUND, str(e))
            return self._send(HTTPStatus.OK, entry["jpeg"], "image/jpeg")
        self._error(HTTPStatus.NOT_FOUND, f"no page {path}")

    def do_POST(self) -> None:
        url = urlparse(self.path)
        try:
            if url.path == "/api/image":
                sample = parse_qs(url.query).get("sample", [None])[0]
                if sample is not None:
                    if sample not in self.app.samples:
                        raise BadInput(f"no sample named {sample!r}; expected one of {sorted(self.app.samples)}")
                    return self._json(self.app.add_image(self.app.samples[sample].read_bytes(), sample))
                name = unquote(self.headers.get("X-Filename") or "upload")
                return self._json(self.app.add_image(self._body(), name))
            if url.path == "/api/predict":
                try:
                    body = json.loads(self._body() or b"{}")
                except json.JSONDecodeError as e:
                    raise BadInput(f"predict: the request is not JSON ({e})") from None
                if not isinstance(body, dict):
                    raise BadInput("predict: expected a JSON object")
                return self._json(self.app.predict(body))
            self._error(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")
        except BadInput as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # the page shows it; the server keeps serving the other tabs
            traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}")


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    handler = type("DemoHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def samples_dir() -> Path:
    return Path(str(resources.files("vnsjax.demo").joinpath("assets")))


def build_parser() -> argparse.ArgumentParser:
    from vnsjax.modeling.precision import add_precision_flag

    p = argparse.ArgumentParser(prog="python -m vnsjax.demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="DIR",
        help="converted model directory; repeat to compare models (default: random tiny SAM and VNS-SAM)",
    )
    p.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    add_precision_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vnsjax.demo.models import default_models, load_models

    try:
        models = load_models(args.checkpoint, args.precision) if args.checkpoint else default_models(args.precision)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    app = DemoApp(models, samples_dir())
    if app.info()["banner"]:
        print(app.info()["banner"], flush=True)
    print(f"compiling {len(models)} model(s): {', '.join(m.name for m in models)} ...", flush=True)
    app.warmup()
    try:
        server = make_server(app, args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines", flush=True)
    print(f"Serving on http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
