"""Headless Chromium for the browser tests, the latency benchmark and the docs' screenshots.

The system's Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it)
driven by the ``playwright`` Python package, which downloads no browser here:
``executable_path`` points at the installed one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--metrics-recording-only"]


def find_chromium() -> str | None:
    """Path of a Chromium binary: $MOTIONPROP_CHROMIUM, or the first of CANDIDATES on PATH."""
    if os.environ.get("MOTIONPROP_CHROMIUM"):
        return os.environ["MOTIONPROP_CHROMIUM"]
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the reason they cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set MOTIONPROP_CHROMIUM)"
    return None


def launch(playwright, width: int = 1280, height: int = 800):
    """A fresh headless Chromium context with its own throw-away profile folder (``--user-data-dir``)."""
    profile = Path(tempfile.mkdtemp(prefix="motionprop-chromium-"))
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=find_chromium(), headless=True, args=FLAGS,
        viewport={"width": width, "height": height}, accept_downloads=True)
    context._motionprop_profile = profile
    return context


def close(context) -> None:
    profile = getattr(context, "_motionprop_profile", None)
    context.close()
    if profile is not None:
        shutil.rmtree(profile, ignore_errors=True)
