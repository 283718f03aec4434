"""The seamless wallet's rules: what a game aggregator's call does to a player's wallet.

Modelled on the public seamless-wallet APIs of the big aggregators (Hub88's
``transaction/bet|win|rollback``, Pragmatic Play's ``bet``/``result``/``refund``,
Evolution's ``debit``/``credit``/``cancel``). Their common ground, which is what Croupier
promises:

* **Retries are safe.** An aggregator retries a call until it gets an answer, so every
  call is keyed by its ``transaction_id``. The same id with the same request answers the
  first answer again, byte for byte, and moves nothing. The same id asking for something
  else is refused ``duplicate_conflict`` (nothing moves, the first call stands).
* **Debit** takes a stake. Refused, in this order: by player protection (``unknown_player``,
  ``self_excluded``, ``session_limit``, ``no_session``, ``geo_blocked``, ``loss_limit``;
  see ``rules.compliance``); ``transaction_rolled_back`` when a rollback of this very id
  came first (the aggregator gave up on it; a late debit must not take money the player
  will never see settled); ``invalid`` when its round belongs to another player, game or
  currency; ``round_closed``; ``unknown_game`` / ``game_not_certified`` (the game registry:
  the game must hold a valid certification for the player's jurisdiction);
  ``insufficient_funds``, answered with the current balance.
* **Credit** pays a win (zero closes a lost round) and is never refused for protection
  reasons: money owed is paid. Refused when it cannot be matched: ``invalid`` (another
  player or currency) or ``round_closed``. ``round_closed: true`` on a credit closes the
  round. A credit for a round in which no debit was taken (yet) is answered
  ``retry_later`` and **not** stored as the transaction's answer: the debit may still be on
  its way, and the aggregator's retry is decided on its merits.
* **Rollback** undoes a debit named by ``reference_transaction_id`` and is never refused for
  protection reasons either. A rollback of a debit Croupier never saw is recorded (a
  tombstone, the player's) and answered ``ok`` with nothing moved, so that player's
  debit, should it arrive late, is refused; another player's debit with that id is not
  (no player can block another's). A rollback of a refused debit, or of one already
  rolled back, moves nothing and is ``ok``. A rollback once the round has been credited is
  refused ``rollback_after_credit`` (the win would stay paid on a stake given back); one
  whose amount, currency or player differs from the debit's is ``invalid``.
* **Answers that do not stick** (``retry_later``) are answered for that call only: nothing
  is remembered for its transaction id, nothing moves.

This module keeps the state of one batch's calls in memory (``Wallet``), so a batch can
be decided in order, call after call, and then written in one database transaction. It
does no I/O: the caller loads the transactions and rounds the batch touches, the
balances (locked, so they are the ledger's), and asks protection and the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from rules.decimals import MONEY_CONTEXT
from schemas.casino import CasinoCall, Credit, Debit, Rollback
from schemas.outbound import ReasonCode

Moves = Literal["debit", "credit", "rollback"]


@dataclass
class KnownTx:
    """A transaction id already answered (stored, or decided earlier in this batch)."""

    transaction_id: str
    type: str
    player_id: str
    round_id: str
    amount: Decimal
    request_hash: str
    status: Literal["ok", "rejected"]
    moved: bool
    reference: str | None = None
    answer: str | None = None  # the JSON first answered, once known
    currency: str = ""  # the call's currency


@dataclass
class Round:
    round_id: str
    player_id: str
    game_id: str
    currency: str
    opened_at: datetime
    credited: bool = False
    closed: bool = False
    dirty: bool = False  # changed by this batch: the caller writes it back
    new: bool = False


@dataclass(frozen=True)
class Verdict:
    """What one call does: refused with ``error``, or ``ok`` moving ``moves`` (or nothing)."""

    status: Literal["ok", "rejected"]
    error: ReasonCode | None = None
    detail: str = ""
    moves: Moves | None = None
    duplicate_of: KnownTx | None = None  # a retry: answer the first answer again

    @property
    def conflict(self) -> bool:
        return self.error is ReasonCode.DUPLICATE_CONFLICT

    @property
    def sticks(self) -> bool:
        """Whether this is the transaction id's answer (stored, answered to every retry)."""
        return self.error is not ReasonCode.RETRY_LATER and not self.conflict


def _refused(reason: ReasonCode, detail: str) -> Verdict:
    return Verdict("rejected", reason, detail)


# Asked of the caller for a debit: player protection, then the game registry.
Protection = Callable[[Debit], ReasonCode | None]
Certified = Callable[[Debit], ReasonCode | None]


@dataclass
class Wallet:
    """One batch's view of the wallets it touches; ``decide`` calls in arrival order."""

    balances: dict[str, Decimal]
    known: dict[str, KnownTx] = field(default_factory=dict)
    rounds: dict[str, Round] = field(default_factory=dict)
    # (debit id, player id) -> the player's rollback that named it (stored or decided in
    # this batch): a tombstone blocks its own player's late debit, no one else's
    rollbacks: dict[tuple[str, str], KnownTx] = field(default_factory=dict)

    def balance(self, player_id: str) -> Decimal:
        return self.balances.get(player_id, Decimal(0))

    def decide(
        self,
        call: CasinoCall,
        request_hash: str,
        at: datetime,
        *,
        protection: Protection,
        certified: Certified,
    ) -> Verdict:
        """Decide ``call`` against the state so far and apply it to that state."""
        prior = self.known.get(call.transaction_id)
        if prior is not None:
            if prior.request_hash == request_hash:
                return Verdict(prior.status, duplicate_of=prior)
            return _refused(
                ReasonCode.DUPLICATE_CONFLICT,
                f"transaction {call.transaction_id} was first a {prior.type} of "
                f"{prior.amount} in round {prior.round_id}",
            )
        match call:
            case Debit():
                verdict = self._debit(call, at, protection, certified)
            case Credit():
                verdict = self._credit(call)
            case Rollback():
                verdict = self._rollback(call)
        if verdict.sticks:
            self._remember(call, request_hash, verdict)
        return verdict

    # -- the three calls ------------------------------------------------------------------

    def _debit(
        self, call: Debit, at: datetime, protection: Protection, certified: Certified
    ) -> Verdict:
        refused = protection(call)
        if refused is not None:
            return _refused(refused, "player protection")
        tombstone = self.rollbacks.get((call.transaction_id, call.player_id))
        if tombstone is not None:
            return _refused(
                ReasonCode.TRANSACTION_ROLLED_BACK,
                f"rollback {tombstone.transaction_id} came first",
            )
        rnd = self.rounds.get(call.round_id)
        if rnd is not None:
            if (rnd.player_id, rnd.game_id, rnd.currency) != (
                call.player_id, call.game_id, call.currency
            ):  # fmt: skip
                return _refused(
                    ReasonCode.INVALID,
                    f"round {call.round_id} is {rnd.player_id}'s {rnd.game_id} in {rnd.currency}",
                )
            if rnd.closed:
                return _refused(ReasonCode.ROUND_CLOSED, f"round {call.round_id} is closed")
        refused = certified(call)
        if refused is not None:
            return _refused(refused, f"game {call.game_id}")
        balance = self.balance(call.player_id)
        if balance < call.amount:
            return _refused(ReasonCode.INSUFFICIENT_FUNDS, f"balance {balance}")
        self.balances[call.player_id] = MONEY_CONTEXT.subtract(balance, call.amount)
        if rnd is None:
            self.rounds[call.round_id] = Round(
                call.round_id, call.player_id, call.game_id, call.currency, at,
                dirty=True, new=True,
            )  # fmt: skip
        return Verdict("ok", moves="debit")

    def _credit(self, call: Credit) -> Verdict:
        rnd = self.rounds.get(call.round_id)
        if rnd is None:
            return _refused(
                ReasonCode.RETRY_LATER,
                f"no debit taken in {call.round_id} yet: retry once its debit is answered",
            )
        if (rnd.player_id, rnd.currency) != (call.player_id, call.currency):
            return _refused(
                ReasonCode.INVALID, f"round {call.round_id} is {rnd.player_id}'s in {rnd.currency}"
            )
        if rnd.closed:
            return _refused(ReasonCode.ROUND_CLOSED, f"round {call.round_id} is closed")
        self.balances[call.player_id] = MONEY_CONTEXT.add(self.balance(call.player_id), call.amount)
        rnd.credited = True
        rnd.closed = rnd.closed or call.round_closed
        rnd.dirty = True
        return Verdict("ok", moves="credit")

    def _rollback(self, call: Rollback) -> Verdict:
        debit = self.known.get(call.reference_transaction_id)
        if debit is None:
            return Verdict("ok", detail="unknown transaction: recorded, nothing moved")
        if debit.type != "debit":
            return _refused(
                ReasonCode.INVALID,
                f"{call.reference_transaction_id} is a {debit.type}, not a debit",
            )
        if (debit.player_id, debit.amount, debit.currency or call.currency) != (
            call.player_id, call.amount, call.currency
        ):  # fmt: skip
            return _refused(
                ReasonCode.INVALID,
                f"{call.reference_transaction_id} was {debit.player_id}'s debit of "
                f"{debit.amount} {debit.currency}",
            )
        if not debit.moved or (call.reference_transaction_id, call.player_id) in self.rollbacks:
            return Verdict("ok", detail="nothing to give back")
        rnd = self.rounds.get(debit.round_id)
        if rnd is not None and rnd.credited:
            return _refused(
                ReasonCode.ROLLBACK_AFTER_CREDIT, f"round {debit.round_id} was already credited"
            )
        self.balances[call.player_id] = MONEY_CONTEXT.add(
            self.balance(call.player_id), debit.amount
        )
        return Verdict("ok", moves="rollback")

    def _remember(self, call: CasinoCall, request_hash: str, verdict: Verdict) -> None:
        tx = KnownTx(
            call.transaction_id, call.type, call.player_id, call.round_id, call.amount,
            request_hash, verdict.status, moved=verdict.moves is not None,
            reference=call.reference_transaction_id if isinstance(call, Rollback) else None,
            currency=call.currency,
        )  # fmt: skip
        self.known[call.transaction_id] = tx
        if isinstance(call, Rollback) and verdict.status == "ok":
            self.rollbacks.setdefault((call.reference_transaction_id, call.player_id), tx)
