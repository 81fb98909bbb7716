"""The web app's HTTP server: thin Starlette routes over :class:`~motionprop.web.sessions.Sessions`.

Each route parses and checks its input, calls the same Python API as the
command line (``Propagator``, ``annotate``, ``render_frames``) through
:class:`Sessions` in a worker thread (never on the event loop), and returns
bytes or JSON. A bad input is a 4xx with ``{"error": "..."}``; the server keeps
serving. The HTTP API is documented in ``docs/app.md``.

A local server done right: it binds 127.0.0.1 by default; the Host header must
name an allowed host (DNS rebinding); a request with a foreign ``Origin`` is
refused and no CORS header is ever sent; every response carries a
Content-Security-Policy that allows only the page's own origin; static files
are a fixed table read from the package, never a client-given path.
"""

from __future__ import annotations

import base64
import io
import json
import time
from importlib import resources
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..apps.refine import check_method
from ..errors import InputError, MotionpropError
from .sessions import MAX_OBJECTS, SessionNotFound, Sessions

MAX_JSON_BYTES = 2 * 1024 * 1024
PREVIEW_SIDE = 1024  # long side of the flow pictures sent to the page
GRID_SIDE = 256  # long side of the flow values sent for the (u, v) readout
PREVIEW_FORMATS = ("jpeg", "png")
"""Formats of the live flow and confidence pictures (:func:`create_app`'s ``preview_format``). JPEG takes
1 ms to encode at 640x480 against about 20 ms for PNG, in an eighth of the bytes (``benchmarks/bench_app.py
--compare-png``). Downloads and the annotation score maps (thresholded in the page) are always PNG."""
PREVIEW_JPEG_QUALITY = 92
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


# --------------------------------------------------------------------------- middleware


class SecurityMiddleware:
    """Refuse requests from a foreign Origin; add the CSP and friends to every response."""

    def __init__(self, app: Any, allowed_hosts: list[str]):
        self.app = app
        self.allowed_hosts = set(allowed_hosts)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1")):
            response = JSONResponse({"error": "cross-origin request refused"}, status_code=403)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    def _origin_allowed(self, origin: str) -> bool:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(origin)
            host = parts.hostname or ""
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and (host in self.allowed_hosts or f"[{host}]" in self.allowed_hosts)

    @staticmethod
    def _with_headers(send: Callable) -> Callable:
        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)
        return wrapped


# --------------------------------------------------------------------------- helpers


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, whatever Content-Length claims)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"request body is {length} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object of the body; the content type must be application/json (no simple cross-site POST)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send JSON with Content-Type: application/json")
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InputError("request body must be a JSON object")
    return value


def number(body: dict, key: str, default: Any, kind: type = float, low: float | None = None,
           high: float | None = None) -> Any:
    """``body[key]`` as ``kind`` (bool refused), within [low, high]; ``default`` when absent or null."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise InputError(f"{key} must be {'an integer' if kind is int else 'a number'}")
    value = kind(value)
    if not np.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{key} = {value} is out of range [{low}, {high}]")
    return value


def _encoded(extension: str, rgb: np.ndarray, params: list[int]) -> bytes:
    """uint8 RGB or grey ``rgb`` encoded by OpenCV as ``extension`` (".png", ".jpg")."""
    import cv2

    data = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(extension, data, params)
    if not ok:
        raise RuntimeError(f"{extension} encoding failed")
    return buffer.tobytes()


def png_bytes(rgb: np.ndarray, compression: int = 1) -> bytes:
    import cv2

    return _encoded(".png", rgb, [cv2.IMWRITE_PNG_COMPRESSION, compression])


def jpeg_bytes(rgb: np.ndarray, quality: int = PREVIEW_JPEG_QUALITY) -> bytes:
    """JPEG of uint8 RGB or grey ``rgb``, without chroma subsampling (flow colours keep their edges)."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    return _encoded(".jpg", rgb, params)


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def resample(array: np.ndarray, max_side: int) -> np.ndarray:
    """``array`` (H, W[, C]) resized (bilinear) so the long side is at most ``max_side``; values unscaled."""
    import cv2

    h, w = array.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


# --------------------------------------------------------------------------- the app


def create_app(sessions: Sessions, allowed_hosts: list[str] | None = None, info: dict | None = None,
               preview_format: str = "jpeg") -> Starlette:
    """The ASGI app serving the page and the API for ``sessions``.

    ``preview_format`` (one of :data:`PREVIEW_FORMATS`) is the live pictures' format; it is kept in
    ``app.state.preview_format``, where a benchmark may change it between requests.
    """
    if preview_format not in PREVIEW_FORMATS:
        raise ValueError(f"preview_format must be one of {PREVIEW_FORMATS}, got {preview_format!r}")
    hosts = list(allowed_hosts or LOCAL_HOSTS)
    static = _static_files()
    info = dict(info or {})

    async def call(fn: Callable, *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    async def page(request: Request) -> Response:
        return Response(static["index.html"][0], media_type=static["index.html"][1],
                        headers={"cache-control": "no-cache"})

    async def static_file(request: Request) -> Response:
        entry = static.get(request.path_params["name"])
        if entry is None:
            return error("not found", 404)
        return Response(entry[0], media_type=entry[1], headers={"cache-control": "no-cache"})

    async def api_info(request: Request) -> Response:
        model = sessions.model
        bins = getattr(model, "bins", None)
        return JSONResponse({**info, "discrete": bins is not None, "fmax": float(bins.fmax) if bins else None,
                             "working_size": sessions.working_size, "max_sessions": sessions.max_sessions,
                             "max_points": sessions.max_points, "max_upload_bytes": sessions.limits.max_bytes,
                             "max_pixels": sessions.limits.max_pixels,
                             "dominant_motion": sessions.has_dominant_motion})

    async def legend(request: Request) -> Response:
        return Response(await call(_legend_png), media_type="image/png",
                        headers={"cache-control": "max-age=3600"})

    async def create_session(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in UPLOAD_TYPES:
            raise HTTPException(415, f"upload the image as the body with Content-Type {', '.join(UPLOAD_TYPES)}")
        data = await read_body(request, sessions.limits.max_bytes)
        name = unquote(request.headers.get("x-filename", "image"))[:200]
        session = await call(sessions.create, data, name)
        return JSONResponse(_describe(session), status_code=201)

    async def get_session(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        return JSONResponse(_describe(session))

    async def delete_session(request: Request) -> Response:
        sessions.delete(request.path_params["sid"])
        return Response(status_code=204)

    async def image(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        return Response(await call(png_bytes, session.image), media_type="image/png")

    async def flow(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        body = await read_json(request)
        guidance = sessions.guidance(session, body.get("guidance"))
        max_flow = number(body, "max_flow", None, float, 1e-3, 1e5)
        confidence = bool(body.get("confidence", False))
        dominant = bool(body.get("dominant_motion", False))
        start = time.perf_counter()
        result = await call(_flow_response, sessions, session, guidance, max_flow, confidence,
                            request.app.state.preview_format, dominant)
        result["seconds"] = round(time.perf_counter() - start, 4)
        return JSONResponse(result)

    async def flow_export(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        body = await read_json(request)
        guidance = sessions.guidance(session, body.get("guidance"))
        fmt = body.get("format", "flo")
        if fmt not in ("flo", "png", "vis"):
            raise InputError("format must be flo (Middlebury flow), png (flow colours) or vis (image + flow)")
        max_flow = number(body, "max_flow", None, float, 1e-3, 1e5)
        data = await call(_flow_file, sessions, session, guidance, fmt, max_flow,
                          bool(body.get("dominant_motion", False)))
        suffix = {"flo": "flo", "png": "png", "vis": "png"}[fmt]
        name = f"{stem(session.name)}_{'vis' if fmt == 'vis' else 'flow'}.{suffix}"
        return download(data, "application/octet-stream" if fmt == "flo" else "image/png", name)

    async def annotate(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        body = await read_json(request)
        positive = sessions.clicks(session, body.get("positive"), "positive")
        negative = sessions.clicks(session, body.get("negative"), "negative")
        zoom = number(body, "zoom", None, float, 1.0, 64.0)
        velocity = number(body, "velocity", 30.0, float, 0.1, 200.0)
        refine = check_method(body.get("refine", "none"))  # before any inference
        threshold = number(body, "threshold", 0.5, float, 0.0, 0.999)
        start = time.perf_counter()
        result = await call(sessions.annotation, session, positive, negative, velocity, zoom)
        score = np.round(resample(result.score, PREVIEW_SIDE) * 255).astype(np.uint8)
        answer = {"score": data_url(await call(png_bytes, score)),
                  "zoom_box": list(result.zoom_box) if result.zoom_box else None,
                  "area_at_half": int(np.count_nonzero(result.score > 0.5))}
        if refine != "none":
            refined = await call(sessions.object_mask, session, positive, negative, threshold, refine, velocity, zoom)
            mask = np.where(resample(refined.mask.astype(np.float32), PREVIEW_SIDE) > 0.5, 255, 0).astype(np.uint8)
            answer["mask"] = data_url(await call(png_bytes, mask))
        answer["seconds"] = round(time.perf_counter() - start, 4)
        return JSONResponse(answer)

    async def annotations_export(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        body = await read_json(request)
        threshold = number(body, "threshold", 0.5, float, 0.0, 0.999)
        fmt = body.get("format", "coco")
        if fmt not in ("coco", "label", "mask"):
            raise InputError("format must be coco (COCO RLE JSON), label (one label PNG) or mask (one object's PNG)")
        objects = body.get("objects")
        if not isinstance(objects, list) or not objects or len(objects) > MAX_OBJECTS:
            raise InputError(f"objects: expected a list of 1..{MAX_OBJECTS} objects with positive clicks")
        parsed = []
        for k, obj in enumerate(objects):
            if not isinstance(obj, dict):
                raise InputError(f"objects[{k}] must be an object")
            category = obj.get("category", "object")
            if not isinstance(category, str) or not category or len(category) > 100:
                raise InputError(f"objects[{k}].category must be a non-empty string")
            positive = sessions.clicks(session, obj.get("positive"), f"objects[{k}].positive")
            if len(positive) == 0:
                raise InputError(f"objects[{k}] needs at least one positive click")
            negative = sessions.clicks(session, obj.get("negative"), f"objects[{k}].negative")
            parsed.append((positive, negative, category, number(obj, "zoom", None, float, 1.0, 64.0)))
        index = number(body, "index", 0, int, 0, len(parsed) - 1)
        refine = check_method(body.get("refine", "none"))  # before any inference
        data, media, name = await call(_annotation_file, sessions, session, parsed, threshold, refine, fmt, index)
        return download(data, media, name)

    async def animate_start(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        body = await read_json(request)
        guidance = sessions.guidance(session, body.get("guidance"))
        frames = number(body, "frames", 24, int, 2, 120)
        fps = number(body, "fps", 12.0, float, 0.1, 60)
        max_side = number(body, "max_side", 640, int, 16, 4096)
        mode = body.get("mode", "forward")
        if mode not in ("forward", "loop"):
            raise InputError("mode must be forward or loop")
        job = sessions.start_animation(session, guidance, frames, mode, fps, body.get("format", "gif"), max_side,
                                       bool(body.get("dominant_motion", False)))
        return JSONResponse(_job(job), status_code=202)

    async def animate_status(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        return JSONResponse(_job(sessions.job(session, request.path_params["job"])))

    async def animate_cancel(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        job = sessions.job(session, request.path_params["job"])
        job.cancel.set()
        return JSONResponse(_job(job))

    async def animate_result(request: Request) -> Response:
        session = sessions.get(request.path_params["sid"])
        job = sessions.job(session, request.path_params["job"])
        if job.state != "done" or job.result is None:
            return error(f"animation is {job.state}" + (f": {job.error}" if job.error else ""), 409)
        media = "image/gif" if job.fmt == "gif" else "video/mp4"
        return download(job.result, media, f"{stem(session.name)}_clip.{job.fmt}")

    async def on_input_error(request: Request, exc: Exception) -> Response:
        return error(str(exc), 400)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return error(str(exc), 404)

    async def on_http(request: Request, exc: HTTPException) -> Response:
        return error(str(exc.detail), exc.status_code)

    sid = "/api/sessions/{sid}"
    routes = [
        Route("/", page),
        Route("/static/{name}", static_file),
        Route("/api/info", api_info),
        Route("/api/legend.png", legend),
        Route("/api/sessions", create_session, methods=["POST"]),
        Route(sid, get_session, methods=["GET"]),
        Route(sid, delete_session, methods=["DELETE"]),
        Route(f"{sid}/image", image),
        Route(f"{sid}/flow", flow, methods=["POST"]),
        Route(f"{sid}/flow/export", flow_export, methods=["POST"]),
        Route(f"{sid}/annotate", annotate, methods=["POST"]),
        Route(f"{sid}/annotations/export", annotations_export, methods=["POST"]),
        Route(f"{sid}/animate", animate_start, methods=["POST"]),
        Route(sid + "/animate/{job}", animate_status, methods=["GET"]),
        Route(sid + "/animate/{job}", animate_cancel, methods=["DELETE"]),
        Route(sid + "/animate/{job}/result", animate_result),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
                  Middleware(SecurityMiddleware, allowed_hosts=hosts)]
    handlers: dict[Any, Callable[..., Awaitable[Response]]] = {
        SessionNotFound: on_not_found, MotionpropError: on_input_error, HTTPException: on_http}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.preview_format = preview_format
    return app


# --------------------------------------------------------------------------- route work (worker threads)


def _describe(session: Any) -> dict[str, Any]:
    wh, ww = session.propagator.working_shape
    width, height = session.size
    fmax = session.propagator.fmax
    return {"id": session.id, "name": session.name, "width": width, "height": height,
            "working_size": {"width": ww, "height": wh},
            "range": None if fmax is None else {"x": fmax * width / ww, "y": fmax * height / wh}}


def _flow_response(sessions: Sessions, session: Any, guidance: Any, max_flow: float | None,
                   confidence: bool, preview_format: str = "jpeg", dominant_motion: bool = False) -> dict[str, Any]:
    """Flow picture (a data URL in ``preview_format``), optional confidence picture, flow values for the readout."""
    from ..visualize import flow_to_color

    flow, conf, warnings = sessions.flow(session, guidance, confidence, dominant_motion)
    scale = max_flow or max(float(np.hypot(flow[..., 0], flow[..., 1]).max()), 1e-6)
    picture = flow_to_color(resample(flow, PREVIEW_SIDE), scale)
    grid = np.ascontiguousarray(resample(flow, GRID_SIDE), dtype="<f4")
    out = {"picture": _preview_url(picture, preview_format), "max_flow": scale, "warnings": warnings,
           "grid": {"width": grid.shape[1], "height": grid.shape[0],
                    "data": base64.b64encode(grid.tobytes()).decode("ascii")}}
    out["confidence"] = None
    if conf is not None:
        grey = np.round(np.clip(resample(conf, PREVIEW_SIDE), 0, 1) * 255).astype(np.uint8)
        out["confidence"] = _preview_url(grey, preview_format)
    return out


def _preview_url(picture: np.ndarray, preview_format: str) -> str:
    """A live picture as a data URL in ``preview_format`` (:data:`PREVIEW_FORMATS`)."""
    if preview_format == "png":
        return data_url(png_bytes(picture))
    return data_url(jpeg_bytes(picture), "image/jpeg")


def _flow_file(sessions: Sessions, session: Any, guidance: Any, fmt: str, max_flow: float | None,
               dominant_motion: bool = False) -> bytes:
    import tempfile
    from pathlib import Path

    from ..apps.propagate import flow_picture
    from ..data.flow_io import write_flow
    from ..visualize import flow_to_color

    flow, _, _ = sessions.flow(session, guidance, dominant_motion=dominant_motion)
    if fmt == "png":
        return png_bytes(flow_to_color(flow, max_flow), 3)
    if fmt == "vis":
        return png_bytes(flow_picture(session.image, flow, guidance, max_flow), 3)
    with tempfile.TemporaryDirectory(prefix="motionprop-app-") as tmp:
        path = Path(tmp) / "flow.flo"
        write_flow(path, flow)
        return path.read_bytes()


def _annotation_file(sessions: Sessions, session: Any, objects: list, threshold: float, refine: str, fmt: str,
                     index: int) -> tuple[bytes, str, str]:
    """COCO JSON of every object, one label PNG, or one object's mask PNG, at the given threshold."""
    from ..apps.annotate import label_map
    from ..apps.coco import CocoWriter

    results = [sessions.object_mask(session, positive, negative, threshold, refine, zoom=zoom)
               for positive, negative, _, zoom in objects]
    base = stem(session.name)
    if fmt == "mask":
        mask = np.where(results[index].mask, 255, 0).astype(np.uint8)
        return png_bytes(mask, 3), "image/png", f"{base}_{index + 1}.png"
    if fmt == "label":
        return png_bytes(label_map(results), 3), "image/png", f"{base}_labels.png"
    coco = CocoWriter("motionprop app")
    width, height = session.size
    image_id = coco.add_image(session.name, width, height)
    for (positive, negative, category, _), result in zip(objects, results):
        coco.add_mask(image_id, result.mask, category,
                      {"clicks": {"positive": positive.tolist(), "negative": negative.tolist()}})
    return json.dumps(coco.to_dict()).encode(), "application/json", f"{base}_coco.json"


def _job(job: Any) -> dict[str, Any]:
    return {"id": job.id, "state": job.state, "done": job.done, "total": job.total, "format": job.fmt,
            "error": job.error}


_LEGEND: bytes | None = None


def _legend_png(size: int = 129) -> bytes:
    """The colour wheel: flow pointing from the centre, full saturation at the rim."""
    global _LEGEND
    if _LEGEND is None:
        from ..visualize import flow_to_color

        r = (size - 1) / 2
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        flow = np.stack([xs - r, ys - r], axis=-1)
        rgb = flow_to_color(flow, r)
        outside = np.hypot(xs - r, ys - r) > r
        rgba = np.concatenate([rgb, np.where(outside, 0, 255).astype(np.uint8)[..., None]], axis=-1)
        import cv2

        ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        _LEGEND = buffer.tobytes()
    return _LEGEND


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the package's static folder, read once: name -> (bytes, media type)."""
    folder = resources.files("motionprop.web") / "static"
    table = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            table[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    if "index.html" not in table:
        raise RuntimeError("motionprop.web is installed without its static files (index.html)")
    return table


def serve(sessions: Sessions, host: str = "127.0.0.1", port: int = 8765, info: dict | None = None,
          log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    hosts = list(LOCAL_HOSTS)
    if host not in hosts and host not in ("0.0.0.0", "::"):
        hosts.append(host)
    if host in ("0.0.0.0", "::"):
        import socket

        hosts += [socket.gethostname(), socket.getfqdn()]
    app = create_app(sessions, hosts, info)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


class BackgroundServer:
    """The app served by uvicorn in a daemon thread (tests, benchmarks, screenshots): ``url``, ``app``, ``stop()``.

    ``port=0`` picks a free port.
    """

    def __init__(self, sessions: Sessions, host: str = "127.0.0.1", port: int = 0, info: dict | None = None):
        import threading

        import uvicorn

        self.app = create_app(sessions, list(LOCAL_HOSTS), info)
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", server_header=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="motionprop-app", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        bound = self.server.servers[0].sockets[0].getsockname()
        self.url = f"http://{host}:{bound[1]}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
