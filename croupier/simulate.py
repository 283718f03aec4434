"""``croupier simulate``: being built (issue 9)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (filled in with the command)."""


def run(args: argparse.Namespace) -> int:
    msg = "croupier simulate is being built"
    raise NotImplementedError(msg)
