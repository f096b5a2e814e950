"""Retry delays for failed creates, computed with tenacity's wait strategies.

The delay after the n-th consecutive failure is
``min(initial * multiplier**(n-1), max) + jitter(name, n)`` where the jitter lies
in ``[0, backoff.jitter]``. The jitter is derived from a hash of the guest name
and the attempt number instead of the global random generator, so the planner
stays pure: the same failure always schedules the same retry, and guests that
failed together (a Dom0 boot storm) still spread out.

Nothing here sleeps or retries: the daemon owns the schedule, the planner only
stores the resulting ``next_retry``.
"""

from __future__ import annotations

import hashlib

from tenacity import RetryCallState, Retrying, wait_exponential
from tenacity.wait import wait_base

from .models import Backoff

# blake2b gives 8 bytes -> an integer in [0, 2**64); dividing maps it onto [0, 1].
_HASH_BYTES = 8
_HASH_SPAN = float(2 ** (8 * _HASH_BYTES) - 1)


class wait_hashed_jitter(wait_base):  # lower-case like tenacity's own strategies
    """A tenacity wait of a pseudo-random amount in ``[0, jitter]`` that depends
    only on ``key`` and the attempt number of the retry state it is given."""

    def __init__(self, key: str, jitter: float) -> None:
        self.key = key
        self.jitter = max(0.0, jitter)

    def __call__(self, retry_state: RetryCallState) -> float:
        """Given a retry state, return this key's jitter for its attempt number."""
        return self.jitter * unit_hash(self.key, retry_state.attempt_number)


def unit_hash(key: str, attempt: int) -> float:
    """Given a key and an attempt number, return a stable number in [0, 1]."""
    digest = hashlib.blake2b(
        f"{key}\0{attempt}".encode(), digest_size=_HASH_BYTES, person=b"xr-jitter"
    ).digest()
    return int.from_bytes(digest, "big") / _HASH_SPAN


def wait_strategy(name: str, backoff: Backoff) -> wait_base:
    """Given a guest name and the backoff settings, return the tenacity wait
    strategy: capped exponential growth plus the guest's deterministic jitter."""
    exponential = wait_exponential(
        multiplier=backoff.initial, exp_base=backoff.multiplier, max=backoff.max
    )
    return exponential + wait_hashed_jitter(name, backoff.jitter)


def retry_delay(name: str, attempts: int, backoff: Backoff) -> float:
    """Given a guest name, its number of consecutive failures (1 after the first)
    and the backoff settings, return the seconds to wait before the next create."""
    state = RetryCallState(retry_object=_NEVER_RUN, fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempts)
    return float(wait_strategy(name, backoff)(state))


# Only a carrier for RetryCallState; it never calls anything, sleeps or retries.
_NEVER_RUN = Retrying()
