"""The local stack's variables: what ``make up`` wrote to ``.stack/env``, for the commands
and tools run beside it (a variable already set wins)."""

from __future__ import annotations

import os
import shlex
from collections.abc import MutableMapping
from pathlib import Path

from config.settings import Settings


def load_stack_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Take unset service variables from ``.stack/env`` (``CROUPIER_STACK_DIR``'s)."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    path = Path(env.get("CROUPIER_STACK_DIR", ".stack")) / "env"
    try:
        text = path.read_text()
    except OSError:
        return
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export ") or "=" not in line:
            continue
        name, _, raw = line.removeprefix("export ").partition("=")
        values = shlex.split(raw)
        env.setdefault(name.strip(), values[0] if values else "")


def stack_settings() -> Settings:
    """The settings, with ``.stack/env`` filling in what the environment leaves unset."""
    load_stack_env()
    return Settings()
