"""Croupier: stream processing for regulated iGaming (the front door: settings, CLI, stack)."""

__version__ = "0.1.0"
