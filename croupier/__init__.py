"""Croupier: stream processing for regulated iGaming (the front door: settings, CLI, stack)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("croupier")  # pyproject.toml's, as installed: one place says it
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
