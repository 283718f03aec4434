"""Which offsets a batch lacks, judged against the progress PostgreSQL recorded."""

from __future__ import annotations

from streams.gaps import (
    BUSY_LOOKS,
    RawEvent,
    RawMessage,
    missing_ranges,
    repair_plan,
    unique_positions,
)


def test_a_batch_that_starts_past_the_recorded_progress_lacks_the_offsets_between() -> None:
    assert missing_ranges({0: [6, 7, 8]}, {0: 3}) == {0: (3, 6)}


def test_a_hole_inside_a_batch_is_found_too() -> None:
    assert missing_ranges({1: [10, 11, 14, 15]}, {1: 10}) == {1: (12, 14)}


def test_redelivered_and_contiguous_batches_lack_nothing() -> None:
    assert missing_ranges({0: [3, 4, 5], 1: [7, 8]}, {0: 5, 1: 7}) == {}
    assert missing_ranges({0: [1, 2]}, {0: 9}) == {}  # all of it processed before
    assert missing_ranges({2: [40, 41]}, {}) == {}  # nothing recorded yet: a new group


def test_a_partition_is_read_back_only_when_seen_behind_twice_at_the_same_progress() -> None:
    behind: dict[int, tuple[int, int]] = {}
    done, committed, ends = {0: 3, 1: 10, 2: 5}, {0: 6, 1: 10}, {0: 8, 1: 10, 2: 900}
    # First look: both 0 (committed past) and 2 (messages waiting) might be in flight.
    assert repair_plan([0, 1, 2], done, committed, ends, behind, batch_max=100) == {}
    assert behind == {0: (3, 1), 2: (5, 1)}
    # Second look at the same progress: read back; a stalled one a batch at a time.
    assert repair_plan([0, 1, 2], done, committed, ends, behind, batch_max=100) == {
        0: (3, 6, "committed past it"),
        2: (5, 105, "stalled with messages waiting"),
    }
    assert behind == {}


def test_progress_that_moves_between_looks_is_left_alone() -> None:
    behind: dict[int, tuple[int, int]] = {}
    assert repair_plan([0], {0: 3}, {}, {0: 50}, behind, batch_max=10) == {}
    assert repair_plan([0], {0: 20}, {}, {0: 60}, behind, batch_max=10) == {}  # it moved
    assert repair_plan([0], {0: 60}, {}, {0: 60}, behind, batch_max=10) == {}  # caught up
    assert behind == {}


def test_a_partition_waiting_its_turn_behind_a_busy_flow_is_not_read_back_at_once() -> None:
    behind: dict[int, tuple[int, int]] = {}
    done, ends = {0: 5}, {0: 900}
    plans = [repair_plan([0], done, {}, ends, behind, 100, busy=True) for _ in range(BUSY_LOOKS)]
    assert all(p == {} for p in plans[:-1])
    # Still waiting after BUSY_LOOKS looks of a busy flow: starved, read back.
    assert plans[-1] == {0: (5, 105, "stalled with messages waiting")}
    # An idle flow with messages waiting: the consumer delivers nothing, second look.
    assert repair_plan([0], done, {}, ends, behind, 100, busy=False) == {}
    assert repair_plan([0], done, {}, ends, behind, 100, busy=False) == {
        0: (5, 105, "stalled with messages waiting")
    }
    # Commits past the progress are read back on the second look, busy or not.
    assert repair_plan([1], {1: 7}, {1: 9}, {1: 9}, behind, 100, busy=True) == {}
    assert repair_plan([1], {1: 7}, {1: 9}, {1: 9}, behind, 100, busy=True) == {
        1: (7, 9, "committed past it")
    }


def test_a_position_twice_in_a_batch_is_processed_once() -> None:
    def at(partition: int, offset: int, value: bytes) -> RawEvent:
        return RawEvent(RawMessage("casino", partition, offset, b"k", value))

    batch = [at(0, 5, b"a"), at(1, 5, b"b"), at(0, 6, b"c"), at(0, 5, b"a"), at(0, 7, b"d")]
    kept = unique_positions(batch)
    assert [(e.message.partition, e.message.offset) for e in kept] == [
        (0, 5), (1, 5), (0, 6), (0, 7),
    ]  # fmt: skip
    assert kept[0] is batch[0]
