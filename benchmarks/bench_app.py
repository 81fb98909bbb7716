"""The web app in a real browser: drag-to-update latency, and memory under many sessions.

A uvicorn server in this process (``motionprop.web.server.BackgroundServer``)
serves the skip-layer ResNet-50 (``resnet50_vip+mpii_liteflow``, fresh weights
with the original's init: speed does not depend on them) at its default
working size (short side 416 px); headless Chromium (the system's, driven by
playwright) opens the page, uploads an image and drags arrows with real
pointer events. The page records, for every flow picture it draws, the time
from the oldest pointer move it answers to the picture on the canvas
(``window.motionprop.stats.latencies``):

* ``single move``: the pointer moves once, then waits for the picture
  (request + decoder + picture encoding + transfer + decoding + drawing);
* ``continuous drag``: the pointer moves every 16 ms (60 Hz) for a few
  seconds; with at most one request in flight, a move waits for the request
  before it, so this is up to about twice the single figure.

``--compare-png`` alternates the single moves (and the HTTP queries) between
the live pictures' JPEG (the default) and PNG, and reports each.

Memory: the resident set of this process (model + server + sessions) after
each of ``--sessions`` uploads of 1920x1080 images with at most 8 sessions kept, and the time a
second page's request waits while the first page drags.

    python benchmarks/bench_app.py --json benchmarks/results/bench_app.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the headless Chromium helper shared with the browser tests
EXAMPLE = HERE.parent.parent / "shared" / "data" / "cmp_examples" / "1.jpg"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def example_image(width: int, height: int, seed: int = 0) -> bytes:
    """The original demo's example 1 (or noise) resized to width x height, as JPEG bytes."""
    from PIL import Image

    if EXAMPLE.is_file() and seed == 0:
        image = Image.open(EXAMPLE).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    else:
        rng = np.random.default_rng(seed)
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def browser_latency(url: str, image_path: Path, moves: int, drag_seconds: float,
                    before_move: Callable[[int], None] | None = None) -> dict:
    """Pointer-move-to-picture seconds in Chromium; the page is polled every 100 ms, not every frame,
    so the polling itself takes little CPU from the server. ``before_move(k)`` runs before single move ``k``."""
    from playwright.sync_api import sync_playwright

    from browser import close, launch

    with sync_playwright() as playwright:
        context = launch(playwright)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        page.set_input_files("#file", str(image_path))
        page.wait_for_function("() => window.motionprop?.state.picture != null", timeout=300_000, polling=100)
        box = page.locator("#draw-layer").bounding_box()
        cx, cy = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
        idle = "() => window.motionprop.flowQuery.idle"

        # Warm up: one arrow, drawn.
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 30, cy, steps=2)
        page.wait_for_function(idle, timeout=300_000, polling=100)

        single = []
        for k in range(moves):
            if before_move is not None:
                before_move(k)
            before = page.evaluate("window.motionprop.stats.latencies.length")
            page.mouse.move(cx + 30 + 2 * (k % 10), cy - 10 + k % 7)
            page.wait_for_function(f"() => window.motionprop.stats.latencies.length > {before} && "
                                   "window.motionprop.flowQuery.idle", timeout=300_000, polling=100)
            single.append(page.evaluate("window.motionprop.stats.latencies.at(-1)") / 1000)

        start = page.evaluate("window.motionprop.stats.latencies.length")
        t_end = time.monotonic() + drag_seconds
        k = 0
        while time.monotonic() < t_end:
            page.mouse.move(cx + 30 + 20 * np.sin(k / 15), cy + 20 * np.cos(k / 15))
            k += 1
            time.sleep(0.016)
        page.wait_for_function(idle, timeout=300_000, polling=100)
        page.mouse.up()
        drag = [v / 1000 for v in page.evaluate(f"window.motionprop.stats.latencies.slice({start})")]
        server = page.evaluate("window.motionprop.state.session")
        close(context)
    return {"single": single, "drag": drag, "drag_moves": k, "console_errors": errors,
            "working_size": server["working_size"]}


def query_once(client, sid: str, dx: float) -> float:
    guidance = {"format": "motionprop.guidance", "version": 1, "image_size": {"width": 640, "height": 480},
                "arrows": [{"x": 300, "y": 240, "dx": dx, "dy": 0}], "still_points": []}
    t = time.perf_counter()
    response = client.post(f"/api/sessions/{sid}/flow", json={"guidance": guidance})
    response.raise_for_status()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="resnet50_vip+mpii_liteflow")
    parser.add_argument("--width", type=int, default=640, help="uploaded image width (default 640)")
    parser.add_argument("--height", type=int, default=480, help="uploaded image height (default 480)")
    parser.add_argument("--moves", type=int, default=15, help="single pointer moves measured (default 15)")
    parser.add_argument("--drag-seconds", type=float, default=6.0)
    parser.add_argument("--sessions", type=int, default=12, help="uploads for the memory figure (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a busy "
                        "machine, see docs/apps.md)")
    parser.add_argument("--working-size", type=int, default=None, metavar="PX",
                        help="short side the network sees (default: the preset's, as motionprop app)")
    parser.add_argument("--compare-png", action="store_true",
                        help="alternate the single moves between the live pictures' JPEG and PNG "
                             "(the app's preview_format) and report both")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="the network's arithmetic, as motionprop app --precision (default: auto, the app's)")
    parser.add_argument("--json", metavar="FILE", help="write the results here")
    args = parser.parse_args()

    import tempfile

    import httpx
    import torch

    import motionprop
    from browser import why_no_browser
    from motionprop import precision
    from motionprop.web.server import PREVIEW_FORMATS, BackgroundServer
    from motionprop.web.sessions import Sessions

    reason = why_no_browser()
    if reason:
        sys.exit(f"bench_app: {reason}")
    torch.set_num_threads(args.threads)
    model = motionprop.create_model(args.preset).eval()
    base_rss = rss_mb()
    sessions = Sessions(model, working_size=args.working_size, max_sessions=8, precision=args.precision)
    results: dict = {"preset": args.preset, "threads": torch.get_num_threads(),
                     "precision": precision.describe(args.precision, "cpu"),
                     "image": f"{args.width}x{args.height}", "load_average": os.getloadavg()[0]}
    with BackgroundServer(sessions) as server, tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "example.jpg"
        image_path.write_bytes(example_image(args.width, args.height))
        formats = PREVIEW_FORMATS if args.compare_png else (server.app.state.preview_format,)

        def before_move(k: int) -> None:
            server.app.state.preview_format = formats[k % len(formats)]

        latency = browser_latency(server.url, image_path, args.moves, args.drag_seconds, before_move)
        server.app.state.preview_format = formats[0]
        if args.compare_png:
            for i, name in enumerate(formats):
                results[f"single_move_median_s_{name}"] = statistics.median(latency["single"][i::len(formats)])
        results["working_size"] = latency.pop("working_size")
        results.update({
            "single_move_median_s": statistics.median(latency["single"]),
            "single_move_p90_s": float(np.percentile(latency["single"], 90)),
            "drag_median_s": statistics.median(latency["drag"]) if latency["drag"] else None,
            "drag_pictures": len(latency["drag"]), "drag_moves": latency["drag_moves"],
            "console_errors": latency["console_errors"], "single_moves_s": latency["single"]})

        # The same query through HTTP without a browser, and through the Propagator alone, interleaved.
        client = httpx.Client(base_url=server.url, timeout=600)
        small = client.post("/api/sessions", content=example_image(640, 480, seed=0),
                            headers={"content-type": "image/jpeg"}).json()["id"]
        propagator = sessions.get(small).propagator
        query_once(client, small, 10)
        http, direct = [], []
        by_format: dict[str, list[float]] = {name: [] for name in formats}
        for k in range(5 * len(formats)):
            server.app.state.preview_format = formats[k % len(formats)]
            by_format[formats[k % len(formats)]].append(query_once(client, small, 10 + k))
            t = time.perf_counter()
            with sessions.lock:
                propagator.propagate([(300, 240, 10 + k, 0)])
            direct.append(time.perf_counter() - t)
        server.app.state.preview_format = formats[0]
        http = by_format[formats[0]]
        if args.compare_png:
            for name, values in by_format.items():
                results[f"http_query_median_s_{name}"] = statistics.median(values)
        results["http_query_median_s"] = statistics.median(http)
        results["propagator_query_median_s"] = statistics.median(direct)

        # A second page's query while the first page's queries keep the lock busy.
        stop = threading.Event()

        def hammer() -> None:
            other = httpx.Client(base_url=server.url, timeout=600)
            while not stop.is_set():
                query_once(other, small, 12)

        worker = threading.Thread(target=hammer)
        worker.start()
        time.sleep(1.0)
        second = client.post("/api/sessions", content=example_image(640, 480, seed=1),
                             headers={"content-type": "image/jpeg"}).json()["id"]
        waits = [query_once(client, second, 8) for _ in range(5)]
        t = time.perf_counter()
        client.get("/")
        client.get("/static/app.js")
        page_load = time.perf_counter() - t
        stop.set()
        worker.join()
        results["query_while_other_page_drags_median_s"] = statistics.median(waits)
        results["page_load_while_other_page_drags_s"] = page_load

        memory = []
        for k in range(args.sessions):
            client.post("/api/sessions", content=example_image(1920, 1080, seed=k + 2),
                        headers={"content-type": "image/jpeg"}).raise_for_status()
            memory.append({"uploads": k + 1, "sessions": len(sessions), "rss_mb": round(rss_mb(), 1)})
        results["rss_model_mb"] = round(base_rss, 1)
        results["memory"] = memory

    print(json.dumps({k: v for k, v in results.items() if k != "single_moves_s"}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
