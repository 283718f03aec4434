"""The audit key watch: a checkpoint signed by a key that is not the pinned one is an alert.

Run by whoever signs checkpoints (the auditor, or the workers' timer). Each pass reads the
checkpoints made since the last one and, for each whose row names a key other than the
pinned one (``CROUPIER_AUDIT_PUBLIC_KEY``), logs an error and counts it in
``croupier_audit_key_alerts{what="checkpoint"}``: the signing key changed, or someone
else (a role that can write ``audit_checkpoints``) signs. A signer whose own key is not
the pinned one signs nothing and says so (``what="signer"``) instead of adding
checkpoints no verifier will accept. Without a pin nothing can be compared; that is
logged once, as a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.settings import Settings
from sinks.postgres.audit import checkpoint_if_moved, checkpoint_keys
from sinks.signing import fingerprint, load_private_key, parse_pin, public_bytes
from streams import metrics

log = logging.getLogger(__name__)


class KeyWatch:
    """The signing key, the pinned key, and how far the checkpoints were looked at."""

    def __init__(self, settings: Settings, key: Ed25519PrivateKey | None = None) -> None:
        self.key_path = settings.audit_key
        self.key = key or load_private_key(settings.audit_key, what="audit key")
        self.public = public_bytes(self.key)
        text = settings.audit_public_key
        self.pin = parse_pin(text) if text else None
        self.seen = 0  # the last checkpoint id looked at
        if self.pin is None:
            log.warning("no pinned audit public key (CROUPIER_AUDIT_PUBLIC_KEY): a change "
                        "of the signing key cannot be detected")  # fmt: skip

    def check(self, conn: Any) -> list[int]:
        """Alert on every checkpoint since the last pass signed by another key; their ids."""
        if self.pin is None:
            return []
        rows = checkpoint_keys(conn, self.seen)
        foreign = [(cid, key) for cid, key in rows if not self.pin.matches(key)]
        for cid, key in foreign:
            metrics.AUDIT_KEY_ALERTS.labels("checkpoint").inc()
            log.error("audit checkpoint %d is signed by key %s, not the pinned key %s: the "
                      "signing key changed, or someone else signs checkpoints",
                      cid, fingerprint(key), self.pin.fingerprint)  # fmt: skip
        if rows:
            self.seen = rows[-1][0]
        return [cid for cid, _ in foreign]

    def may_sign(self) -> bool:
        """Whether the signing key is the pinned one (or nothing is pinned)."""
        if self.pin is None or self.pin.matches(self.public):
            return True
        metrics.AUDIT_KEY_ALERTS.labels("signer").inc()
        log.error("the audit key %s (fingerprint %s) is not the pinned key %s "
                  "(CROUPIER_AUDIT_PUBLIC_KEY): no checkpoint signed", self.key_path,
                  fingerprint(self.public), self.pin.fingerprint)  # fmt: skip
        return False

    def sign(self, conn: Any) -> tuple[int, int] | None:
        """One signing pass: the watch, then a checkpoint if a chain moved (and we may sign)."""
        self.check(conn)
        if not self.may_sign():
            return None
        return checkpoint_if_moved(conn, self.key)  # the next check sees it, and it is ours
