"""The certified RNG: exact uniformity of its scaling, its certificate, and the lab battery."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from itertools import accumulate, product
from pathlib import Path

import pytest

from rng import battery
from rng.battery import Report, run_battery
from rng.certify import (
    GENERATOR_PATH,
    MANIFEST_PATH,
    RngNotCertified,
    certified_rng,
    load_manifest,
    module_hash,
    verify,
)
from rng.generator import ByteSource, CertifiedRng, RngSourceError

ROOT = Path(__file__).resolve().parents[2]


class Exhausted(Exception):
    """The scripted source was asked for more bytes than the script holds."""


def script(*chunks: bytes) -> ByteSource:
    """A source that returns the given chunks in order, each for a request of its length."""
    pending = list(chunks)

    def source(n: int) -> bytes:
        if not pending:
            raise Exhausted
        chunk = pending.pop(0)
        assert len(chunk) == n, f"asked for {n} bytes, script has {len(chunk)}"
        return chunk

    return source


def first_draws(n: int) -> Counter[int | None]:
    """below(n) for every possible first draw: how often each result comes out.

    ``None`` counts the draws that were rejected (the generator asked for more bytes).
    """
    width = ((n - 1).bit_length() + 7) // 8
    outcomes: Counter[int | None] = Counter()
    for x in range(256**width):
        try:
            outcomes[CertifiedRng(script(x.to_bytes(width, "big"))).below(n)] += 1
        except Exhausted:
            outcomes[None] += 1
    return outcomes


# --- the generator ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 10, 37, 52, 100, 128, 129, 200, 255, 256])
def test_below_maps_every_byte_value_to_each_result_equally_often(n: int) -> None:
    outcomes = first_draws(n)
    rejected = outcomes.pop(None, 0)
    assert set(outcomes) == set(range(n))
    assert set(outcomes.values()) == {256 // n}
    # Exactly the values at or above the largest multiple of n are redrawn.
    assert rejected == 256 % n


@pytest.mark.parametrize("n", [257, 1000, 65_535, 65_536])
def test_below_is_exactly_uniform_over_every_two_byte_value(n: int) -> None:
    outcomes = first_draws(n)
    rejected = outcomes.pop(None, 0)
    assert set(outcomes) == set(range(n))
    assert set(outcomes.values()) == {65_536 // n}
    assert rejected == 65_536 % n


@pytest.mark.parametrize("n", [6, 37, 52])
def test_below_on_a_source_cycling_through_every_byte_gives_equal_counts(n: int) -> None:
    cycle = 0

    def cycling(size: int) -> bytes:
        nonlocal cycle
        cycle += 1
        return bytes([(cycle - 1) % 256])

    rng = CertifiedRng(cycling)
    accepted = 3 * (256 - 256 % n)  # three cycles, less the rejected values of each
    counts = Counter(rng.below(n) for _ in range(accepted))
    assert counts == dict.fromkeys(range(n), accepted // n)
    assert cycle == 3 * 256 - 256 % n  # stopped on the last accepted byte of the third cycle


def test_without_rejection_the_same_bytes_would_favour_low_results() -> None:
    # Why the rejection exists: 256 byte values cannot split evenly into 6 faces.
    naive = Counter(x % 6 for x in range(256))
    assert naive[0] == naive[1] == 43
    assert naive[5] == 42


def test_below_rejects_words_at_or_above_the_largest_multiple_of_n() -> None:
    n = 3 << 30  # 2**32 mod n == 2**30: the top quarter of 32-bit words is redrawn
    limit = n.to_bytes(4, "big")
    assert CertifiedRng(script(b"\xff\xff\xff\xff", limit, b"\x00\x00\x00\x07")).below(n) == 7
    assert CertifiedRng(script(b"\xbf\xff\xff\xff")).below(n) == 0xBFFFFFFF


def test_below_and_between_edges() -> None:
    nothing = script()
    assert CertifiedRng(nothing).below(1) == 0
    assert CertifiedRng(nothing).between(5, 5) == 5
    with pytest.raises(ValueError):
        CertifiedRng(nothing).below(0)
    with pytest.raises(ValueError):
        CertifiedRng(nothing).between(2, 1)
    with pytest.raises(TypeError):
        CertifiedRng(nothing).below(6.0)  # type: ignore[arg-type]  # floats are refused


def test_between_includes_both_ends_uniformly() -> None:
    faces = Counter(CertifiedRng(script(bytes([x]))).between(1, 6) for x in range(252))
    assert faces == dict.fromkeys(range(1, 7), 42)


def test_raw_output_is_the_source_bytes() -> None:
    rng = CertifiedRng(script(b"\x01\x02\x03\x04", b"\xab\xcd"))
    assert rng.raw_u32() == 0x01020304
    assert rng.raw_bytes(2) == b"\xab\xcd"


def test_a_short_read_stops_the_generator() -> None:
    with pytest.raises(RngSourceError, match="request of 4 bytes"):
        CertifiedRng(lambda n: b"\x00" * (n - 1)).raw_u32()


def test_shuffle_is_a_permutation() -> None:
    rng = CertifiedRng()
    for size in range(30):
        items = list(range(size))
        rng.shuffle(items)
        assert sorted(items) == list(range(size))


def test_shuffle_reaches_every_permutation_of_three() -> None:
    rng = CertifiedRng()
    seen = set()
    for _ in range(600):  # misses one of the six with probability below 1e-46
        items = ["a", "b", "c"]
        rng.shuffle(items)
        seen.add(tuple(items))
    assert len(seen) == 6


def test_each_draw_sequence_gives_a_different_permutation() -> None:
    # Fisher-Yates draws below(3) then below(2): six equally likely sequences, six orders.
    orders = set()
    for first, second in product(range(3), range(2)):
        items = ["a", "b", "c"]
        CertifiedRng(script(bytes([first]), bytes([second]))).shuffle(items)
        orders.add(tuple(items))
    assert len(orders) == 6


def test_choice() -> None:
    assert CertifiedRng(script(b"\x02")).choice("xyz") == "z"
    with pytest.raises(IndexError):
        CertifiedRng().choice([])


# --- the certificate --------------------------------------------------------------------


def test_shipped_manifest_certifies_the_shipped_generator() -> None:
    """Fails on any edit of rng/generator.py until the build is recertified."""
    manifest = load_manifest()
    assert (ROOT / manifest.module).resolve() == GENERATOR_PATH.resolve()
    assert module_hash() == manifest.sha256
    assert verify() == manifest.sha256
    rng, build = certified_rng()
    assert isinstance(rng, CertifiedRng)
    assert build == manifest.sha256


def test_verify_refuses_a_modified_generator(tmp_path: Path) -> None:
    copy = tmp_path / "generator.py"
    shutil.copyfile(GENERATOR_PATH, copy)
    assert verify(module_path=copy) == load_manifest().sha256
    with copy.open("a") as f:
        f.write("# a harmless comment is still a change\n")
    changed = module_hash(copy)
    with pytest.raises(RngNotCertified, match="recertification") as raised:
        verify(module_path=copy)
    assert changed in str(raised.value)
    assert load_manifest().sha256 in str(raised.value)


def test_verify_checks_against_the_given_manifest(tmp_path: Path) -> None:
    manifest = load_manifest().model_copy(update={"sha256": "0" * 64})
    with pytest.raises(RngNotCertified):
        verify(manifest)
    edited = tmp_path / "manifest.json"
    edited.write_text(MANIFEST_PATH.read_text().replace(load_manifest().sha256, "1" * 64))
    with pytest.raises(RngNotCertified):
        verify(load_manifest(edited))


# --- the battery's arithmetic ---------------------------------------------------------


def test_p_values_at_known_quantiles() -> None:
    # 99th percentiles of chi-square (df 1, df 255) and of |Z|.
    assert battery.chi2_sf(6.634897, 1) == pytest.approx(0.01, rel=1e-5)
    assert battery.chi2_sf(310.4574, 255) == pytest.approx(0.01, rel=1e-4)
    assert battery.normal_two_sided(2.5758293) == pytest.approx(0.01, rel=1e-6)
    assert battery.chi2_sf(0.0, 3) == 1.0


def test_poker_and_coupon_probabilities_match_enumeration() -> None:
    d = 4
    hands = Counter(len(set(h)) for h in product(range(d), repeat=battery.POKER_HAND))
    table = battery._stirling2_table(5, 5)[5]
    for r in range(1, 6):
        assert Fraction(battery._falling(d, r) * table[r], d**5) == Fraction(hands[r], d**5)
    # Coupon: the chance that the first r draws are the first to show all d values.
    d, r = 3, 6
    firsts = sum(
        len(set(seq)) == d and len(set(seq[:-1])) == d - 1 for seq in product(range(d), repeat=r)
    )
    s = battery._stirling2_table(r - 1, d - 1)
    assert Fraction(firsts, d**r) == Fraction(6 * s[r - 1][d - 1], d**r)


# --- the battery on good and bad generators ---------------------------------------------


def failing(report: Report) -> set[tuple[str, str]]:
    return {(r.stream, r.name) for r in report.failed()}


def buffered(block: Callable[[int], bytes], size: int = 1 << 16) -> ByteSource:
    """Serves requests from blocks made ``size`` bytes at a time, so a slow pure-Python
    generator costs the battery little per one-byte draw."""
    buffer, pos = b"", 0

    def source(n: int) -> bytes:
        nonlocal buffer, pos
        while len(buffer) - pos < n:
            buffer, pos = buffer[pos:] + block(size), 0
        pos += n
        return buffer[pos - n : pos]

    return source


def low_skewed_source(bias: float, seed: int) -> ByteSource:
    """Bytes below 128 come up with probability 1/2 + bias instead of 1/2.

    A fraction 2 * bias of the bytes is redrawn from the low half: a loaded generator that
    still produces every value.
    """
    rnd = random.Random(seed)

    def block(n: int) -> bytes:
        data = bytearray(rnd.randbytes(n))
        for i in range(n):
            if rnd.random() < 2 * bias:
                data[i] &= 0x7F
        return bytes(data)

    return buffered(block)


def walk_source(step: int, seed: int) -> ByteSource:
    """Each byte a small random step from the previous one: uniform in the long run, but
    every output tells you roughly the next."""
    rnd = random.Random(seed)
    state = rnd.randrange(256)
    width = 2 * step + 1

    def block(n: int) -> bytes:
        nonlocal state
        walk = list(accumulate((b % width - step for b in rnd.randbytes(n)), initial=state))
        state = walk[-1] % 256
        return bytes(v % 256 for v in walk[1:])

    return buffered(block)


def lcg_source(seed: int) -> ByteSource:
    """The low byte of a textbook 32-bit LCG: its low bits cycle with periods 2, 4, ... 256."""
    state = seed

    def block(n: int) -> bytes:
        nonlocal state
        out = bytearray(n)
        for i in range(n):
            state = (1_664_525 * state + 1_013_904_223) % 2**32
            out[i] = state & 0xFF
        return bytes(out)

    return buffered(block)


@pytest.fixture(scope="module")
def csprng_report() -> Report:
    return run_battery()


def test_battery_passes_on_the_os_csprng(csprng_report: Report) -> None:
    """False alarm rate about 0.25% (see rng.battery): a failure here prints the report."""
    assert csprng_report.passed, csprng_report.render()
    assert len(csprng_report.results) == 24
    assert {r.stream for r in csprng_report.results} == {
        "raw",
        "below(6)",
        "below(37)",
        "below(52)",
    }


def test_report_renders_and_serialises(csprng_report: Report) -> None:
    text = csprng_report.render()
    assert module_hash() in text
    assert "RESULT: PASS" in text
    data = json.loads(json.dumps(csprng_report.to_json(), allow_nan=False))
    assert data["passed"] is True
    assert len(data["results"]) == 24


def test_battery_fails_a_generator_loaded_toward_low_values() -> None:
    report = run_battery(low_skewed_source(bias=0.01, seed=1))
    assert not report.passed
    assert ("raw", "frequency") in failing(report), report.render()


# Gross defects need no full sample (their p-values underflow): a quarter keeps the suite fast.
QUARTER = battery.DEFAULT_SAMPLES // 4


def test_battery_fails_a_serially_correlated_generator() -> None:
    report = run_battery(walk_source(step=16, seed=2), samples=QUARTER)
    expected = {("raw", "serial correlation"), ("below(52)", "serial correlation")}
    assert expected <= failing(report), report.render()


def test_battery_fails_a_short_period_lcg() -> None:
    report = run_battery(lcg_source(seed=3), samples=QUARTER)
    # Its bytes are perfectly equidistributed (frequency passes); the pattern does not pass.
    expected = {("raw", "poker"), ("raw", "coupon collector"), ("below(6)", "gap")}
    assert expected <= failing(report), report.render()
