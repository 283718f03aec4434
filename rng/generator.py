"""The certified random number generator: the one module a test lab reads, tests and hashes.

Every game outcome (a card, a die, a roulette pocket, a reel stop) comes from
``CertifiedRng``. The module is deliberately small, standard-library only and imports
nothing else from this code base, so that the lab can review all of it and so that its
SHA-256, recorded in ``rng/manifest.json``, pins exactly the code that was certified:
changing a single byte of this file requires recertification.

Entropy. Bytes come from the operating system's CSPRNG (``os.urandom``: ``getrandom(2)`` on
Linux, ``BCryptGenRandom`` on Windows). The class keeps no state and no buffer of its own:
seeding, reseeding and fork safety are the kernel's, and there is nothing in this process's
memory from which a future outcome could be read or replayed.

Scaling. ``below(n)`` turns bytes into an integer in ``[0, n)`` with no bias, using only
integer arithmetic (no floats anywhere). It draws the fewest whole bytes that can express
``n - 1``, ``w = ceil(bit_length(n - 1) / 8)``, read as a big-endian integer ``x`` uniform
in ``[0, 256**w)``. Let ``limit = 256**w - (256**w mod n)``, the largest multiple of ``n``
not above ``256**w``. If ``x >= limit`` the draw is rejected and fresh bytes are drawn;
otherwise the result is ``x mod n``. An accepted ``x`` is uniform over ``[0, limit)`` and
each of the ``n`` residues is hit by exactly ``limit / n`` of those values, so every result
has probability exactly ``1 / n``. Taking ``x mod n`` without the rejection would favour
the low residues (the modulo bias). For ``n`` above ``2**24`` this is the classic "reject
above the largest multiple of n under 2**32" on a 32-bit word. Fewer than half of the
values are ever rejected, so a draw needs fewer than two attempts on average.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, MutableSequence, Sequence
from typing import TypeVar

T = TypeVar("T")

ByteSource = Callable[[int], bytes]
"""Returns exactly the number of random bytes asked for; ``os.urandom`` in production."""


class RngSourceError(RuntimeError):
    """The byte source did not return the bytes asked for; no outcome may be produced."""


class CertifiedRng:
    """Uniform integers, choices and shuffles for game outcomes, from the OS CSPRNG.

    ``source`` exists so tests can feed known bytes; production uses the default.
    """

    __slots__ = ("_source",)

    def __init__(self, source: ByteSource | None = None) -> None:
        self._source: ByteSource = os.urandom if source is None else source

    def raw_bytes(self, n: int) -> bytes:
        """``n`` bytes straight from the source: the raw output a lab tests."""
        n = operator.index(n)
        if n < 0:
            msg = f"cannot draw a negative number of bytes: {n}"
            raise ValueError(msg)
        data = self._source(n)
        # A short or malformed read must stop the game: fewer bytes would mean smaller numbers.
        if not isinstance(data, bytes) or len(data) != n:
            got = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
            msg = f"byte source returned {got} for a request of {n} bytes"
            raise RngSourceError(msg)
        return data

    def raw_u32(self) -> int:
        """A uniform integer in ``[0, 2**32)``: four raw bytes, big-endian."""
        return int.from_bytes(self.raw_bytes(4), "big")

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``, by rejection sampling (see the module docstring)."""
        n = operator.index(n)
        if n < 1:
            msg = f"below(n) needs n >= 1, got {n}"
            raise ValueError(msg)
        if n == 1:
            return 0
        width = ((n - 1).bit_length() + 7) // 8
        span = 1 << (8 * width)
        limit = span - span % n
        while True:
            x = int.from_bytes(self.raw_bytes(width), "big")
            if x < limit:
                return x % n

    def between(self, lo: int, hi: int) -> int:
        """A uniform integer in ``[lo, hi]``, both ends included (a die is ``between(1, 6)``)."""
        lo = operator.index(lo)
        hi = operator.index(hi)
        if lo > hi:
            msg = f"between(lo, hi) needs lo <= hi, got {lo} > {hi}"
            raise ValueError(msg)
        return lo + self.below(hi - lo + 1)

    def shuffle(self, items: MutableSequence[T]) -> None:
        """Shuffle in place, every permutation equally likely (Fisher-Yates, Durstenfeld).

        Position ``i``, from the last down to the second, swaps with a uniform position in
        ``[0, i]``: ``n!`` equally likely draw sequences, one per permutation.
        """
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def choice(self, items: Sequence[T]) -> T:
        """A uniformly chosen element of a non-empty sequence."""
        if not items:
            msg = "cannot choose from an empty sequence"
            raise IndexError(msg)
        return items[self.below(len(items))]
