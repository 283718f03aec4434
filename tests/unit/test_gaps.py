"""Which offsets a batch lacks, judged against the progress PostgreSQL recorded."""

from __future__ import annotations

from streams.gaps import missing_ranges


def test_a_batch_that_starts_past_the_recorded_progress_lacks_the_offsets_between() -> None:
    assert missing_ranges({0: [6, 7, 8]}, {0: 3}) == {0: (3, 6)}


def test_a_hole_inside_a_batch_is_found_too() -> None:
    assert missing_ranges({1: [10, 11, 14, 15]}, {1: 10}) == {1: (12, 14)}


def test_redelivered_and_contiguous_batches_lack_nothing() -> None:
    assert missing_ranges({0: [3, 4, 5], 1: [7, 8]}, {0: 5, 1: 7}) == {}
    assert missing_ranges({0: [1, 2]}, {0: 9}) == {}  # all of it processed before
    assert missing_ranges({2: [40, 41]}, {}) == {}  # nothing recorded yet: a new group
