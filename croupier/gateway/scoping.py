"""Partner scoping: an aggregator acts only for the players and transactions that are its own.

A player belongs to a partner through a session token issued for it (``croupier gateway
token issue PLAYER --partner NAME``): balance and bet calls need one (``tokens``). A
transaction belongs to the partner that first sent its id (a row of
``gateway_transactions``, claimed before the call goes to Kafka), and a round to the
partner whose call opened it. Wins and rollbacks carry no checked token (Hub88's rule), so
they are scoped by what they name: a call is refused when

* its transaction id is another partner's (``RS_ERROR_DUPLICATE_TRANSACTION``: the id is
  taken), or
* its round was opened, or the transaction it references was sent, by another partner
  (``RS_ERROR_TRANSACTION_DOES_NOT_EXIST``: for this partner there is no such thing).

A round or a referenced transaction nobody claimed through the gateway (a call produced
straight to Kafka, a rollback of a debit never seen) does not refuse the call.
"""

from __future__ import annotations

from dataclasses import dataclass

DUPLICATE = "RS_ERROR_DUPLICATE_TRANSACTION"
NOT_FOUND = "RS_ERROR_TRANSACTION_DOES_NOT_EXIST"


@dataclass(frozen=True)
class Claimed:
    """What ``gateway_transactions_claim`` answers for one call: the partner holding its
    transaction id, the one that opened its round, the one that sent the transaction it
    references (None: nobody, through the gateway), and whether this claim was the id's
    first (no earlier call of it came through any gateway)."""

    holder: str
    round_holder: str | None
    reference_holder: str | None
    fresh: bool = False


def refusal(partner: str, claimed: Claimed) -> str | None:
    """Hub88's status refusing ``partner``'s call, or None when the call is its own."""
    if claimed.holder != partner:
        return DUPLICATE
    if claimed.round_holder not in (None, partner):
        return NOT_FOUND
    if claimed.reference_holder not in (None, partner):
        return NOT_FOUND
    return None
