"""The gateway's settings and credentials: where it listens, its limits, and the partners'
public keys, the payment providers' secrets and the front ends' API key hashes.

Environment variables (besides the service variables of ``config.settings``):

=================================  ===================================================
``CROUPIER_GATEWAY_HOST``          address to listen on (default 127.0.0.1)
``CROUPIER_GATEWAY_PORT``          port (default 8480)
``CROUPIER_GATEWAY_URL``           where clients reach it (``croupier stack up`` writes it)
``CROUPIER_GATEWAY_DIR``           the credentials directory (default ``.stack/gateway``):
                                   ``partners/<name>.pem`` (an aggregator's RSA public
                                   key), ``operator.pem`` (the operator's RSA private key,
                                   optional: it signs the Hub88 answers),
                                   ``providers/<name>.secret`` (a payment provider's
                                   HMAC secret), ``keys.json`` (API key hashes,
                                   written by ``croupier gateway key add``)
``CROUPIER_GATEWAY_DEADLINE``      seconds a wallet call waits for its result (default 2)
``CROUPIER_GATEWAY_MAX_BODY``      largest request body in bytes (default 65536)
``CROUPIER_GATEWAY_REPLAY_WINDOW``  seconds a webhook's timestamp may be from now
                                   (default 300); a signature seen inside it is refused
``CROUPIER_GATEWAY_RATE``          requests per second per API key (default 200)
``CROUPIER_GATEWAY_BURST``         a key's bucket size (default 400)
``CROUPIER_GATEWAY_TOKEN_CACHE``   seconds a session token found is trusted without asking
                                   PostgreSQL again (default 5): a revoked token is refused
                                   by every gateway within it
``CROUPIER_GATEWAY_RETENTION``     days the gateway keeps decided bets' tickets, its
                                   transaction claims and expired tokens (default 7, at
                                   least 1); pruned by the gateway itself
``CROUPIER_GATEWAY_PRUNE_EVERY``   seconds between two prunings (default 3600; 0: never)
``CROUPIER_GATEWAY_WORKERS``       gateway processes sharing the port (default 1;
                                   ``croupier gateway run --workers N``)
``CROUPIER_GATEWAY_REUSE_PORT``    bind with SO_REUSEPORT (set for each of those processes)
=================================  ===================================================
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_GATEWAY_URL = "CROUPIER_GATEWAY_URL"
DEFAULT_PORT = 8480
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_PREFIX = "cgk_"  # so a leaked key is recognisable in a scanner's output


class GatewaySettings(BaseSettings):
    """Where the gateway listens and how much it takes."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", validation_alias="CROUPIER_GATEWAY_HOST")
    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, validation_alias="CROUPIER_GATEWAY_PORT"
    )
    directory: Path = Field(default=Path(".stack/gateway"), validation_alias="CROUPIER_GATEWAY_DIR")
    deadline: float = Field(default=2.0, gt=0, le=60, validation_alias="CROUPIER_GATEWAY_DEADLINE")
    max_body: int = Field(default=65_536, ge=1024, validation_alias="CROUPIER_GATEWAY_MAX_BODY")
    replay_window: float = Field(
        default=300.0, gt=0, le=3600, validation_alias="CROUPIER_GATEWAY_REPLAY_WINDOW"
    )
    rate: float = Field(default=200.0, gt=0, validation_alias="CROUPIER_GATEWAY_RATE")
    burst: float = Field(default=400.0, ge=1, validation_alias="CROUPIER_GATEWAY_BURST")
    token_cache: float = Field(
        default=5.0, ge=0, le=60, validation_alias="CROUPIER_GATEWAY_TOKEN_CACHE"
    )
    retention: float = Field(default=7.0, ge=1, validation_alias="CROUPIER_GATEWAY_RETENTION")
    prune_every: float = Field(
        default=3600.0, ge=0, validation_alias="CROUPIER_GATEWAY_PRUNE_EVERY"
    )
    workers: int = Field(default=1, ge=1, le=64, validation_alias="CROUPIER_GATEWAY_WORKERS")
    reuse_port: bool = Field(default=False, validation_alias="CROUPIER_GATEWAY_REUSE_PORT")


def hash_key(key: str) -> str:
    """An API key's hash at rest: SHA-256 (a key is 256 random bits, so no slow hash is
    needed to resist guessing; a stolen ``keys.json`` gives nothing to replay)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """Every secret the gateway checks requests against."""

    partners: dict[str, RSAPublicKey] = field(default_factory=dict)
    providers: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # sha256 hex -> front end name
    # The operator's own RSA key: when set, Hub88 answers carry X-Hub88-Signature.
    operator: RSAPrivateKey | None = None

    @classmethod
    def load(cls, directory: Path) -> Credentials:
        """Read ``directory`` (missing parts are empty: that interface refuses everyone)."""
        partners: dict[str, RSAPublicKey] = {}
        for pem in sorted((directory / "partners").glob("*.pem")):
            key = load_pem_public_key(pem.read_bytes())
            if not isinstance(key, RSAPublicKey):
                msg = f"{pem}: an aggregator's key must be an RSA public key"
                raise ValueError(msg)
            partners[pem.stem] = key
        providers = {
            p.stem: p.read_bytes().strip()
            for p in sorted((directory / "providers").glob("*.secret"))
        }
        for name, secret in providers.items():
            if len(secret) < 16:
                msg = f"provider {name}: a webhook secret needs at least 16 bytes"
                raise ValueError(msg)
        keys: dict[str, str] = {}
        path = directory / "keys.json"
        if path.exists():
            for name, digest in json.loads(path.read_text()).items():
                keys[str(digest)] = str(name)
        operator = None
        if (directory / "operator.pem").exists():
            private = load_pem_private_key((directory / "operator.pem").read_bytes(), None)
            if not isinstance(private, RSAPrivateKey):
                msg = f"{directory / 'operator.pem'}: the operator's key must be an RSA key"
                raise ValueError(msg)
            operator = private
        return cls(partners, providers, keys, operator)


def add_key(directory: Path, name: str) -> str:
    """Mint an API key for front end ``name``, store its hash, return the key (shown once).

    A second key for the same name replaces the first (that is how a key is rotated)."""
    if not NAME.match(name):
        msg = f"front end name {name!r}: letters, digits, '.', '_', '-', at most 64"
        raise ValueError(msg)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keys.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    known[name] = hash_key(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(known, indent=2, sort_keys=True) + "\n")
    return key
