"""The ``app`` command: the local web app (propagate, animate, annotate in a browser)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Serve the paper's three demos as one page on this machine: drag arrows on a photo and watch the
motion propagate, animate it into a clip, click objects to get their masks (COCO RLE export).
The image is encoded once per upload; each query runs only the decoder, one at a time.

Needs the optional extra 'app': pip install 'motionprop[app]'. Binds 127.0.0.1 (this machine only)
unless --host says otherwise; the page and the HTTP API are documented in docs/app.md."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``app`` sub-command."""
    from .apps import _add_model_options

    p = subparsers.add_parser("app", help="the interactive web app on localhost (optional extra 'app')",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="example:\n  motionprop download annotation\n"
                              "  motionprop app --checkpoint annotation   # then open http://127.0.0.1:8765")
    _add_model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    p.add_argument("--max-sessions", type=int, default=8, metavar="N",
                   help="images kept encoded at once; the least recently used is dropped (default: 8)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="MINUTES",
                   help="drop a session unused this long (default: 60)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB", help="largest image file (default: 25)")
    p.add_argument("--max-megapixels", type=float, default=40.0, metavar="MP",
                   help="largest image, checked before decoding (default: 40)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's)")
    p.set_defaults(func=run_app)


def run_app(args: argparse.Namespace) -> int:
    import importlib.util

    from ..errors import InputError
    from ..hub import resolve_checkpoint
    from ..precision import describe
    from .apps import _check_model_inputs, _load_propagator

    missing = [m for m in ("starlette", "uvicorn", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"the web app needs {', '.join(missing)}: pip install 'motionprop[app]'")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    if args.max_sessions < 1 or args.timeout <= 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise InputError("--max-sessions, --timeout, --max-upload-mb and --max-megapixels must be positive")
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    _check_model_inputs(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    from ..web.images import UploadLimits
    from ..web.server import serve
    from ..web.sessions import Sessions

    propagator = _load_propagator(args)
    model = propagator.model
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024),
                          max_pixels=int(args.max_megapixels * 1_000_000))
    sessions = Sessions(model, working_size=args.working_size, max_sessions=args.max_sessions,
                        timeout=args.timeout * 60, limits=limits, precision=propagator.precision)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} serves the app to other machines; it has no login, and every "
              "visitor shares this machine's CPU", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"motionprop app: http://{shown}:{args.port}/  (checkpoint {args.checkpoint}, "
          f"{describe(args.precision, propagator.device)}; Ctrl-C stops)")
    serve(sessions, args.host, args.port, info={"checkpoint": str(args.checkpoint),
                                               "description": model.config.description or ""})
    return 0
