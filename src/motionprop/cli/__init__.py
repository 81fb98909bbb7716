"""The ``motionprop`` command line.

Each module listed in :data:`COMMAND_MODULES` defines ``register(subparsers)``,
adding its sub-commands with ``set_defaults(func=handler)``. A handler takes the
parsed arguments and returns an exit code. Handlers import heavy libraries
(torch, cv2) themselves, so ``motionprop --help`` stays fast.

Errors meant for the user (:class:`motionprop.errors.MotionpropError`, a missing
file) are printed as one line and exit with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "motionprop.cli.model",
    "motionprop.cli.data",
    "motionprop.cli.train",
    "motionprop.cli.apps",
    "motionprop.cli.web",
    "motionprop.cli.transfer",
)

EPILOG = """\
Flow convention: flow is (2, H, W) in pixels of the image it belongs to;
channel 0 is x (right), channel 1 is y (down).
Run 'motionprop COMMAND --help' for the options of a command."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="motionprop",
        description="Conditional Motion Propagation: sparse arrows in, dense optical flow out; "
        "self-supervised pre-training of image encoders from video.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"motionprop {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``motionprop`` script; returns the exit code."""
    from ..errors import MotionpropError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that left is then a BrokenPipeError caught below
        return code
    except BrokenPipeError:
        # e.g. 'motionprop presets --json | head -1': the reader has all it wants. 141 = 128 + SIGPIPE,
        # the status a shell reports for a writer the signal stopped (cat, yes), so 'set -o pipefail'
        # scripts see what they would see with coreutils; nothing is printed, not even at exit.
        _silence_stdout()
        return 141
    except (MotionpropError, OSError, RecursionError) as exc:
        print(f"motionprop {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        _flush_stdout_quietly()
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", 2)  # training raises it with the signal that stopped it
        print(f"motionprop {args.command}: interrupted", file=sys.stderr)
        _flush_stdout_quietly()
        return 128 + signum


def _one_line(exc: BaseException) -> str:
    """The message of a user-facing error on one line (an OSError names its file)."""
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read"
    from ..errors import MotionpropError, os_error_message

    if isinstance(exc, OSError) and not isinstance(exc, MotionpropError):
        return os_error_message(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def _flush_stdout_quietly() -> None:
    """Flush what a failed command printed; if stdout is gone (a closed pipe, a full disk) say nothing more.

    Otherwise the interpreter's own flush at exit would print "Exception ignored"
    after the one-line error.
    """
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
