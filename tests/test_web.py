"""The web app's HTTP API (motionprop.web.server, .sessions, .images) through Starlette's TestClient.

The hand-made SegmentModel moves every pixel of an arrow's colour class, so an
arrow on the red square must colour exactly that square in the flow picture,
and a click on the blue square must give back its mask.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from handmade_model import SegmentModel, box_mask, iou, scene  # noqa: E402
from motionprop.apps.coco import decode_rle  # noqa: E402
from motionprop.web.images import UploadLimits  # noqa: E402
from motionprop.web.server import create_app  # noqa: E402
from motionprop.web.sessions import Sessions  # noqa: E402

HOST = "http://127.0.0.1:8765"


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_url(url: str, media_type: str = "image/png") -> np.ndarray:
    assert url.startswith(f"data:{media_type};base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def guidance(arrows=(), still=(), size=(300, 200)) -> dict:
    return {"format": "motionprop.guidance", "version": 1, "image_size": {"width": size[0], "height": size[1]},
            "arrows": [dict(zip(("x", "y", "dx", "dy"), a)) for a in arrows],
            "still_points": [dict(zip(("x", "y"), p)) for p in still]}


def make_client(model=None, **kwargs) -> tuple[TestClient, Sessions]:
    sessions = Sessions(model or SegmentModel(working_size=64), **kwargs)
    return TestClient(create_app(sessions), base_url=HOST), sessions


@pytest.fixture
def client():
    return make_client()[0]


def upload(client: TestClient, image: np.ndarray | None = None, name: str = "scene.png") -> dict:
    image = scene()[0] if image is None else image
    response = client.post("/api/sessions", content=png(image),
                           headers={"content-type": "image/png", "x-filename": name})
    assert response.status_code == 201, response.text
    return response.json()


# --------------------------------------------------------------------------- the page and its security


def test_page_static_files_and_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert "access-control-allow-origin" not in page.headers
    for name in ("app.js", "api.js", "canvas.js", "guidance.js", "style.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.content) > 100, name
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    for bad in ("/static/..%2F..%2Fsessions.py", "/static/sessions.py", "/static/nothing.js", "/static/"):
        assert client.get(bad).status_code == 404, bad


def test_foreign_host_and_origin_are_refused():
    client, _ = make_client()
    assert client.get("/api/info", headers={"host": "evil.example:8765"}).status_code == 400  # DNS rebinding
    response = client.post("/api/sessions", content=png(scene()[0]),
                           headers={"content-type": "image/png", "origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-origin" in response.json()["error"]
    assert client.get("/api/info", headers={"origin": "http://127.0.0.1:8765"}).status_code == 200
    assert client.get("/api/info", headers={"host": "localhost:8765"}).status_code == 200


# --------------------------------------------------------------------------- upload


def test_upload_gives_a_session_and_the_upright_image(client):
    session = upload(client)
    assert session["width"] == 300 and session["height"] == 200 and session["name"] == "scene.png"
    assert session["working_size"] == {"width": 96, "height": 64}
    image = np.asarray(Image.open(io.BytesIO(client.get(f"/api/sessions/{session['id']}/image").content)))
    assert np.array_equal(image, scene()[0])


def test_jpeg_exif_orientation_is_applied(client):
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", exif=exif, quality=95)
    response = client.post("/api/sessions", content=buffer.getvalue(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 201
    assert (response.json()["width"], response.json()["height"]) == (40, 80)
    upright = np.asarray(Image.open(io.BytesIO(client.get(f"/api/sessions/{response.json()['id']}/image").content)))
    assert upright[:40].mean() > 200 and upright[40:].mean() < 50  # the white half is now on top


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (invalid) body: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return data + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))


def test_bad_uploads_are_4xx_with_a_reason_and_the_server_keeps_serving():
    client, _ = make_client(limits=UploadLimits(max_bytes=200_000, max_pixels=1_000_000))
    cases = [
        (b"", "image/png", 400, "empty"),
        (b"GIF89a" + b"\x00" * 100, "image/png", 400, "not a PNG, JPEG or WebP"),
        (b"hello", "text/plain", 415, "Content-Type"),
        (png(scene()[0]), "image/gif", 415, "Content-Type"),
        (_png_header_only(2_000, 2_000), "image/png", 400, "4000000 pixels; the limit is 1000000"),
        (_png_header_only(20_000, 20_000), "image/png", 400, "the limit is 1000000 pixels"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image/png", 400, "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 300_000, "image/png", 413, "limit"),
        (png(np.zeros((4, 100, 3), np.uint8)), "image/png", 400, "at least 8 px"),
    ]
    for data, kind, status, reason in cases:
        response = client.post("/api/sessions", content=data, headers={"content-type": kind})
        assert response.status_code == status, (reason, response.text)
        assert reason in response.json()["error"], response.json()
    assert upload(client)["width"] == 300  # still serving


# --------------------------------------------------------------------------- flow


def test_an_arrow_colours_exactly_its_object_and_the_readout_grid_holds_its_motion(client):
    session = upload(client)
    response = client.post(f"/api/sessions/{session['id']}/flow",
                           json={"guidance": guidance([(211, 71, 20, -8)]), "confidence": False})
    assert response.status_code == 200, response.text
    result = response.json()
    picture = decode_data_url(result["picture"], "image/jpeg")  # live pictures are JPEG; downloads PNG
    assert picture.shape == (200, 300, 3)
    coloured = (picture.astype(int).sum(-1) < 700)  # zero flow is white in the Middlebury wheel
    _, boxes = scene()
    assert iou(coloured, box_mask(boxes["red"])) > 0.7  # the square is 7.7 px at the 64 px working size
    assert coloured[66:78, 206:218].all() and not coloured[:40].any() and not coloured[110:170, 40:100].any()
    assert result["max_flow"] == pytest.approx(np.hypot(20, -8), rel=0.05)
    grid = result["grid"]
    values = np.frombuffer(base64.b64decode(grid["data"]), "<f4").reshape(grid["height"], grid["width"], 2)
    gx, gy = int(212 / 300 * grid["width"]), int(72 / 200 * grid["height"])
    assert values[gy, gx] == pytest.approx([20, -8], abs=1.0)
    assert np.abs(values[int(20 / 200 * grid["height"]), int(20 / 300 * grid["width"])]).max() < 0.5


def test_guidance_drawn_on_another_size_is_scaled_and_a_fixed_scale_is_kept(client):
    session = upload(client)
    half = guidance([(105.25, 35.25, 10, -4)], size=(150, 100))  # the same arrow on a half-size preview
    result = client.post(f"/api/sessions/{session['id']}/flow", json={"guidance": half, "max_flow": 50}).json()
    grid = result["grid"]
    values = np.frombuffer(base64.b64decode(grid["data"]), "<f4").reshape(grid["height"], grid["width"], 2)
    assert values[int(72 / 200 * grid["height"]), int(212 / 300 * grid["width"])] == pytest.approx([20, -8], abs=1)
    assert result["max_flow"] == 50


def test_live_pictures_as_png_when_asked(client):
    """preview_format "png" (what bench_app --compare-png alternates with JPEG) sends the picture losslessly."""
    session = upload(client)
    body = {"guidance": guidance([(211, 71, 20, -8)])}
    jpeg = decode_data_url(client.post(f"/api/sessions/{session['id']}/flow", json=body).json()["picture"],
                           "image/jpeg")
    client.app.state.preview_format = "png"
    png = decode_data_url(client.post(f"/api/sessions/{session['id']}/flow", json=body).json()["picture"])
    assert png.shape == jpeg.shape and 0 < np.abs(png.astype(int) - jpeg.astype(int)).mean() < 3
    with pytest.raises(ValueError, match="preview_format"):
        create_app(Sessions(SegmentModel(working_size=64)), preview_format="gif")


def test_confidence_with_a_discrete_network():
    from test_propagate import tiny_model

    client, _ = make_client(tiny_model())
    session = upload(client, np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    result = client.post(f"/api/sessions/{session['id']}/flow",
                         json={"guidance": guidance([(40, 30, 5, 2)], size=(80, 64)), "confidence": True}).json()
    confidence = decode_data_url(result["confidence"], "image/jpeg")
    assert confidence.shape == (64, 80) and confidence.std() > 0
    no_bins, _ = make_client()
    sid = upload(no_bins)["id"]
    response = no_bins.post(f"/api/sessions/{sid}/flow", json={"guidance": guidance([(10, 10, 1, 1)]),
                                                              "confidence": True})
    assert response.status_code == 400 and "discrete" in response.json()["error"]


def test_bad_guidance_is_a_400_naming_the_problem(client):
    sid = upload(client)["id"]
    url = f"/api/sessions/{sid}/flow"
    many = guidance([(1, 1, 1, 1)] * 257)
    cases = [
        ({"guidance": guidance()}, "at least one"),
        ({"guidance": guidance([(400, 10, 1, 1)])}, "outside the 300x200 image"),
        ({"guidance": guidance([(10, 10, 1000, 1)])}, "longer than"),
        ({"guidance": {**guidance([(1, 1, 1, 1)]), "format": "other"}}, "not a guidance file"),
        ({"guidance": {**guidance([(1, 1, 1, 1)]), "version": 9}}, "version"),
        ({"guidance": many}, "limit is 256"),
        ({"guidance": {**guidance(), "arrows": [{"x": 1, "y": 1, "dx": "a", "dy": 1}]}}, "not a number"),
        ({"guidance": guidance([(10, 10, 1, 1)]), "max_flow": -3}, "max_flow"),
        ({"guidance": None}, "one JSON object"),
    ]
    for body, reason in cases:
        response = client.post(url, json=body)
        assert response.status_code == 400 and reason in response.json()["error"], (reason, response.text)
    nan = '{"guidance": ' + json.dumps(guidance()).replace('"arrows": []', '"arrows": [{"x": NaN, "y": 1, "dx": 1, "dy": 1}]') + "}"
    response = client.post(url, content=nan, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "non-finite" in response.json()["error"]
    response = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    response = client.post(url, content=json.dumps({"guidance": guidance([(1, 1, 1, 1)])}),
                           headers={"content-type": "text/plain"})  # a cross-site form could send this
    assert response.status_code == 415
    response = client.post(url, content=b"[" * 3_000_000, headers={"content-type": "application/json"})
    assert response.status_code == 413
    response = client.post("/api/sessions/nope/flow", json={"guidance": guidance([(1, 1, 1, 1)])})
    assert response.status_code == 404 and "upload the image again" in response.json()["error"]


def test_flow_files_replay_with_the_cli_guidance(client, tmp_path):
    from motionprop.apps.guidance_file import read_guidance
    from motionprop.data.flow_io import read_flow

    sid = upload(client)["id"]
    body = {"guidance": guidance([(211, 71, 20, -8)], [(50, 20)]), "format": "flo"}
    response = client.post(f"/api/sessions/{sid}/flow/export", json=body)
    assert response.status_code == 200 and 'filename="scene_flow.flo"' in response.headers["content-disposition"]
    (tmp_path / "f.flo").write_bytes(response.content)
    flow = read_flow(tmp_path / "f.flo")
    assert flow.shape == (200, 300, 2) and flow[72, 212] == pytest.approx([20, -8], abs=0.5)
    for fmt, width in (("png", 300), ("vis", None)):
        picture = Image.open(io.BytesIO(client.post(f"/api/sessions/{sid}/flow/export",
                                                    json={**body, "format": fmt}).content))
        assert picture.height == 200 and (width is None or picture.width == width)
    # The guidance object the page saves is the CLI's guidance file.
    (tmp_path / "g.json").write_text(json.dumps(body["guidance"]))
    read, size, _ = read_guidance(tmp_path / "g.json")
    assert size == (300, 200) and read.arrows.tolist() == [[211, 71, 20, -8]]


def test_the_dominant_motion_is_asked_per_request_and_offered_only_for_networks_trained_with_it(tmp_path):
    """A geodesic network trained with the prior (untrained here, its output is its fill): the flow, the flow
    file and the info say so; off by default, as in Propagator; the hand-made network does not offer it."""
    from motionprop.data.flow_io import read_flow
    from test_geodesic import _geodesic_model
    from test_guidance_encoding import _zero_last_layer

    model = _geodesic_model(geodesic_prior_distance=10.0)
    _zero_last_layer(model)
    client, _ = make_client(model, working_size=64)
    assert client.get("/api/info").json()["dominant_motion"] is True
    assert make_client()[0].get("/api/info").json()["dominant_motion"] is False
    sid = upload(client)["id"]
    body = {"guidance": guidance([(211, 71, 20, -8), (40, 150, 0, 0)], [(280, 20)])}

    def grid(**options) -> np.ndarray:
        response = client.post(f"/api/sessions/{sid}/flow", json={**body, **options})
        assert response.status_code == 200, response.text
        g = response.json()["grid"]
        return np.frombuffer(base64.b64decode(g["data"]), "<f4").reshape(g["height"], g["width"], 2)

    default, off, on = grid(), grid(dominant_motion=False), grid(dominant_motion=True)
    assert np.array_equal(default, off)
    assert np.abs(on - off).max() > 0.5
    files = []
    for flag in (False, True):
        response = client.post(f"/api/sessions/{sid}/flow/export",
                               json={**body, "format": "flo", "dominant_motion": flag})
        (tmp_path / f"{flag}.flo").write_bytes(response.content)
        files.append(read_flow(tmp_path / f"{flag}.flo"))
    assert np.abs(files[1] - files[0]).max() > 0.5


# --------------------------------------------------------------------------- annotate


def test_annotate_and_export_masks_label_png_and_coco(client):
    sid = upload(client)["id"]
    _, boxes = scene()
    response = client.post(f"/api/sessions/{sid}/annotate", json={"positive": [[70, 140]], "negative": [[10, 10]]})
    assert response.status_code == 200, response.text
    score = decode_data_url(response.json()["score"])
    assert iou(score > 127, box_mask(boxes["blue"])) > 0.9
    objects = [{"positive": [[70, 140]], "negative": [[10, 10]], "category": "blue"},
               {"positive": [[211, 71]], "category": "red"}]
    coco = client.post(f"/api/sessions/{sid}/annotations/export", json={"objects": objects, "format": "coco"})
    assert coco.status_code == 200 and 'scene_coco.json' in coco.headers["content-disposition"]
    data = coco.json()
    assert [c["name"] for c in data["categories"]] == ["blue", "red"]
    assert data["images"][0] == {"id": 1, "file_name": "scene.png", "width": 300, "height": 200}
    masks = [decode_rle(a["segmentation"]) for a in data["annotations"]]
    assert iou(masks[0], box_mask(boxes["blue"])) > 0.9 and iou(masks[1], box_mask(boxes["red"])) > 0.8
    assert data["annotations"][0]["clicks"] == {"positive": [[70.0, 140.0]], "negative": [[10.0, 10.0]]}
    label = np.asarray(Image.open(io.BytesIO(client.post(
        f"/api/sessions/{sid}/annotations/export", json={"objects": objects, "format": "label"}).content)))
    assert label[140, 70] == 1 and label[71, 211] == 2 and label[10, 10] == 0
    mask = np.asarray(Image.open(io.BytesIO(client.post(
        f"/api/sessions/{sid}/annotations/export", json={"objects": objects, "format": "mask", "index": 1}).content)))
    assert mask[71, 211] == 255 and mask[140, 70] == 0


def test_annotate_refined_with_grabcut_mask_and_exports(client, monkeypatch):
    from motionprop.apps import refine

    sid = upload(client)["id"]
    image, boxes = scene()
    body = {"positive": [[70, 140]], "negative": [[10, 10]]}
    plain = client.post(f"/api/sessions/{sid}/annotate", json=body).json()
    assert "mask" not in plain  # the page thresholds the score itself
    score = decode_data_url(plain["score"]).astype(np.float32) / 255
    # the server refines the mask at the threshold asked, with the clicks, as refine_mask does
    response = client.post(f"/api/sessions/{sid}/annotate", json={**body, "refine": "grabcut", "threshold": 0.3})
    assert response.status_code == 200, response.text
    mask = decode_data_url(response.json()["mask"]) > 127
    expected = refine.refine_mask(image, score, score > 0.3, np.array([[70.0, 140.0]]), np.array([[10.0, 10.0]]))
    assert np.array_equal(mask, expected) and iou(mask, box_mask(boxes["blue"])) > 0.9

    # exports use the refined mask; a refinement is computed once per clicks and threshold
    calls = []

    def corner_only(image, score, mask, positive, negative):
        calls.append(mask.sum())
        out = np.zeros_like(mask)
        out[:5, :5] = True
        return out

    monkeypatch.setattr(refine, "refine_mask", corner_only)
    objects = [{"positive": [[70, 140]], "negative": [[10, 10]]}]
    for _ in range(2):
        exported = np.asarray(Image.open(io.BytesIO(client.post(
            f"/api/sessions/{sid}/annotations/export",
            json={"objects": objects, "format": "mask", "threshold": 0.6, "refine": "grabcut"}).content)))
        assert exported[:5, :5].all() and exported.sum() == 25 * 255
    assert len(calls) == 1
    unrefined = np.asarray(Image.open(io.BytesIO(client.post(
        f"/api/sessions/{sid}/annotations/export", json={"objects": objects, "format": "mask"}).content)))
    assert iou(unrefined > 0, box_mask(boxes["blue"])) > 0.9 and len(calls) == 1
    for route, extra in (("annotate", body), ("annotations/export", {"objects": objects, "format": "mask"})):
        response = client.post(f"/api/sessions/{sid}/{route}", json={**extra, "refine": "snake"})
        assert response.status_code == 400 and "refine must be one of none, grabcut" in response.json()["error"]


def test_bad_annotation_inputs(client):
    sid = upload(client)["id"]
    for body, reason in [({"positive": []}, "at least one positive"), ({"positive": [[500, 5]]}, "outside"),
                         ({"positive": [[1, "a"]]}, "[x, y]"), ({"positive": [[1, 1]], "zoom": 0}, "zoom")]:
        response = client.post(f"/api/sessions/{sid}/annotate", json=body)
        assert response.status_code == 400 and reason in response.json()["error"], (reason, response.text)
    response = client.post(f"/api/sessions/{sid}/annotations/export", json={"objects": [], "format": "coco"})
    assert response.status_code == 400
    response = client.post(f"/api/sessions/{sid}/annotations/export",
                           json={"objects": [{"positive": [[1, 1]]}], "format": "mask", "index": 3})
    assert response.status_code == 400 and "index" in response.json()["error"]


# --------------------------------------------------------------------------- animate


def _wait(client, sid, job_id, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/sessions/{sid}/animate/{job_id}").json()
        if job["state"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_animation_job_renders_a_gif_and_reports_progress(client):
    sid = upload(client)["id"]
    response = client.post(f"/api/sessions/{sid}/animate", json={
        "guidance": guidance([(211, 71, 20, -8)]), "frames": 6, "mode": "forward", "fps": 10, "format": "gif"})
    assert response.status_code == 202, response.text
    job = _wait(client, sid, response.json()["id"])
    assert job["state"] == "done" and job["done"] == job["total"] == 6
    result = client.get(f"/api/sessions/{sid}/animate/{job['id']}/result")
    assert result.content.startswith(b"GIF8") and "scene_clip.gif" in result.headers["content-disposition"]
    gif = Image.open(io.BytesIO(result.content))
    assert gif.n_frames == 6 and gif.size == (300, 200)
    last = np.asarray(gif.convert("RGB").copy()) if gif.seek(5) is None else None
    assert last[72 - 8, 212 + 20, 0] > 200  # the red square has moved by the arrow


def test_animation_cancel_and_bad_options(client):
    sid = upload(client, np.random.default_rng(1).integers(0, 256, (360, 480, 3), dtype=np.uint8))["id"]
    g = guidance([(100, 100, 30, 0)], size=(480, 360))
    start = client.post(f"/api/sessions/{sid}/animate", json={"guidance": g, "frames": 120, "max_side": 480})
    job_id = start.json()["id"]
    assert client.post(f"/api/sessions/{sid}/animate", json={"guidance": g}).status_code == 400  # one at a time
    client.delete(f"/api/sessions/{sid}/animate/{job_id}")
    job = _wait(client, sid, job_id)
    assert job["state"] == "cancelled" and job["done"] < job["total"]
    assert client.get(f"/api/sessions/{sid}/animate/{job_id}/result").status_code == 409
    for body, reason in [({"guidance": g, "frames": 1}, "frames"), ({"guidance": g, "mode": "up"}, "mode"),
                         ({"guidance": g, "format": "avi"}, "format"), ({"guidance": g, "fps": 0}, "fps")]:
        response = client.post(f"/api/sessions/{sid}/animate", json=body)
        assert response.status_code == 400 and reason in response.json()["error"], (reason, response.text)


# --------------------------------------------------------------------------- sessions and the lock


def test_sessions_are_lru_capped_and_time_out():
    now = [0.0]
    client, sessions = make_client(max_sessions=2, timeout=100.0, clock=lambda: now[0])
    a, b = upload(client)["id"], upload(client)["id"]
    assert client.get(f"/api/sessions/{a}").status_code == 200  # a is now the most recent
    c = upload(client)["id"]
    assert client.get(f"/api/sessions/{b}").status_code == 404  # b was the least recently used
    assert len(sessions) == 2
    now[0] = 50.0
    assert client.get(f"/api/sessions/{c}").status_code == 200
    now[0] = 140.0  # a unused for 140 s, c for 90 s
    assert client.get(f"/api/sessions/{a}").status_code == 404
    assert client.get(f"/api/sessions/{c}").status_code == 200
    assert client.delete(f"/api/sessions/{c}").status_code == 204 and len(sessions) == 0


class CountingModel(SegmentModel):
    """SegmentModel that records how many decodes run at once (and takes a little time)."""

    def __init__(self):
        super().__init__(working_size=64)
        self.active = 0
        self.peak = 0
        self.guard = threading.Lock()

    def decode(self, features, sparse):
        with self.guard:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02)
        try:
            return super().decode(features, sparse)
        finally:
            with self.guard:
                self.active -= 1


def test_one_inference_at_a_time_across_sessions():
    model = CountingModel()
    client, _ = make_client(model)
    sids = [upload(client)["id"] for _ in range(3)]
    errors = []

    def hammer(sid):
        for k in range(4):
            r = client.post(f"/api/sessions/{sid}/flow", json={"guidance": guidance([(211, 71, k + 1, 0)])})
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=hammer, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and model.peak == 1


def test_import_motionprop_never_imports_a_web_framework():
    code = ("import sys, motionprop, motionprop.apps, motionprop.web, motionprop.web.sessions, motionprop.cli; "
            "motionprop.cli.build_parser(); "
            "assert not any(m.split('.')[0] in ('starlette', 'uvicorn') for m in sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_app_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from motionprop.cli import main

    monkeypatch.setenv("MOTIONPROP_CACHE", str(tmp_path / "cache"))
    assert main(["app", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["app", "--checkpoint", "annotation"]) == 2
    assert "motionprop download annotation" in capsys.readouterr().err
    assert main(["app", "--checkpoint", "x", "--port", "0"]) == 2


def test_app_command_loads_the_checkpoint_and_warns_for_a_public_host(tmp_path, capsys, monkeypatch):
    import motionprop.web.server as server
    from motionprop.checkpoint import save_model
    from motionprop.cli import main
    from test_propagate import tiny_model

    save_model(tmp_path / "ckpt", tiny_model())
    served = {}
    monkeypatch.setattr(server, "serve", lambda sessions, host, port, info: served.update(
        sessions=sessions, host=host, port=port, info=info))
    assert main(["app", "--checkpoint", str(tmp_path / "ckpt"), "--max-sessions", "3", "--port", "9000"]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 9000 and served["sessions"].max_sessions == 3
    captured = capsys.readouterr()
    assert "http://127.0.0.1:9000/" in captured.out and "warning" not in captured.err
    assert main(["app", "--checkpoint", str(tmp_path / "ckpt"), "--host", "0.0.0.0"]) == 0
    assert "warning: --host 0.0.0.0 serves the app to other machines" in capsys.readouterr().err
