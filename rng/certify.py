"""Ties the running generator to its certificate: the module's SHA-256 must match the manifest.

A lab certifies one exact build of ``rng/generator.py`` and records its SHA-256, which
``rng/manifest.json`` carries with the certificate. Verifying at start-up (and on demand,
for a regulator's spot check) proves the code dealing the games is the code the lab
tested; any edit of the generator, even a comment, changes the hash and stops the
platform until the new build is recertified and the manifest updated.

The hash is taken over the file's bytes, so line endings count: check the file out as is.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from rng import generator
from rng.generator import CertifiedRng

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
# The file the interpreter actually loaded: the one that must match the certificate.
GENERATOR_PATH = Path(generator.__file__)

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class RngNotCertified(RuntimeError):
    """The generator's code is not the build the manifest certifies."""


class Manifest(BaseModel):
    """The lab's certificate for one build of the generator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int
    module: str
    sha256: Sha256
    lab: str
    standard: str
    certificate: str
    certified: date


def module_hash(path: Path | None = None) -> str:
    """The SHA-256 (hex) of the generator's file; by default the module that was imported."""
    return hashlib.sha256((path or GENERATOR_PATH).read_bytes()).hexdigest()


def load_manifest(path: Path | None = None) -> Manifest:
    """The shipped certificate record (or the one at ``path``)."""
    return Manifest.model_validate_json((path or MANIFEST_PATH).read_bytes())


def verify(manifest: Manifest | None = None, module_path: Path | None = None) -> str:
    """The build hash of the generator, if it is the certified build; else RngNotCertified."""
    if manifest is None:
        manifest = load_manifest()
    actual = module_hash(module_path)
    if actual != manifest.sha256:
        msg = (
            f"{manifest.module} is not the certified build: its SHA-256 is {actual}, "
            f"certificate {manifest.certificate} ({manifest.lab}, {manifest.standard}) "
            f"records {manifest.sha256}. Any code change to the generator needs "
            "recertification by the test lab and a new manifest before it may deal games."
        )
        raise RngNotCertified(msg)
    return actual


def certified_rng() -> tuple[CertifiedRng, str]:
    """The production generator and its build hash, after checking it is the certified build."""
    build = verify()
    return CertifiedRng(), build
