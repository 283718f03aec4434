"""The producer kit without a broker: the partitioning rule and the Publisher's checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from croupier.client import PublishError, key_of, partition_for, topic_of
from croupier.client.publisher import prepare
from schemas.partitioning import murmur2
from schemas.topics import INBOUND_TOPICS
from streams import metrics

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's own vectors.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

DEPOSIT = {"type": "deposit", "payment_id": "pay-1", "player_id": "p-1", "amount": "50.00",
           "currency": "EUR", "timestamp": "2026-11-24T18:00:00Z"}  # fmt: skip
BET = {"bet_id": "b-1", "player_id": "p-7", "placed_at": "2026-11-24T19:01:00Z",
       "stake": "10.00", "currency": "EUR", "odds_change": "none",
       "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home",
                       "odds": "2.10"}]}  # fmt: skip


@pytest.mark.parametrize(("data", "signed"), JAVA_MURMUR2.items())
def test_murmur2_is_the_java_clients(data: bytes, signed: int) -> None:
    assert murmur2(data) == signed % 2**32


def test_a_partition_is_the_positive_hash_modulo_the_partitions() -> None:
    assert partition_for("21", 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert partition_for(b"abc", 1) == 0
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for("p-1", 0)


def test_every_inbound_type_has_one_topic() -> None:
    assert topic_of(DEPOSIT) == "payments"
    assert topic_of(BET) == "bets"
    assert topic_of({"type": "alive"}) == "odds"
    assert topic_of({"type": "debit"}) == "casino"
    assert topic_of({"type": "geolocation"}) == "players"
    with pytest.raises(PublishError, match="no inbound message has type 'settled'"):
        topic_of({"type": "settled"})


def test_prepare_keys_by_player_event_or_producer() -> None:
    assert prepare(DEPOSIT)[:2] == ("payments", "p-1")
    assert prepare(json.dumps(BET))[:2] == ("bets", "p-7")
    odds = {"type": "bet_stop", "event_id": "m-9", "timestamp": "2026-11-24T19:45:00Z"}
    assert prepare(odds)[:2] == ("odds", "m-9")
    alive = {"type": "alive", "producer": "live", "timestamp": "2026-11-24T19:45:00Z"}
    assert prepare(alive)[:2] == ("odds", "live")
    # Python values for money and times are written as the wire wants them.
    typed = {**DEPOSIT, "amount": Decimal("5.00"), "timestamp": datetime.now(UTC)}
    *_, raw = prepare(typed)
    assert json.loads(raw)["amount"] == "5.00"
    # A model goes out as its JSON.
    model = INBOUND_TOPICS["bets"].validate_python(BET)
    assert prepare(model)[:2] == ("bets", "p-7")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({**BET, "stake": "0"}, "invalid"),
        ({**BET, "stake": "1.999"}, "invalid"),
        ({**BET, "unknown": 1}, "invalid"),
        ({**DEPOSIT, "amount": 50.0}, "invalid"),  # a float never carries money
        ({**DEPOSIT, "timestamp": object()}, "invalid"),
        ('{"type": "deposit", "type": "deposit"}', "invalid"),
        (b"\xff", "malformed_json"),
        ("[]", "invalid"),
        ("x" * 200_000, "malformed_json"),
        (json.dumps({**DEPOSIT, "pad": "x" * 200_000}), "too_large"),
    ],
)
def test_prepare_refuses_what_the_workers_would_dead_letter(message: Any, reason: str) -> None:
    with pytest.raises(PublishError) as caught:
        prepare(message)
    assert caught.value.reason == reason


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(st.dictionaries(st.sampled_from([*DEPOSIT, *BET, "type"]), JSON, max_size=8))
def test_any_json_object_is_prepared_or_refused_with_a_reason(message: dict[str, Any]) -> None:
    try:
        topic, key, raw = prepare(message)
    except PublishError as exc:
        assert exc.reason in {"invalid", "malformed_json", "too_large"}
    else:
        assert key == message.get("player_id", message.get("event_id"))
        assert INBOUND_TOPICS[topic].validate_json(raw) is not None


def count(topic: str) -> float:
    return metrics.WRONGLY_KEYED.labels(topic)._value.get()  # type: ignore[no-any-return]  # prometheus_client keeps the value private


def test_a_wrongly_keyed_message_is_counted_by_topic() -> None:
    model = INBOUND_TOPICS["bets"].validate_python(BET)
    before = count("t.bets")
    metrics.count_wrongly_keyed(
        [("t.bets", b"p-7", model), ("t.bets", b"b-1", model), ("t.bets", None, model),
         ("t.bets", b"p-7", object())]  # no rule covers it: not counted
    )  # fmt: skip
    assert count("t.bets") == before + 2
    assert key_of(model) == "p-7"
