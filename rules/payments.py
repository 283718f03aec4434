"""The payments rules: what a deposit, a withdrawal or a provider's result on it does.

Every payment is keyed by its ``payment_id``, in two phases: the *open* (the ``deposit``,
or the ``withdrawal`` request that reserves the amount) and, for a withdrawal, its *close*
(``withdrawal_completed`` pays the reserve out, ``withdrawal_failed`` releases it; one
close per withdrawal). Each phase of a payment id is decided once:

* **Same id, same content: the first answer.** A provider's retry (same payment id and
  phase, same request whatever its timestamp) is answered with the decision stored for it,
  byte for byte, accepted or refused, and moves nothing.
* **Same id, other content: ``duplicate_conflict``.** The first decision stands; the
  message is a dead letter with that reason (a deposit ``P`` and then a withdrawal ``P``,
  the same deposit with another amount, a completed and then a failed close).
* **Open.** A deposit or a withdrawal request asks player protection first
  (``unknown_player``, ``self_excluded``, ``deposit_limit``, ...; a self-excluded player
  may still withdraw; see ``rules.compliance``), then the ledger (``insufficient_funds``
  for a withdrawal larger than the cash). Either refusal is the payment id's decision.
* **Close.** A provider's result is always applied to an accepted withdrawal of the same
  player, in the currency it was reserved in. Refused ``invalid`` when the payment id was
  a deposit or a refused withdrawal (stored: that is the close's decision).
* **Answers that do not stick.** A close that arrives before its withdrawal request is
  answered ``retry_later`` (the two may travel on different paths; the request may still
  come). A close naming another player's withdrawal is answered ``invalid``. Neither is
  stored as the payment id's decision, so the provider's retry (or the right player's
  close) is decided on its merits when it comes.

Pure: the caller loads the phases already decided, asks protection, posts to the ledger
and stores what ``Book.decide`` returns, in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from schemas.base import request_hash as base_request_hash
from schemas.outbound import ReasonCode
from schemas.payments import Deposit, PaymentEvent, Withdrawal

Phase = Literal["open", "close"]
Status = Literal["accepted", "rejected", "pending"]  # pending: moving in this batch
Kind = Literal["move", "refuse", "repeat", "conflict", "answer"]


def phase_of(event: PaymentEvent) -> Phase:
    """Which phase of its payment id an event decides."""
    return "open" if isinstance(event, Deposit | Withdrawal) else "close"


def request_hash(event: PaymentEvent) -> str:
    """What an event asks for. The timestamp is left out: a provider's retry may restamp
    the same event, and it is still the same event."""
    return base_request_hash(event, exclude={"timestamp"})


@dataclass
class Prior:
    """A payment id's phase already decided (stored, or earlier in this batch)."""

    payment_id: str
    phase: Phase
    type: str
    player_id: str
    request_hash: str | None  # None: decided before hashes were kept; any resend repeats
    status: Status
    currency: str | None = None  # an open's currency
    decision: str | None = None  # the JSON first published, once known


@dataclass(frozen=True)
class Verdict:
    """What one event does.

    ``move``: post the ledger operation (the ledger may still refuse, e.g. funds);
    ``refuse``: refused with ``reason``, the id's decision; ``repeat``: answer ``prior``'s
    decision again; ``conflict``: a dead letter, ``duplicate_conflict``; ``answer``: refused
    with ``reason`` for this message only, not the id's decision.
    """

    kind: Kind
    reason: ReasonCode | None = None
    detail: str = ""
    prior: Prior | None = None
    currency: str | None = None  # a close's: the reserve's currency

    @property
    def sticks(self) -> bool:
        """Whether this is the payment id's decision (stored, answered to every retry)."""
        return self.kind in ("move", "refuse")


# Asked of the caller for an open: player protection's refusal, or None.
Protection = Callable[[Deposit | Withdrawal], ReasonCode | None]


@dataclass
class Book:
    """One batch's view of the payment ids it names; ``decide`` events in arrival order."""

    known: dict[tuple[str, Phase], Prior] = field(default_factory=dict)

    def decide(self, event: PaymentEvent, hashed: str, protection: Protection) -> Verdict:
        """Decide ``event`` against what is known so far, and remember what sticks."""
        phase = phase_of(event)
        prior = self.known.get((event.payment_id, phase))
        if prior is not None:
            if prior.request_hash in (None, hashed):
                return Verdict("repeat", prior=prior)
            return Verdict(
                "conflict", ReasonCode.DUPLICATE_CONFLICT,
                f"payment_id {event.payment_id} was first a {prior.type} of {prior.player_id}",
                prior=prior,
            )  # fmt: skip
        if isinstance(event, Deposit | Withdrawal):
            refused = protection(event)
            verdict = (
                Verdict("refuse", refused, "player protection")
                if refused is not None
                else Verdict("move", currency=event.currency)
            )
        else:
            verdict = self._close(event)
        if verdict.sticks:
            self.known[(event.payment_id, phase)] = Prior(
                event.payment_id, phase, event.type, event.player_id, hashed,
                "pending" if verdict.kind == "move" else "rejected",
                currency=verdict.currency,
            )  # fmt: skip
        return verdict

    def _close(self, event: PaymentEvent) -> Verdict:
        opened = self.known.get((event.payment_id, "open"))
        if opened is None:
            return Verdict(
                "answer", ReasonCode.RETRY_LATER,
                f"no withdrawal {event.payment_id} yet: retry once it is requested",
            )  # fmt: skip
        if opened.player_id != event.player_id:
            return Verdict(
                "answer", ReasonCode.INVALID,
                f"payment {event.payment_id} is another player's",
            )  # fmt: skip
        if opened.type != "withdrawal" or opened.status == "rejected":
            what = "a deposit" if opened.type != "withdrawal" else "a refused withdrawal"
            return Verdict("refuse", ReasonCode.INVALID, f"payment {event.payment_id} is {what}")
        return Verdict("move", currency=opened.currency)

    def settle(self, event: PaymentEvent, *, accepted: bool, decision: str) -> None:
        """Record how a ``move`` ended (the ledger's answer) and the decision published."""
        prior = self.known[(event.payment_id, phase_of(event))]
        prior.status = "accepted" if accepted else "rejected"
        prior.decision = decision

    def answered(self, event: PaymentEvent, decision: str) -> None:
        """Record the decision published for a ``refuse``."""
        self.known[(event.payment_id, phase_of(event))].decision = decision
