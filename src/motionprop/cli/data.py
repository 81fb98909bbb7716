"""Data commands: ``prepare`` (your own videos -> training set) and ``synth`` (built-in data)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands."""
