"""Model commands: ``presets``, ``convert``, ``export-encoder``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model sub-commands."""
