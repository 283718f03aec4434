"""A global view's contents as its changelog is read, and its own writes never regressing."""

from __future__ import annotations

import json

from streams.view import ViewState, encode_key, encode_value


def record(key: str, value: dict[str, object] | None) -> tuple[bytes, bytes | None]:
    return encode_key(key), None if value is None else encode_value(value)


def test_records_are_applied_in_order_and_a_tombstone_removes_its_key() -> None:
    state = ViewState()
    state.apply(*record("e-1", {"v": 1}))
    state.apply(*record("e-2", {"v": 1}))
    state.apply(*record("e-1", {"v": 2}))
    assert state.data == {"e-1": {"v": 2}, "e-2": {"v": 1}}
    state.apply(*record("e-2", None))
    assert state.data == {"e-1": {"v": 2}}


def test_the_format_is_faust_s_json_key_and_compact_json_value() -> None:
    key, value = record("demo-m1", {"event_id": "demo-m1", "markets": {}})
    assert key == b'"demo-m1"'
    assert json.loads(value or b"") == {"event_id": "demo-m1", "markets": {}}


def test_an_own_write_is_seen_at_once_and_older_records_of_its_key_are_skipped() -> None:
    state = ViewState()
    state.apply(*record("e-1", {"v": 1}))
    state.set("e-1", {"v": 3})
    assert state.data["e-1"] == {"v": 3}
    # Still on its way: the reader meets the records before it, which must not win.
    state.apply(*record("e-1", {"v": 2}))
    assert state.data["e-1"] == {"v": 3}
    state.apply(*record("e-2", {"v": 9}))  # other keys are applied as usual
    assert state.data["e-2"] == {"v": 9}
    state.apply(*record("e-1", {"v": 3}))  # its own record: the key is the log's again
    state.apply(*record("e-1", {"v": 4}))  # a later writer (after a rebalance) wins
    assert state.data["e-1"] == {"v": 4}
    assert state.pending == {}


def test_changes_are_taken_once_in_the_order_they_were_set() -> None:
    state = ViewState()
    state.set("e-1", {"v": 1})
    state.set("e-2", {"v": 1})
    state.set("e-1", {"v": 2})
    assert state.take() == [record("e-1", {"v": 1}), record("e-2", {"v": 1}),
                            record("e-1", {"v": 2})]  # fmt: skip
    assert state.take() == []
    # Only the last write of e-1 is pending: the reader skips the first when it comes back.
    state.apply(*record("e-1", {"v": 1}))
    assert state.data["e-1"] == {"v": 2}


def test_records_that_are_not_json_objects_are_skipped_not_fatal() -> None:
    state = ViewState()
    for key, value in [(None, b"{}"), (b"not json", b"{}"), (b'"k"', b"[1, 2]"),
                       (b"7", b"{}"), (b'"k"', b"\xff\xfe")]:  # fmt: skip
        state.apply(key, value)
    assert state.data == {}
