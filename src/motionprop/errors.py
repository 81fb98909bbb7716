"""Exceptions that carry a message meant for the user.

The command line prints their message on one line and exits with code 2;
Python callers can catch them by type (each also derives from the builtin
exception a caller would expect, e.g. ``ValueError``).
"""

from __future__ import annotations


class MotionpropError(Exception):
    """Base class of errors whose message is written for the user."""


class ConfigError(MotionpropError, ValueError):
    """A config file, preset name or config value is invalid."""


class CheckpointError(MotionpropError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the network."""


class FlowFileError(MotionpropError, ValueError):
    """A flow file is truncated, has a wrong magic number or a wrong size."""


class InputError(MotionpropError, ValueError):
    """A user-given input (image, point, argument) is invalid."""
