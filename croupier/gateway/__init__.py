"""The HTTP edge (``croupier gateway``): a seamless wallet for game aggregators, signed
payment webhooks and a bet API for front ends, in front of the Kafka wire contract.

One process, small modules: ``config`` (settings and credentials), ``auth`` (signatures,
API keys, rate limits), ``problems`` (RFC 9457 errors), ``kafka`` (the one producer and
the one results listener), ``store`` (read-only PostgreSQL), ``wallet``, ``webhooks``,
``bets``, ``metrics``, ``openapi`` and ``app`` (the Starlette app factory and ``serve``).

Nothing is acknowledged before Kafka has it: every 2xx that follows a publish waits for
the ``acks=all`` delivery report of an idempotent producer.
"""

READY = "gateway: serving on"  # what its log says once it listens (croupier stack up waits)
