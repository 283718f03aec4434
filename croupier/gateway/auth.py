"""Who is calling: aggregators' RSA signatures, payment providers' HMAC signatures inside
a replay window, front ends' API keys, and each key's token bucket.

Every check compares in constant time and fails closed: a header that is missing, not
base64/hex, too long or signed by no configured key is a refusal, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from croupier.gateway.config import hash_key

MAX_SIGNATURE_CHARS = 2048  # base64 of an 8192-bit RSA signature is 1368


def rsa_partner(
    partners: dict[str, RSAPublicKey], body: bytes, signature: str | None
) -> str | None:
    """The partner whose key verifies ``signature`` (base64 RSA-SHA256, PKCS#1 v1.5, over
    the raw ``body``, as Hub88 signs), or None."""
    if not signature or len(signature) > MAX_SIGNATURE_CHARS:
        return None
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    for name, key in partners.items():
        if len(raw) != key.key_size // 8:
            continue
        try:
            key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return name
    return None


def hmac_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a provider sends: over ``timestamp + "." + body``."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookRefused(Exception):
    """Why a webhook is refused: ``reason`` is ``signature``, ``expired`` or ``replayed``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def verify_webhook(
    secret: bytes, body: bytes, timestamp: str | None, signature: str | None,
    *, window: float, now: float | None = None,
) -> None:  # fmt: skip
    """Raise ``WebhookRefused`` unless ``signature`` is ``secret``'s over this body and
    timestamp, and the timestamp is inside ``window`` of now. A signature seen before is
    refused by the caller, against what every gateway process saw (``webhooks``)."""
    now = time.time() if now is None else now
    reason, why = "signature", ""
    if (
        not timestamp
        or not signature
        or len(timestamp) > 20
        or len(signature) != 64
        or not signature.isascii()
    ):
        why = "X-Timestamp and a 64-hex-digit X-Signature are needed"
    elif not timestamp.isascii() or not timestamp.isdigit():
        why = "X-Timestamp is whole seconds since the epoch"
    elif not hmac.compare_digest(hmac_signature(secret, timestamp, body), signature.lower()):
        why = "the signature does not match"
    elif abs(now - int(timestamp)) > window:
        reason, why = "expired", f"the timestamp is more than {window:g} s from now"
    if why:
        raise WebhookRefused(reason, why)


def api_key_owner(keys: dict[str, str], key: str | None) -> str | None:
    """The front end whose key this is, or None."""
    if not key or len(key) > 256 or not key.isascii():
        return None
    # A dict lookup on the hash: the key itself is never compared, so its timing tells
    # nothing about it.
    return keys.get(hash_key(key))


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per API key: ``rate`` tokens a second up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, who: str, now: float | None = None) -> float:
        """0 when ``who`` may go on; else the seconds until a token is there."""
        now = time.monotonic() if now is None else now
        b = self._buckets.get(who)
        if b is None:
            b = self._buckets[who] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            return 0.0
        return (1 - b.tokens) / self.rate
