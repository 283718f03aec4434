"""Everything a request handler needs, made once by the app factory (injected, so tests
and the bench build their own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from config.settings import Settings
from croupier.gateway.auth import RateLimiter
from croupier.gateway.config import Credentials, GatewaySettings

if TYPE_CHECKING:
    from croupier.gateway.bets import Decisions
    from croupier.gateway.kafka import Listener, Publisher, Waiters
    from croupier.gateway.store import Store
    from croupier.gateway.wallet import Wallet


@dataclass
class GatewayState:
    settings: Settings
    gateway: GatewaySettings
    credentials: Credentials
    publisher: Publisher
    store: Store
    waiters: Waiters
    decisions: Decisions
    wallet: Wallet
    limiter: RateLimiter
    listener: Listener | None = None
    extra: dict[str, object] = field(default_factory=dict)
