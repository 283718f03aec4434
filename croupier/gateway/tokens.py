"""Hub88 session tokens: the operator issues a player a token when the player opens a game
(``croupier gateway token issue PLAYER``: printed once, kept as its SHA-256 with an expiry
in ``gateway_tokens``); Hub88 passes it back on every wallet call.

As Hub88's wallet API asks: ``/user/balance`` and ``/transaction/bet`` need the token of
the ``user`` named, unexpired (``RS_ERROR_INVALID_TOKEN`` when it is unknown or another
player's, ``RS_ERROR_TOKEN_EXPIRED`` when it is past its expiry); a win or a rollback is
not refused for its token (Hub88: token validity must not be checked on wins and
rollbacks, which may come after the session ended).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import psycopg

from croupier.gateway.config import hash_key
from croupier.gateway.store import Store

TOKEN_PREFIX = "cgs_"
INVALID_TOKEN = "RS_ERROR_INVALID_TOKEN"
TOKEN_EXPIRED = "RS_ERROR_TOKEN_EXPIRED"
MAX_TTL = 30 * 86_400  # as gateway_token_issue allows


def issue(dsn: str, schema: str, player_id: str, ttl: float) -> str:
    """Mint a session token for ``player_id`` valid ``ttl`` seconds; store its hash; return
    it (shown once)."""
    if not 0 < ttl <= MAX_TTL:
        msg = f"a token lives more than 0 and at most {MAX_TTL} seconds"
        raise ValueError(msg)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        conn.execute("SELECT gateway_token_issue(%s, %s, %s)",
                     (hash_key(token), player_id, expires))  # fmt: skip
    return token


async def refusal(store: Store, user: str, token: str | None) -> str | None:
    """Hub88's status refusing ``token`` for ``user``, or None when it is theirs and live."""
    if not token or len(token) > 256 or not token.isascii():
        return INVALID_TOKEN
    found = await store.token(hash_key(token))
    if found is None or found[0] != user:
        return INVALID_TOKEN
    if found[1] <= datetime.now(UTC):
        return TOKEN_EXPIRED
    return None
