"""Retry delays: the one capped exponential formula, for failed creates and for
failed `xl list` calls.

The delay after the n-th consecutive failure is
``min(initial * multiplier**(n-1), max)`` (`exponential_delay`, the only place
that formula is written). A failed create adds ``jitter(name, n)`` in
``[0, backoff.jitter]``, derived from a hash of the guest name and the attempt
number instead of the global random generator, so the planner stays pure: the
same failure always schedules the same retry, and guests that failed together
(a Dom0 boot storm) still spread out. A failed `xl list` is retried after 1, 2,
4 ... seconds, capped at the pass interval.

Nothing here sleeps or retries: the daemon owns the schedule, the planner only
stores the resulting ``next_retry``. This module imports only the standard
library, so neither the planner nor the daemon pays for a retry library.
"""

from __future__ import annotations

import hashlib

from .models import Backoff

# blake2b gives 8 bytes -> an integer in [0, 2**64); dividing maps it onto [0, 1].
_HASH_BYTES = 8
_HASH_SPAN = float(2 ** (8 * _HASH_BYTES) - 1)

# `xl list` retries: 1 s after the first failure, doubling up to the interval.
TOOLSTACK_FIRST_DELAY = 1.0
TOOLSTACK_MULTIPLIER = 2.0


def exponential_delay(attempt: int, initial: float, multiplier: float, cap: float) -> float:
    """Given the number of consecutive failures (below 1 counts as 1), the first
    delay, the growth factor and the cap, return
    ``min(initial * multiplier**(attempt-1), cap)`` seconds."""
    exponent = max(1, attempt) - 1
    try:
        grown = initial * multiplier**exponent
    except OverflowError:  # a float power past 1e308: long past any cap
        return cap
    return min(grown, cap)


def unit_hash(key: str, attempt: int) -> float:
    """Given a key and an attempt number, return a stable number in [0, 1]."""
    digest = hashlib.blake2b(
        f"{key}\0{attempt}".encode(), digest_size=_HASH_BYTES, person=b"xr-jitter"
    ).digest()
    return int.from_bytes(digest, "big") / _HASH_SPAN


def hashed_jitter(name: str, attempt: int, jitter: float) -> float:
    """Given a guest name, an attempt number and the jitter bound (negative counts
    as 0), return the guest's pseudo-random share of ``[0, jitter]`` seconds."""
    return max(0.0, jitter) * unit_hash(name, attempt)


def retry_delay(name: str, attempts: int, backoff: Backoff) -> float:
    """Given a guest name, its number of consecutive failures (1 after the first)
    and the backoff settings, return the seconds to wait before the next create."""
    attempt = max(1, attempts)
    delay = exponential_delay(attempt, backoff.initial, backoff.multiplier, backoff.max)
    return delay + hashed_jitter(name, attempt, backoff.jitter)


def toolstack_delay(failures: int, cap: float) -> float:
    """Given the number of failed `xl list` calls in a row and the longest wait
    (the pass interval; below 1 s counts as 1 s), return the seconds before the
    next one: 1, 2, 4 ... capped."""
    return exponential_delay(
        failures, TOOLSTACK_FIRST_DELAY, TOOLSTACK_MULTIPLIER, max(TOOLSTACK_FIRST_DELAY, cap)
    )
