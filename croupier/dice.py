"""The Croupier Dice table: the house's own game, played through the same seamless wallet.

It stands where a game aggregator stands: it sends a ``debit`` to ``casino``, waits for
the wallet's answer on ``casino-results``, and only after an ``ok`` rolls the die with the
certified generator (``rng/``) and sends the ``credit`` (zero for a loss) that closes the
round. Both calls carry the SHA-256 of the generator build (``rng_build``), which the
wallet stores with the transactions for audit.

The table refuses to open (``DiceRefused``, exit 2 on the command line) unless the
generator's code is the build its manifest certifies (``rng.certify.verify``) and that
build is the one a certification of ``croupier-dice`` in the game registry names, with
the RTP ``rules/dice.py`` pays. A code change to the generator therefore stops the game
until it is recertified.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from config.games import load_catalogue
from config.kafka import librdkafka_conf, make_producer
from config.settings import Settings
from croupier.arguments import stake
from rng.certify import RngNotCertified, load_manifest, verify
from rng.generator import CertifiedRng
from rules import dice
from rules.games import Catalogue


class DiceRefused(RuntimeError):
    """The table may not open: the generator or the certification does not hold."""


@dataclass(frozen=True)
class Bet:
    """One round's bet; a stake that is not a positive amount in minor units is refused."""

    player_id: str
    stake: Decimal
    pick: int
    currency: str = "EUR"

    def __post_init__(self) -> None:
        stake(self.stake, self.currency)  # InputError, a ValueError, says what is wrong


@dataclass
class Played:
    """One round: the debit's answer, and when it was ok, the roll, the win and the credit's."""

    round_id: str
    bet: Bet
    debit: dict[str, Any]
    roll: int | None = None
    win: Decimal | None = None
    credit: dict[str, Any] | None = None

    @property
    def completed(self) -> bool:
        return self.credit is not None and self.credit["status"] == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id, "player_id": self.bet.player_id,
            "stake": str(self.bet.stake), "currency": self.bet.currency, "pick": self.bet.pick,
            "roll": self.roll, "win": None if self.win is None else str(self.win),
            "debit": self.debit, "credit": self.credit,
        }  # fmt: skip


def certified_build(catalogue: Catalogue, manifest_path: Path | None = None) -> str:
    """The generator's build hash, once the manifest and the registry both vouch for it."""
    try:
        build = verify(load_manifest(manifest_path))
    except RngNotCertified as exc:
        raise DiceRefused(str(exc)) from exc
    game = catalogue.get(dice.GAME_ID)
    if game is None:
        msg = f"{dice.GAME_ID} is not in the game registry"
        raise DiceRefused(msg)
    named = {c.build_hash: c for c in game.certifications}
    if build not in named:
        msg = (
            f"the generator build {build} is not the build any certification of "
            f"{dice.GAME_ID} names ({', '.join(sorted(named)) or 'none'}): recertify the game"
        )
        raise DiceRefused(msg)
    if named[build].rtp != dice.RTP_PERCENT:
        msg = (
            f"{dice.GAME_ID} pays an RTP of {dice.RTP_PERCENT}%, certificate "
            f"{named[build].certificate_id} states {named[build].rtp}%"
        )
        raise DiceRefused(msg)
    return build


class Answers:
    """Reads ``casino-results`` from where it ends now: answers to calls sent after."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Consumer, TopicPartition

        topic = settings.topic("casino-results")
        self.consumer = Consumer({
            **librdkafka_conf(settings),
            "group.id": f"croupier-dice-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        })  # fmt: skip
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None or not meta.partitions:
            self.consumer.close()
            msg = f"topic {topic} is not there ({meta.error}); run `croupier topics create`"
            raise DiceRefused(msg)
        ends = []
        for p in sorted(meta.partitions):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends.append(TopicPartition(topic, p, high))
        self.consumer.assign(ends)
        self.seen: dict[str, dict[str, Any]] = {}

    def wait(self, ids: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The answer to each of ``ids`` (the first one published), as far as they came."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while not wanted <= self.seen.keys() and time.monotonic() < deadline:
            left = deadline - time.monotonic()
            for msg in self.consumer.consume(num_messages=1000, timeout=max(0.0, min(left, 0.5))):
                if msg.error():
                    continue
                try:
                    answer = json.loads(msg.value() or b"{}")
                except ValueError:
                    continue  # not an answer of the wallet's: nobody's call to match
                if isinstance(answer, dict):
                    self.seen.setdefault(str(answer.get("transaction_id")), answer)
        return {i: self.seen[i] for i in ids if i in self.seen}

    def close(self) -> None:
        self.consumer.close()


class DiceTable:
    """Plays rounds of Croupier Dice through the wallet (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalogue: Catalogue | None = None,
        manifest_path: Path | None = None,
    ) -> None:
        catalogue = catalogue or load_catalogue(settings.games_catalogue)
        self.build = certified_build(catalogue, manifest_path)
        self.rng = CertifiedRng()
        self.settings = settings

    def _call(self, kind: str, tx: str, round_id: str, bet: Bet, amount: Decimal,
              **extra: Any) -> bytes:  # fmt: skip
        return json.dumps({
            "type": kind, "transaction_id": tx, "round_id": round_id, "game_id": dice.GAME_ID,
            "player_id": bet.player_id, "amount": str(amount), "currency": bet.currency,
            "timestamp": datetime.now(UTC).isoformat(), "rng_build": self.build, **extra,
        }).encode()  # fmt: skip

    def play(self, bets: Sequence[Bet], *, timeout: float = 60.0) -> list[Played]:
        """Play one round per bet (all rounds at once); each round as far as it got."""
        topic = self.settings.topic("casino")
        producer = make_producer(self.settings)
        answers = Answers(self.settings)
        try:
            rounds = [(f"dice-{uuid.uuid4().hex[:16]}", b) for b in bets]
            for round_id, b in rounds:
                value = self._call("debit", f"{round_id}-debit", round_id, b, b.stake)
                producer.produce(topic, key=b.player_id.encode(), value=value)
            producer.flush(30)
            debits = answers.wait([f"{r}-debit" for r, _ in rounds], timeout)
            played = []
            for round_id, b in rounds:
                debit = debits.get(f"{round_id}-debit")
                if debit is None:
                    debit = {"status": "unanswered", "error": f"no answer in {timeout:g}s"}
                played.append(Played(round_id, b, debit))
            for p in played:
                if p.debit["status"] != "ok":
                    continue
                # The die is rolled only once the stake is taken.
                p.roll = self.rng.between(1, dice.FACES)
                p.win = dice.win(p.bet.stake, p.bet.pick, p.roll, p.bet.currency)
                value = self._call("credit", f"{p.round_id}-credit", p.round_id, p.bet, p.win,
                                   round_closed=True)  # fmt: skip
                producer.produce(topic, key=p.bet.player_id.encode(), value=value)
            producer.flush(30)
            # A win is owed: a credit without an answer is sent again (the wallet answers a
            # retry with its first answer) until it is answered or the attempts run out.
            for attempt in range(3):
                owed = [p for p in played if p.roll is not None and p.credit is None]
                if attempt:
                    for p in owed:
                        assert p.win is not None
                        value = self._call("credit", f"{p.round_id}-credit", p.round_id,
                                           p.bet, p.win, round_closed=True)  # fmt: skip
                        producer.produce(topic, key=p.bet.player_id.encode(), value=value)
                    producer.flush(30)
                credits = answers.wait([f"{p.round_id}-credit" for p in owed], timeout)
                for p in owed:
                    p.credit = credits.get(f"{p.round_id}-credit")
            # A debit never answered may still have taken the stake: roll it back, as an
            # aggregator does (the wallet records the rollback and refuses a late debit).
            for p in played:
                if p.debit["status"] == "unanswered":
                    value = self._call("rollback", f"{p.round_id}-rollback", p.round_id, p.bet,
                                       p.bet.stake,
                                       reference_transaction_id=f"{p.round_id}-debit")  # fmt: skip
                    producer.produce(topic, key=p.bet.player_id.encode(), value=value)
            producer.flush(30)
            return played
        finally:
            answers.close()
