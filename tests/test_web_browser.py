"""The web app in a real headless Chromium: upload, drag an arrow, still point, undo, annotate, exports.

The page talks to a real uvicorn server on 127.0.0.1 backed by the hand-made
SegmentModel (an arrow moves exactly its colour class), so where the flow
picture is coloured is known. Every request the page makes is recorded and
must go to that server; the console must show no error. Skipped, with the
reason, when no Chromium or no playwright package is installed (.ci/run
installs both).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from browser import close, launch, why_no_browser
from handmade_model import SegmentModel, box_mask, iou, scene

REASON = why_no_browser()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=f"browser tests: {REASON}"), pytest.mark.slow]


@pytest.fixture(scope="module")
def app_server():
    pytest.importorskip("uvicorn")
    from motionprop.web.server import BackgroundServer
    from motionprop.web.sessions import Sessions

    with BackgroundServer(Sessions(SegmentModel(working_size=64))) as server:
        yield server


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(scene()[0]).save(path)
    return path


class Page:
    """A page of the app with recorded requests and console errors, and helpers in image pixels."""

    def __init__(self, context, url: str):
        self.page = context.new_page()
        self.url = url
        self.requests: list[str] = []
        self.posts: list[tuple[str, str | None]] = []  # (url, body) of POSTs
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("request", lambda r: self.posts.append((r.url, r.post_data)) if r.method == "POST" else None)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url + "/")

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def wait(self, condition: str, timeout: float = 20_000) -> None:
        # As a function, not a string: the page's CSP forbids eval, and a string predicate is eval'd.
        self.page.wait_for_function(f"() => ({condition})", timeout=timeout)

    def open(self, path: Path) -> None:
        self.page.set_input_files("#file", str(path))
        self.wait("window.motionprop?.state.session != null && window.motionprop.state.picture !== null")

    def at(self, x: float, y: float) -> tuple[float, float]:
        """Viewport position of image pixel (x, y)."""
        box = self.page.locator("#draw-layer").bounding_box()
        return (box["x"] + (x + 0.5) / 300 * box["width"], box["y"] + (y + 0.5) / 200 * box["height"])

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*self.at(*start))
        mouse.down()
        mouse.move(*self.at(*end), steps=6)
        mouse.up()

    def click(self, x: float, y: float, button: str = "left") -> None:
        self.page.mouse.click(*self.at(x, y), button=button)

    def settle(self) -> None:
        """Wait until no flow or annotation request is in flight or waiting."""
        self.wait("(() => { const m = window.motionprop; return m.flowQuery.idle &&"
                  " [...m.state.annotators.values()].every((a) => a.idle); })()")

    def layer_rgba(self, layer: str, x: float, y: float) -> list[int]:
        """RGBA of a canvas layer at image pixel (x, y)."""
        return self.js(f"""(() => {{
            const c = document.getElementById('{layer}');
            const px = Math.floor(({x} + 0.5) / 300 * c.width), py = Math.floor(({y} + 0.5) / 200 * c.height);
            return Array.from(c.getContext('2d').getImageData(px, py, 1, 1).data); }})()""")

    def download(self, button: str, folder: Path) -> Path:
        with self.page.expect_download() as info:
            self.page.click(button)
        target = folder / info.value.suggested_filename
        info.value.save_as(target)
        return target

    def check_clean(self) -> None:
        foreign = [u for u in self.requests if not u.startswith((self.url + "/", "data:", "blob:"))]
        assert not foreign, f"requests left the local server: {foreign}"
        assert not self.errors, f"console errors: {self.errors}"


@pytest.fixture
def browser_page(app_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = launch(playwright)
        try:
            page = Page(context, app_server.url)
            yield page
        finally:
            close(context)


def coloured(rgba: list[int]) -> bool:
    """Flow colour (not the white of zero motion) on the flow layer (drawn opaque)."""
    return rgba[3] > 0 and sum(rgba[:3]) < 700


def test_drag_an_arrow_still_point_undo_and_guidance_file(browser_page, scene_file, tmp_path):
    page = browser_page
    page.open(scene_file)
    page.drag((211, 71), (231, 63))
    page.wait("window.motionprop.stats.flowVersion > 0")
    page.settle()
    doc = page.js("window.motionprop.history.doc")
    assert len(doc["arrows"]) == 1 and doc["arrows"][0]["x"] == pytest.approx(211, abs=1)
    assert doc["arrows"][0]["dx"] == pytest.approx(20, abs=1.5) and doc["arrows"][0]["dy"] == pytest.approx(-8, abs=1.5)
    # The flow picture is coloured on the red square (the arrow's object) and nowhere else.
    assert coloured(page.layer_rgba("flow-layer", 212, 72))
    assert not coloured(page.layer_rgba("flow-layer", 70, 140)) and not coloured(page.layer_rgba("flow-layer", 150, 20))
    assert "flow u" in page.page.inner_text("#readout")
    # This network was not trained with the dominant-motion prior: its switch is not offered.
    page.wait("document.getElementById('dominant-motion').parentElement.hidden === true")
    assert not page.page.is_visible("#dominant-motion")

    # A click on the blue square: a still point; the blue square stays still (white).
    version = page.js("window.motionprop.stats.flowVersion")
    page.click(70, 140)
    page.wait(f"window.motionprop.stats.flowVersion > {version}")
    page.settle()
    assert len(page.js("window.motionprop.history.doc.still_points")) == 1
    assert coloured(page.layer_rgba("flow-layer", 212, 72)) and not coloured(page.layer_rgba("flow-layer", 70, 140))

    # The guidance file the page saves is the one the CLI reads.
    from motionprop.apps.guidance_file import read_guidance

    saved = page.download("#save-guidance", tmp_path)
    guidance, size, name = read_guidance(saved)
    assert size == (300, 200) and name == "scene.png"
    assert guidance.arrows[0, :2].tolist() == pytest.approx([211, 71], abs=1)
    assert guidance.still_points[0].tolist() == pytest.approx([70, 140], abs=1)

    # Undo removes the still point, then the arrow (and the flow picture); redo brings the arrow back.
    page.page.keyboard.press("Control+z")
    assert len(page.js("window.motionprop.history.doc.still_points")) == 0
    page.page.keyboard.press("Control+z")
    page.settle()
    assert page.js("window.motionprop.history.doc.arrows.length") == 0
    assert not coloured(page.layer_rgba("flow-layer", 212, 72))
    page.page.keyboard.press("Control+Shift+z")
    assert page.js("window.motionprop.history.doc.arrows.length") == 1

    # Drag the arrow's tip to edit it; Delete removes the selected arrow.
    tip = page.js("(() => { const a = window.motionprop.history.doc.arrows[0]; return [a.x + a.dx, a.y + a.dy]; })()")
    page.drag(tuple(tip), (211, 95))
    page.settle()
    arrow = page.js("window.motionprop.history.doc.arrows[0]")
    assert page.js("window.motionprop.history.doc.arrows.length") == 1
    assert arrow["dx"] == pytest.approx(0, abs=1.5) and arrow["dy"] == pytest.approx(24, abs=1.5)
    page.page.keyboard.press("Delete")
    assert page.js("window.motionprop.history.doc.arrows.length") == 0

    # Load the saved guidance back; it survives a reload (localStorage).
    page.page.set_input_files("#load-guidance", str(saved))
    page.wait("window.motionprop.history.doc.arrows.length === 1")
    page.page.reload()
    page.wait("window.motionprop?.state.session != null && window.motionprop.history.doc.arrows.length === 1")
    page.wait("window.motionprop.stats.flowVersion > 0")
    page.settle()
    assert coloured(page.layer_rgba("flow-layer", 212, 72))

    page.page.keyboard.press("?")
    assert page.page.is_visible("#help")
    page.page.keyboard.press("Escape")
    assert not page.page.is_visible("#help")
    page.check_clean()


def test_annotate_one_object_and_download_coco(browser_page, scene_file, tmp_path):
    from motionprop.apps.coco import decode_rle

    page = browser_page
    page.open(scene_file)
    page.page.click("#modes button[data-mode=annotate]")
    page.click(70, 140)
    page.wait("window.motionprop.stats.annotateVersion > 0")
    page.settle()
    assert page.layer_rgba("mask-layer", 70, 140)[3] > 0 and page.layer_rgba("mask-layer", 212, 72)[3] == 0
    page.click(150, 20, button="right")  # a negative click
    doc = page.js("window.motionprop.history.doc")
    assert len(doc["objects"]) == 1 and len(doc["objects"][0]["negative"]) == 1
    page.settle()

    # "Snap to edges": the server refines the mask with GrabCut; the page shows that mask, and a new
    # threshold asks again
    shown = page.js("window.motionprop.stats.annotateVersion")
    page.page.check("#refine")
    page.wait(f"window.motionprop.stats.annotateVersion > {shown}")
    page.settle()
    assert page.js("window.motionprop.state.scores.get(1).refined") is True
    assert page.layer_rgba("mask-layer", 70, 140)[3] > 0 and page.layer_rgba("mask-layer", 212, 72)[3] == 0
    page.page.locator("#threshold").fill("0.7")
    page.settle()
    refined = [json.loads(body) for url, body in page.posts if url.endswith("/annotate")]
    assert refined[-1]["refine"] == "grabcut" and refined[-1]["threshold"] == pytest.approx(0.7)

    coco_file = page.download("#export-coco", tmp_path)
    assert json.loads(page.posts[-1][1])["refine"] == "grabcut"
    data = json.loads(coco_file.read_text())
    assert data["images"][0]["file_name"] == "scene.png" and len(data["annotations"]) == 1
    mask = decode_rle(data["annotations"][0]["segmentation"])
    _, boxes = scene()
    assert iou(mask, box_mask(boxes["blue"])) > 0.9

    # A second object gets its own id and colour; the label PNG holds both.
    page.page.keyboard.press("o")
    page.click(212, 72)
    page.wait("window.motionprop.stats.annotateVersion > 1")
    page.settle()
    from PIL import Image

    label = np.asarray(Image.open(page.download("#export-label", tmp_path)))
    assert label[140, 70] == 1 and label[72, 212] == 2 and label[20, 150] == 0

    # The settings survive a reload: the refined masks come back at the same threshold.
    page.page.reload()
    page.wait("window.motionprop?.state.session != null && window.motionprop.stats.annotateVersion > 0")
    page.settle()
    assert page.js("document.getElementById('refine').checked") is True
    assert page.js("document.getElementById('threshold').value") == "0.7"
    assert page.js("document.getElementById('threshold-value').textContent") == "0.70"
    again = [json.loads(body) for url, body in page.posts if url.endswith("/annotate")]
    assert again[-1]["refine"] == "grabcut" and again[-1]["threshold"] == pytest.approx(0.7)
    page.check_clean()


def test_animate_renders_a_gif(browser_page, scene_file):
    page = browser_page
    page.open(scene_file)
    page.page.click("#modes button[data-mode=animate]")
    page.drag((211, 71), (231, 63))
    page.settle()
    page.page.fill("#frames", "4")
    page.page.click("#render")
    page.wait("document.querySelector('#clip img') !== null", timeout=60_000)
    assert page.js("document.getElementById('progress').value") == 1
    assert page.js("document.querySelector('#clip a').download") == "scene_clip.gif"
    page.check_clean()
