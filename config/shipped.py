"""Where the data shipped with Croupier is: the jurisdiction policies and the game catalogue.

In a source tree (and an editable install) they are the top-level ``policies/`` and
``games/`` beside the packages. A wheel carries them as data files (``pyproject.toml``'s
``[tool.setuptools.data-files]``), which pip installs under ``<prefix>/share/croupier/``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def shipped(name: str) -> Path:
    """The shipped ``name`` (``policies`` or ``games``): the source tree's, else the wheel's."""
    beside = SOURCE_ROOT / name
    if beside.exists():
        return beside
    return Path(sysconfig.get_path("data")) / "share" / "croupier" / name
