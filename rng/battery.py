"""The statistical battery a test lab runs on the generator, at 99% confidence (alpha 0.01).

Six classic tests (Knuth, TAOCP vol. 2, 3.3.2; all among those the GLI standards name) run
on four streams: the raw output (bytes, read as bits, nibbles or big-endian 32-bit words as
each test needs) and the scaled output ``below(n)`` for a die (6), a European roulette
wheel (37) and a deck (52), where a fault in the scaling would show even if the raw bytes
are fine. Chi-square p-values are upper-tail; normal ones (runs, serial correlation) are
two-sided. Adjacent chi-square cells are merged until each expects at least five.

Multiple testing. With 24 tests at alpha 0.01, a perfect generator would fail at least one
about one run in five. As labs do, a test that fails is run once more on a fresh sample of
its stream (one second sample per stream, shared by its retests), and only a test that
fails twice fails the battery. Per test the false-alarm rate is alpha**2 = 1e-4, for the
whole battery at most 0.24%; a real defect, whose p-values are orders of magnitude below
alpha, fails both times. Both p-values are reported. (Bonferroni, alpha/24 per test, would
give a 1% false-alarm rate per battery and less power.)

P-values are computed with the standard library (``math.erfc`` and a regularised
incomplete gamma function), so the battery needs nothing the lab cannot read.
"""

from __future__ import annotations

import math
import operator
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from itertools import pairwise

from rng.certify import module_hash
from rng.generator import ByteSource, CertifiedRng

ALPHA = 0.01
DEFAULT_SAMPLES = 200_000
"""Outputs per stream: 32-bit words of raw output (800 kB), or draws of each ``below(n)``."""
SCALED = (6, 37, 52)
MIN_EXPECTED = 5.0
POKER_HAND = 5

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 100_000


@dataclass(frozen=True)
class Stat:
    """One run of one test: its statistic, the p-value, and how it was computed."""

    statistic: float
    p_value: float
    detail: str


@dataclass(frozen=True)
class Result:
    """The verdict of one test on one stream, with the re-test if the first run failed."""

    name: str
    stream: str
    statistic: float
    p_value: float
    passed: bool
    detail: str
    retest: Stat | None = None


@dataclass(frozen=True)
class Report:
    """The battery's findings, readable as a lab report or as JSON."""

    results: tuple[Result, ...]
    alpha: float
    samples: int
    build: str
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.passed]

    def render(self) -> str:
        head = (
            f"{'stream':<9} {'test':<18} {'statistic':>12} {'p-value':>9} "
            f"{'retest p':>9}  {'result':<6}  detail"
        )
        lines = [
            "RNG statistical battery",
            f"module     rng/generator.py  sha256 {self.build}",
            f"confidence {1 - self.alpha:.0%} (alpha {self.alpha}); a failed test is re-run"
            " once on a fresh sample and fails only if it fails again",
            f"samples    {self.samples:,} per stream; {self.seconds:.1f} s",
            "",
            head,
            "-" * len(head),
        ]
        for r in self.results:
            retest = "" if r.retest is None else _p(r.retest.p_value)
            verdict = "PASS" if r.passed else "FAIL"
            lines.append(
                f"{r.stream:<9} {r.name:<18} {r.statistic:12.4f} {_p(r.p_value):>9} "
                f"{retest:>9}  {verdict:<6}  {r.detail}"
            )
        passed = sum(r.passed for r in self.results)
        overall = "PASS" if self.passed else "FAIL"
        lines += ["", f"RESULT: {overall} ({passed} of {len(self.results)} tests passed)"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "module": "rng/generator.py",
            "sha256": self.build,
            "alpha": self.alpha,
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "passed": self.passed,
            "results": [
                {
                    "name": r.name,
                    "stream": r.stream,
                    "statistic": _finite(r.statistic),
                    "p_value": r.p_value,
                    "passed": r.passed,
                    "detail": r.detail,
                    "retest": None
                    if r.retest is None
                    else {
                        "statistic": _finite(r.retest.statistic),
                        "p_value": r.retest.p_value,
                        "detail": r.retest.detail,
                    },
                }
                for r in self.results
            ],
        }


def _p(p: float) -> str:
    # A defect's p-value is far below what four decimals can show.
    return f"{p:.4f}" if p >= 1e-4 or p == 0 else f"{p:.1e}"


def _finite(x: float) -> float | None:
    # JSON has no infinity; a degenerate sample (all bits equal) has an infinite statistic.
    return x if math.isfinite(x) else None


# --- distributions -----------------------------------------------------------------------


def gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x): the chi-square tail (Numerical Recipes 6.2)."""
    if a <= 0:
        msg = f"gamma_q needs a > 0, got {a}"
        raise ValueError(msg)
    if x <= 0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        # Series for the lower function P converges fast here; Q = 1 - P is not small.
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_ITER):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                return max(0.0, 1.0 - total * math.exp(log_front))
    else:
        # Continued fraction for Q (modified Lentz): accurate deep in the tail.
        b = x + 1 - a
        c = 1 / _TINY
        d = 1 / b
        h = d
        for i in range(1, _MAX_ITER):
            an = -i * (i - a)
            b += 2
            d = an * d + b
            d = _TINY if abs(d) < _TINY else d
            c = b + an / c
            c = _TINY if abs(c) < _TINY else c
            d = 1 / d
            delta = d * c
            h *= delta
            if abs(delta - 1) < _EPS:
                return math.exp(log_front) * h
    msg = f"gamma_q({a}, {x}) did not converge"
    raise ArithmeticError(msg)


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X chi-square with ``df`` degrees of freedom."""
    return gamma_q(df / 2, statistic / 2)


def normal_two_sided(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2))


def chi_square(observed: Sequence[int], probs: Sequence[float]) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom, merging cells that expect fewer than five.

    Cells merge with their right neighbours; a short remainder at the end joins the last
    full cell, so every cell of the test expects at least ``MIN_EXPECTED``.
    """
    total = sum(observed)
    cells: list[tuple[int, float]] = []
    got, p = 0, 0.0
    for o, q in zip(observed, probs, strict=True):
        got, p = got + o, p + q
        if p * total >= MIN_EXPECTED:
            cells.append((got, p))
            got, p = 0, 0.0
    if got or p:
        if not cells:
            msg = f"too few observations ({total}) for a chi-square test"
            raise ValueError(msg)
        last_got, last_p = cells.pop()
        cells.append((last_got + got, last_p + p))
    if len(cells) < 2:
        msg = f"too few observations ({total}) for a chi-square test"
        raise ValueError(msg)
    statistic = sum((o - total * q) ** 2 / (total * q) for o, q in cells)
    return statistic, len(cells) - 1


def _chi_stat(observed: Sequence[int], probs: Sequence[float], what: str) -> Stat:
    statistic, df = chi_square(observed, probs)
    return Stat(statistic, chi2_sf(statistic, df), f"{what}, df {df}")


@cache
def _stirling2_table(n_max: int, k_max: int) -> tuple[tuple[int, ...], ...]:
    """Stirling numbers of the second kind S(n, k), n <= n_max, k <= k_max: the ways to
    split n items into k non-empty sets. Exact integers, so tail probabilities stay exact."""
    rows = [(1,) + (0,) * k_max]
    for _ in range(n_max):
        prev = rows[-1]
        rows.append((0, *(j * prev[j] + prev[j - 1] for j in range(1, k_max + 1))))
    return tuple(rows)


def _falling(d: int, r: int) -> int:
    return math.prod(range(d - r + 1, d + 1))


# --- the tests: each a pure function of a sample -------------------------------------------


def frequency(values: Sequence[int], k: int) -> Stat:
    """Chi-square frequency: are the ``k`` values equally frequent?"""
    counts = Counter(values)
    if any(not 0 <= v < k for v in counts):
        msg = f"frequency test of {k} cells got a value outside [0, {k})"
        raise ValueError(msg)
    return _chi_stat([counts[v] for v in range(k)], [1 / k] * k, f"{k} cells, n {len(values)}")


def runs(ones: int, zeros: int, n_runs: int, what: str) -> Stat:
    """Wald-Wolfowitz: too few runs means clustering, too many means alternation."""
    n = ones + zeros
    if ones == 0 or zeros == 0:
        return Stat(math.inf, 0.0, f"{what}: all {n} on one side")
    two = 2 * ones * zeros
    mean = two / n + 1
    var = two * (two - n) / (n * n * (n - 1))
    z = (n_runs - mean) / math.sqrt(var)
    return Stat(z, normal_two_sided(z), f"{what}, {n_runs} runs (expected {mean:.0f})")


def bit_runs(data: bytes) -> Stat:
    """Runs of equal bits over the whole byte string, most significant bit first."""
    n = 8 * len(data)
    x = int.from_bytes(data, "big")
    ones = x.bit_count()
    # Bit i of x ^ (x >> 1) is set where bits i and i + 1 differ: one per run boundary.
    changes = ((x ^ (x >> 1)) & ((1 << (n - 1)) - 1)).bit_count()
    return runs(ones, n - ones, changes + 1, f"{n} bits")


def median_runs(values: Sequence[int], k: int) -> Stat:
    """Runs above and below the median of [0, k); a value equal to it (k odd) is dropped."""
    mid2 = k - 1  # twice the median, to stay in integers
    sides = [2 * v > mid2 for v in values if 2 * v != mid2]
    ones = sum(sides)
    n_runs = 1 + sum(a != b for a, b in pairwise(sides))
    return runs(ones, len(sides) - ones, n_runs, f"{len(sides)} above/below median")


def serial_correlation(values: Sequence[int]) -> Stat:
    """Lag-1 autocorrelation r; under independence z = (r + 1/n) * sqrt(n) is standard normal.

    Sums are exact integers, so 32-bit words lose nothing to rounding before the division.
    """
    n = len(values)
    s = sum(values)
    sq = sum(v * v for v in values)
    lag = sum(map(operator.mul, values[:-1], values[1:]))
    # n^2 * sum((x_i - m)(x_{i+1} - m)) and n * sum((x_i - m)^2), m the mean.
    num = n * n * lag - n * s * (2 * s - values[0] - values[-1]) + (n - 1) * s * s
    den = n * (n * sq - s * s)
    # A constant stream is perfectly predictable from one value to the next.
    r = num / den if den else 1.0
    z = (r + 1 / n) * math.sqrt(n)
    return Stat(z, normal_two_sided(z), f"r {r:+.5f}, n {n}")


def gap(values: Sequence[int], lo: int, hi: int, k: int) -> Stat:
    """Knuth's gap test: lengths of the gaps between values in [lo, hi) out of [0, k).

    Gap lengths 0 .. t - 1 and "t or more" are geometric with p = (hi - lo) / k; t is
    chosen so about 1% of gaps are that long.
    """
    if not 0 < hi - lo < k:
        msg = f"gap test needs a proper sub-range of [0, {k}), got [{lo}, {hi})"
        raise ValueError(msg)
    p = Fraction(hi - lo, k)
    t = math.ceil(math.log(0.01) / math.log(1 - p))
    counts = [0] * (t + 1)
    r = 0
    for v in values:
        if lo <= v < hi:
            counts[min(r, t)] += 1
            r = 0
        else:
            r += 1
    probs = [float(p * (1 - p) ** j) for j in range(t)]
    probs.append(float((1 - p) ** t))
    return _chi_stat(counts, probs, f"[{lo}, {hi}) of {k}, {sum(counts)} gaps")


def poker(digits: Sequence[int], d: int, hand: int = POKER_HAND) -> Stat:
    """Knuth's poker test: how many distinct values in hands of ``hand`` digits base ``d``."""
    hands = len(digits) // hand
    counts = Counter(len(set(digits[i : i + hand])) for i in range(0, hands * hand, hand))
    s = _stirling2_table(hand, hand)[hand]
    probs = [float(Fraction(_falling(d, r) * s[r], d**hand)) for r in range(1, hand + 1)]
    return _chi_stat([counts[r] for r in range(1, hand + 1)], probs, f"{hands} hands base {d}")


def coupon(digits: Sequence[int], d: int) -> Stat:
    """Knuth's coupon collector test: how many digits it takes to see all ``d`` values.

    Lengths d .. t - 1 and "t or more", t = ceil(d (ln d + 4)) so the tail holds a few
    percent; the last, incomplete segment is dropped.
    """
    t = math.ceil(d * (math.log(d) + 4))
    full = (1 << d) - 1
    counts = [0] * (t - d + 1)
    seen = length = 0
    for v in digits:
        seen |= 1 << v
        length += 1
        if seen == full:
            counts[min(length, t) - d] += 1
            seen = length = 0
    fact = math.factorial(d)
    s = _stirling2_table(t - 1, d)
    probs = [float(Fraction(fact * s[r - 1][d - 1], d**r)) for r in range(d, t)]
    probs.append(float(1 - Fraction(fact * s[t - 1][d], d ** (t - 1))))
    return _chi_stat(counts, probs, f"{sum(counts)} segments base {d}")


# --- streams and the battery -----------------------------------------------------------

_HIGH = bytes(b >> 4 for b in range(256))
_LOW = bytes(b & 15 for b in range(256))


def nibbles(data: bytes) -> bytes:
    """Each byte as two base-16 digits, high first."""
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(_HIGH)
    out[1::2] = data.translate(_LOW)
    return bytes(out)


def words(data: bytes) -> tuple[int, ...]:
    """Big-endian 32-bit words, as ``raw_u32`` reads them."""
    return struct.unpack(f">{len(data) // 4}I", data[: len(data) // 4 * 4])


@dataclass(frozen=True)
class _Check:
    name: str
    run: Callable[[Sequence[int]], Stat]


@dataclass(frozen=True)
class _Stream:
    name: str
    draw: Callable[[CertifiedRng, int], Sequence[int]]
    checks: tuple[_Check, ...]


def _raw_checks() -> tuple[_Check, ...]:
    # The raw sample is the byte string itself; each test reads it at its own grain.
    def raw(f: Callable[[bytes], Stat]) -> Callable[[Sequence[int]], Stat]:
        return lambda sample: f(bytes(sample))

    return (
        _Check("frequency", raw(lambda b: frequency(b, 256))),
        _Check("runs", raw(bit_runs)),
        _Check("serial correlation", raw(lambda b: serial_correlation(words(b)))),
        _Check("gap", raw(lambda b: gap(b, 0, 32, 256))),
        _Check("poker", raw(lambda b: poker(nibbles(b), 16))),
        _Check("coupon collector", raw(lambda b: coupon(nibbles(b), 16))),
    )


def _scaled_checks(k: int) -> tuple[_Check, ...]:
    return (
        _Check("frequency", lambda v: frequency(v, k)),
        _Check("runs", lambda v: median_runs(v, k)),
        _Check("serial correlation", serial_correlation),
        _Check("gap", lambda v: gap(v, 0, max(1, k // 4), k)),
        _Check("poker", lambda v: poker(v, k)),
        _Check("coupon collector", lambda v: coupon(v, k)),
    )


def _draw_below(k: int) -> Callable[[CertifiedRng, int], Sequence[int]]:
    return lambda rng, n: [rng.below(k) for _ in range(n)]


def streams() -> tuple[_Stream, ...]:
    """What the battery tests: raw output, then each scaled range."""
    raw = _Stream("raw", lambda rng, n: rng.raw_bytes(4 * n), _raw_checks())
    scaled = tuple(_Stream(f"below({k})", _draw_below(k), _scaled_checks(k)) for k in SCALED)
    return (raw, *scaled)


def run_battery(
    source: ByteSource | None = None,
    samples: int = DEFAULT_SAMPLES,
    alpha: float = ALPHA,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Run every test on every stream of a generator over ``source`` (the OS by default);
    ``on_progress(done, total)`` after each test of a stream."""
    started = time.perf_counter()
    rng = CertifiedRng(source)
    results: list[Result] = []
    every = streams()
    total = sum(len(s.checks) for s in every)
    for stream in every:
        sample = stream.draw(rng, samples)
        fresh: Sequence[int] | None = None  # one second sample per stream, drawn if needed
        for check in stream.checks:
            first = check.run(sample)
            retest = None
            if first.p_value < alpha:
                fresh = stream.draw(rng, samples) if fresh is None else fresh
                retest = check.run(fresh)
            passed = first.p_value >= alpha or (retest is not None and retest.p_value >= alpha)
            results.append(
                Result(
                    name=check.name,
                    stream=stream.name,
                    statistic=first.statistic,
                    p_value=first.p_value,
                    passed=passed,
                    detail=first.detail,
                    retest=retest,
                )
            )
            if on_progress is not None:
                on_progress(len(results), total)
    return Report(
        results=tuple(results),
        alpha=alpha,
        samples=samples,
        build=module_hash(),
        seconds=time.perf_counter() - started,
    )


def main() -> int:
    """``python -m rng.battery``: the battery on the OS CSPRNG, as a lab report."""
    report = run_battery()
    print(report.render())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
