"""Ed25519 keys of the operator: made only when asked, read only when private, pinned to verify.

Two keys, one per purpose, so that neither can stand in for the other:

* the **audit key** (``CROUPIER_AUDIT_KEY``, default ``.stack/audit/ed25519.pem``) signs
  the audit trail's checkpoints (``sinks/postgres/audit.py``) and the bundles exported
  from it (``sinks/audit_bundle.py``);
* the **report key** (``CROUPIER_REPORT_SIGNING_KEY``, default
  ``.stack/reports/ed25519.pem``) signs the files delivered to regulators: the SCI
  batches (``sinks/reports/sci.py``) and the SAFE tamper tokens (``sinks/reports/safe.py``).

A private key is a PEM file (PKCS#8, unencrypted) of mode 0600. It is made by
``generate`` only: ``croupier audit keygen``, or ``croupier stack up`` (``make up``) on
first setup; neither makes one where a ``.pub`` shows that a key was there and is lost.
Reading it (``load_private_key``) never makes one: a missing file is an error saying how
to make it, and a file that the group or others may read is refused
with the ``chmod 600`` that fixes it. Beside each private key ``generate`` writes its
public key, ``<name>.pub``: the 64 hex digits of the raw 32-byte Ed25519 public key.

**Pinning.** A verifier trusts one public key given to it from outside the data it
checks, never the key a checkpoint row or a file names: ``CROUPIER_AUDIT_PUBLIC_KEY`` (or
``--public-key``) takes the key as 64 hex digits, as base64 of the 32 raw bytes, as the
path of a file holding either (or a PEM public key), or as the key's fingerprint.

**Fingerprint.** ``fingerprint(public)`` is the first 16 bytes of SHA-256 over the raw
32-byte public key, as 32 lowercase hex digits. A pin given as a fingerprint accepts a
signature only by a key with that fingerprint (a second preimage of 128 bits is out of
reach); a pin given as the key itself checks every signature with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FINGERPRINT_BYTES = 16


class KeyFileError(Exception):
    """A key that is missing, unreadable, too open or not an Ed25519 key."""


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32 bytes of ``key``'s public key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: bytes) -> str:
    """SHA-256 of the raw public key, first 16 bytes, lowercase hex (32 digits)."""
    return hashlib.sha256(public).digest()[:FINGERPRINT_BYTES].hex()


def public_file(private_path: Path) -> Path:
    """Where ``generate`` writes the public key of the private key at ``private_path``."""
    return private_path.with_suffix(".pub")


def generate(path: Path) -> Ed25519PrivateKey:
    """Make a new key at ``path`` (mode 0600) and its ``.pub``; refuses to replace either."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if public_file(path).exists() and not path.exists():
        msg = (f"{public_file(path)} is there without its private key {path}: was the key "
               "lost? A new key changes what verifiers pin; move the .pub away first if "
               "that is what you mean")  # fmt: skip
        raise KeyFileError(msg)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        msg = f"{path} already holds a key; a key is never replaced silently (move it away first)"
        raise KeyFileError(msg) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_file(path).write_text(public_bytes(key).hex() + "\n")
    return key


def ensure(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at ``path``, made first if there is none (first setup only: a ``.pub``
    left without its key means the key was lost, and nothing is made); (key, made)."""
    if path.exists():
        return load_private_key(path), False
    try:
        return generate(path), True
    except KeyFileError:
        if not path.exists():
            raise  # a lost key: say so
        return load_private_key(path), False  # another process made it just now: theirs


def load_private_key(path: Path, *, what: str = "signing key") -> Ed25519PrivateKey:
    """The Ed25519 key in ``path``: refused when missing, group/world-readable or not one."""
    try:
        info = path.stat()
    except FileNotFoundError:
        msg = (f"no {what} at {path}; make one with `croupier audit keygen` (or `make up` on "
               "first setup), or point the setting at the key you have")  # fmt: skip
        raise KeyFileError(msg) from None
    except OSError as exc:
        msg = f"cannot read the {what} {path}: {exc.strerror}"
        raise KeyFileError(msg) from None
    if not stat.S_ISREG(info.st_mode):
        msg = f"the {what} {path} is not a regular file"
        raise KeyFileError(msg)
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        msg = (f"the {what} {path} may be read by its group or others (mode {mode:04o}); "
               f"fix it with: chmod 600 {path}")  # fmt: skip
        raise KeyFileError(msg)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        msg = f"{path} does not hold a readable PEM private key ({type(exc).__name__})"
        raise KeyFileError(msg) from None
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{path} holds a {type(key).__name__}, not an Ed25519 private key"
        raise KeyFileError(msg)
    return key


@dataclass(frozen=True)
class Pin:
    """The public key a verifier trusts: the key itself, or only its fingerprint."""

    public: bytes | None = None
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.public is not None and not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.public))

    def matches(self, public: bytes) -> bool:
        """Whether ``public`` is the pinned key."""
        return fingerprint(public) == self.fingerprint and (
            self.public is None or self.public == public
        )

    def verifies(self, named: bytes, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` over ``message`` is the pinned key's. ``named`` is the key
        the data names: used only to check a signature when the pin is a fingerprint, and
        only if it has that fingerprint."""
        key = self.public
        if key is None:
            if not self.matches(named):
                return False
            key = named
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_pin(text: str) -> Pin:
    """A pin from a setting or an option: 64 hex digits, base64 of 32 bytes, a 32-hex-digit
    fingerprint, or the path of a file holding one of those or a PEM public key."""
    value = text.strip()
    if not value:
        msg = "an empty public key"
        raise KeyFileError(msg)
    path = Path(value).expanduser()
    if ("/" in value or value.endswith((".pub", ".pem"))) and not _is_key_text(value):
        try:
            data = path.read_bytes()
        except OSError as exc:
            msg = f"cannot read the public key file {path}: {exc.strerror}"
            raise KeyFileError(msg) from None
        if data.lstrip().startswith(b"-----BEGIN"):
            try:
                loaded = serialization.load_pem_public_key(data)
            except ValueError as exc:
                msg = f"{path} does not hold a PEM public key ({exc})"
                raise KeyFileError(msg) from None
            if not isinstance(loaded, Ed25519PublicKey):
                msg = f"{path} holds a {type(loaded).__name__}, not an Ed25519 public key"
                raise KeyFileError(msg)
            return Pin(loaded.public_bytes_raw())
        value = data.decode(errors="replace").strip()
    return _pin_text(value)


def _is_key_text(value: str) -> bool:
    try:
        _pin_text(value)
    except KeyFileError:
        return False
    return True


def _pin_text(value: str) -> Pin:
    lowered = value.lower()
    if len(lowered) == 64 and all(c in "0123456789abcdef" for c in lowered):
        return Pin(bytes.fromhex(lowered))
    if len(lowered) == 2 * FINGERPRINT_BYTES and all(c in "0123456789abcdef" for c in lowered):
        return Pin(None, lowered)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return Pin(raw)
    msg = ("a public key is 64 hex digits, base64 of its 32 bytes, its fingerprint (32 hex "
           "digits), or a file holding one of them")  # fmt: skip
    raise KeyFileError(msg)
