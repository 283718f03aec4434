"""Session tokens: the operator issues a player a token for one aggregator when the player
opens a game (``croupier gateway token issue PLAYER --partner NAME``: printed once, kept
as its SHA-256 with the partner and an expiry in ``gateway_tokens``); the aggregator
passes it back on every wallet call. ``croupier gateway token revoke TOKEN|--player P``
deletes it (every gateway refuses it within ``CROUPIER_GATEWAY_TOKEN_CACHE`` seconds).

As Hub88's wallet API asks: ``/user/balance`` and ``/transaction/bet`` (and the generic
variant's balance and debit) need the token of the ``user`` named, issued for the partner
whose key signed the call, unexpired (``RS_ERROR_INVALID_TOKEN`` when it is unknown,
revoked, another player's or another partner's, ``RS_ERROR_TOKEN_EXPIRED`` when it is
past its expiry); a win or a rollback is not refused for its token (Hub88: token validity
must not be checked on wins and rollbacks, which may come after the session ended): those
are scoped by the transactions they name (``scoping``).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import psycopg

from croupier.gateway.config import NAME, hash_key
from croupier.gateway.store import Store

TOKEN_PREFIX = "cgs_"
INVALID_TOKEN = "RS_ERROR_INVALID_TOKEN"
TOKEN_EXPIRED = "RS_ERROR_TOKEN_EXPIRED"
MAX_TTL = 30 * 86_400  # as gateway_token_issue allows


def issue(dsn: str, schema: str, player_id: str, ttl: float, *, partner: str) -> str:
    """Mint a session token for ``player_id`` at ``partner``, valid ``ttl`` seconds; store
    its hash; return it (shown once)."""
    if not 0 < ttl <= MAX_TTL:
        msg = f"a token lives more than 0 and at most {MAX_TTL} seconds"
        raise ValueError(msg)
    if not NAME.match(partner):
        msg = f"partner {partner!r}: letters, digits, '.', '_', '-', at most 64"
        raise ValueError(msg)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        conn.execute("SELECT gateway_token_issue(%s, %s, %s, %s)",
                     (hash_key(token), player_id, expires, partner))  # fmt: skip
    return token


def revoke(dsn: str, schema: str, *, token: str | None = None, player: str | None = None) -> int:
    """Delete one token, or every token of ``player``; how many were deleted."""
    if (token is None) == (player is None):
        msg = "revoke a token or a player's tokens (one of the two)"
        raise ValueError(msg)
    digest = None if token is None else hash_key(token)
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        row = conn.execute("SELECT gateway_token_revoke(%s, %s)", (digest, player)).fetchone()
    return int(row[0]) if row else 0


async def refusal(store: Store, user: str, token: str | None, partner: str) -> str | None:
    """Hub88's status refusing ``token`` for ``user`` at ``partner``, or None when it is
    theirs, issued for that partner, and live."""
    if not token or len(token) > 256 or not token.isascii():
        return INVALID_TOKEN
    found = await store.token(hash_key(token))
    if found is None or found[0] != user or found[2] != partner:
        return INVALID_TOKEN
    if found[1] <= datetime.now(UTC):
        return TOKEN_EXPIRED
    return None
