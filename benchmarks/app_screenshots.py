"""Screenshots of the web app's three modes for the docs (docs/app_*.png), taken in headless Chromium.

By default the network is the tests' hand-made stand-in (``tests/handmade_model.py``: every pixel
of an arrow's colour class moves with it), so the pictures show the interface with a flow that
follows the arrows; ``--checkpoint annotation`` (after ``motionprop download annotation``) takes
them with the paper's network.

    python benchmarks/app_screenshots.py --out docs
    python benchmarks/app_screenshots.py --checkpoint annotation --out docs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
EXAMPLE = HERE.parent.parent / "shared" / "data" / "cmp_examples" / "1.jpg"


def synthetic_photo(path: Path) -> None:
    """A picture of flat-coloured shapes (used when the demo's example photo is not beside the checkout)."""
    import cv2
    import numpy as np

    image = np.full((480, 640, 3), (40, 40, 40), np.uint8)
    cv2.rectangle(image, (60, 260), (260, 440), (0, 0, 255), -1)
    cv2.circle(image, (450, 180), 90, (255, 0, 0), -1)
    cv2.rectangle(image, (380, 330), (600, 420), (0, 255, 0), -1)
    cv2.imwrite(str(path), image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a checkpoint (or 'annotation'); default: the hand-made stand-in")
    parser.add_argument("--image", help="the photo (default: a synthetic picture of coloured shapes)")
    parser.add_argument("--out", default="docs", help="folder for app_propagate.png, app_animate.png, app_annotate.png")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from browser import close, launch, why_no_browser
    from motionprop.web.server import BackgroundServer
    from motionprop.web.sessions import Sessions

    if why_no_browser():
        sys.exit(f"app_screenshots: {why_no_browser()}")
    if args.checkpoint:
        from motionprop.checkpoint import load_model
        from motionprop.hub import resolve_checkpoint

        model = load_model(resolve_checkpoint(args.checkpoint))
    else:
        from handmade_model import SegmentModel

        model = SegmentModel(working_size=192)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with BackgroundServer(Sessions(model)) as server, tempfile.TemporaryDirectory() as tmp, \
            sync_playwright() as playwright:
        image = Path(args.image) if args.image else Path(tmp) / "shapes.png"
        if not args.image:
            synthetic_photo(image)
        context = launch(playwright, 1280, 760)
        page = context.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#file", str(image))
        page.wait_for_function("() => window.motionprop?.state.picture != null", timeout=120_000)
        session = page.evaluate("window.motionprop.state.session")
        box = page.locator("#draw-layer").bounding_box()

        def at(x: float, y: float) -> tuple[float, float]:
            return (box["x"] + (x + 0.5) / session["width"] * box["width"],
                    box["y"] + (y + 0.5) / session["height"] * box["height"])

        def drag(a: tuple[float, float], b: tuple[float, float]) -> None:
            page.mouse.move(*at(*a))
            page.mouse.down()
            page.mouse.move(*at(*b), steps=5)
            page.mouse.up()

        def settle() -> None:
            page.wait_for_function("() => window.motionprop.flowQuery.idle && "
                                   "[...window.motionprop.state.annotators.values()].every((a) => a.idle)",
                                   timeout=120_000)
            time.sleep(0.3)

        w, h = session["width"], session["height"]
        drag((0.25 * w, 0.7 * h), (0.33 * w, 0.62 * h))
        drag((0.7 * w, 0.37 * h), (0.64 * w, 0.47 * h))
        page.mouse.click(*at(0.78 * w, 0.78 * h))
        settle()
        page.mouse.move(*at(0.27 * w, 0.72 * h))
        settle()
        page.screenshot(path=str(out / "app_propagate.png"))

        page.click("#modes button[data-mode=animate]")
        settle()
        page.fill("#frames", "8")
        page.click("#render")
        page.wait_for_function("() => document.querySelector('#clip img') !== null", timeout=300_000)
        time.sleep(0.3)
        page.screenshot(path=str(out / "app_animate.png"))

        page.click("#modes button[data-mode=annotate]")
        page.mouse.click(*at(0.25 * w, 0.7 * h))
        page.keyboard.press("o")
        page.mouse.click(*at(0.7 * w, 0.37 * h))
        page.mouse.click(*at(0.1 * w, 0.1 * h), button="right")
        settle()
        page.screenshot(path=str(out / "app_annotate.png"))
        close(context)
    print(f"wrote {out}/app_propagate.png, app_animate.png, app_annotate.png")


if __name__ == "__main__":
    main()
