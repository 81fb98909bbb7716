"""Exceptions that carry a message meant for the user.

The command line prints their message on one line and exits with code 2;
Python callers can catch them by type (each also derives from the builtin
exception a caller would expect, e.g. ``ValueError``).
"""

from __future__ import annotations


class MotionpropError(Exception):
    """Base class of errors whose message is written for the user.

    Raised in a DataLoader worker, the error is re-created in the main process
    with the worker's whole traceback as its message; only the original message
    is kept, so the command line still prints one line naming the file.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_worker_message(args[0], type(self).__name__),)
        super().__init__(*args)


def _worker_message(message: str, name: str) -> str:
    """The original message of an exception that torch's DataLoader re-raised from a worker, else ``message``."""
    if not (message.startswith(f"Caught {name} in DataLoader worker") and "\nOriginal Traceback" in message):
        return message
    last = message.rstrip().splitlines()[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.rsplit(".", 1)[-1] == name else last


def os_error_message(exc: OSError) -> str:
    """An OSError as a user reads it: its reason and the file it names ("No such file or directory: x")."""
    if not exc.strerror:
        return " ".join(str(exc).split()) or type(exc).__name__
    return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror


class ConfigError(MotionpropError, ValueError):
    """A config file, preset name or config value is invalid."""


class CheckpointError(MotionpropError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the network."""


class FlowFileError(MotionpropError, ValueError):
    """A flow file is truncated, has a wrong magic number or a wrong size."""


class InputError(MotionpropError, ValueError):
    """A user-given input (image, point, argument) is invalid."""
