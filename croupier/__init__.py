"""Croupier: stream processing for regulated iGaming (the front door: settings, CLI, stack)."""


def __getattr__(name: str) -> str:
    """``__version__``: pyproject.toml's, as installed (one place says it). Read when asked:
    importlib.metadata is a tenth of a second that ``croupier --help`` need not pay."""
    if name != "__version__":
        msg = f"module 'croupier' has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("croupier")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
