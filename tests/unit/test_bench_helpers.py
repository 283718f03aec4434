"""The benchmarks' pure helpers: the memory verdict, the stage marginals, the rate list."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bets  # noqa: E402  (bench/ holds scripts, not a package)
import memory  # noqa: E402
import stages  # noqa: E402


def test_slope_is_the_least_squares_fit() -> None:
    assert memory.slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert memory.slope([0, 1, 2, 3], [5, 4, 6, 5]) == pytest.approx(0.2)
    assert memory.slope([1], [9]) == 0.0
    assert memory.slope([2, 2], [1, 5]) == 0.0


def samples(rss: list[float], every: int = 50_000) -> list[dict[str, Any]]:
    return [{"bets": i * every, "worker_rss_mb": r} for i, r in enumerate(rss)]


def test_memory_that_wobbles_after_the_warm_up_is_flat() -> None:
    # The warm-up (up to 100k bets) grows; after it, noise around 300 MB.
    v = memory.verdict(samples([200, 280, 300, 301, 299, 300, 300.5]), 100_000, 1.0)
    assert v["flat"] is True
    assert v["rss_after_warmup_mb"] == 300
    assert v["growth_mb"] == 0.5
    assert v["samples_after_warmup"] == 5
    assert abs(v["slope_mb_per_100k_bets"]) < 1.0


def test_memory_that_keeps_growing_is_not_flat() -> None:
    # 2 MB more every 50k bets: 4 MB per 100k bets.
    v = memory.verdict(samples([300 + 2 * i for i in range(10)]), 100_000, 1.0)
    assert v["flat"] is False
    assert v["slope_mb_per_100k_bets"] == pytest.approx(4.0)
    assert v["growth_mb"] == 14.0


def test_no_verdict_without_two_samples_after_the_warm_up() -> None:
    v = memory.verdict(samples([200, 250, 260]), 100_000, 1.0)
    assert v["flat"] is None
    assert v["samples_after_warmup"] == 1


def test_rss_of_this_process_is_read_from_proc() -> None:
    assert memory.rss_mb(os.getpid()) > 1.0


def test_marginal_cost_is_the_difference_to_the_stage_before() -> None:
    rows: list[dict[str, Any]] = [
        {"ms_per_1000_bets": 100.0},
        {"ms_per_1000_bets": 150.0},
        {"ms_per_1000_bets": 140.5},
    ]
    stages.marginal(rows)
    assert [r["marginal_ms_per_1000"] for r in rows] == [None, 50.0, -9.5]


def test_rates_are_positive_numbers_separated_by_commas() -> None:
    assert bets.rate_list("100,500, 1000") == [100.0, 500.0, 1000.0]
    for bad in ("", "100,x", "0,100", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            bets.rate_list(bad)


def test_the_harness_account_is_read_back_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "harness.log"
    stats = '{"batches": 4, "bets": 2000, "decide_s": 0.3, "sink_s": 1.2, "publish_s": 0.05}'
    log.write_text(f"{stages.HARNESS_READY}\nnoise\n{stages.HARNESS_STATS}{stats}\n")
    assert stages.harness_stats(log) == {"harness": {
        "batches": 4, "bets": 2000, "bets_per_batch": 500.0, "decide_ms_per_1000": 150.0,
        "sink_ms_per_1000": 600.0, "publish_ms_per_1000": 25.0,
    }}  # fmt: skip
    log.write_text(f"{stages.HARNESS_READY}\n")  # killed before it could say
    assert stages.harness_stats(log) == {}
