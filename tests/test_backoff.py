"""Retry delays: exponential growth, the cap, jitter bounds and determinism."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenreconcile.backoff import (
    exponential_delay,
    hashed_jitter,
    retry_delay,
    toolstack_delay,
    unit_hash,
)
from xenreconcile.models import Backoff

NO_JITTER = Backoff(initial=10.0, multiplier=2.0, max=600.0, jitter=0.0)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0), (6, 320.0), (7, 600.0), (8, 600.0), (60, 600.0)],
    ids=["first", "second", "third", "fourth", "sixth", "capped", "past-cap", "far-past-cap"],
)
def test_delay_grows_exponentially_up_to_max(attempts: int, expected: float) -> None:
    assert retry_delay("web", attempts, NO_JITTER) == pytest.approx(expected)


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert retry_delay("web", 100_000, NO_JITTER) == pytest.approx(600.0)


def test_zero_attempts_is_treated_as_the_first_failure() -> None:
    assert retry_delay("web", 0, NO_JITTER) == retry_delay("web", 1, NO_JITTER)


def test_multiplier_one_gives_a_constant_delay() -> None:
    flat = Backoff(initial=7.0, multiplier=1.0, max=600.0, jitter=0.0)
    assert [retry_delay("web", n, flat) for n in (1, 2, 5)] == [7.0, 7.0, 7.0]


BACKOFFS = st.builds(
    Backoff,
    initial=st.floats(min_value=0.1, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=5.0),
    max=st.floats(min_value=0.1, max_value=10_000.0),
    jitter=st.floats(min_value=0.0, max_value=60.0),
)


@given(
    name=st.text(min_size=1, max_size=20),
    attempts=st.integers(min_value=1, max_value=200),
    backoff=BACKOFFS,
)
def test_jitter_stays_within_bounds(name: str, attempts: int, backoff: Backoff) -> None:
    base = retry_delay(name, attempts, dataclasses.replace(backoff, jitter=0.0))
    delay = retry_delay(name, attempts, backoff)
    expected = min(backoff.initial * backoff.multiplier ** (attempts - 1), backoff.max)
    assert base == pytest.approx(expected, rel=1e-9)
    assert base <= delay <= base + backoff.jitter + 1e-9


def test_same_name_and_attempt_give_the_same_delay_whatever_the_global_random() -> None:
    first = retry_delay("web", 3, Backoff())
    random.seed(1)
    second = retry_delay("web", 3, Backoff())
    random.seed(99)
    third = retry_delay("web", 3, Backoff())
    assert first == second == third


def test_jitter_differs_between_guests_and_attempts() -> None:
    # Guests that failed together must not all retry at the same instant.
    by_name = {round(retry_delay(f"guest{i}", 1, Backoff()), 6) for i in range(20)}
    by_attempt = {round(retry_delay("web", n, Backoff()) % 1, 6) for n in range(8, 28)}
    assert len(by_name) > 15
    assert len(by_attempt) > 15


def test_jitter_spreads_over_its_whole_range() -> None:
    values = [unit_hash(f"g{i}", 1) for i in range(2000)]
    assert min(values) < 0.02
    assert max(values) > 0.98
    assert 0.45 < sum(values) / len(values) < 0.55


def test_retry_delay_combines_the_exponential_delay_and_the_guests_jitter() -> None:
    jitter_only = hashed_jitter("web", 2, 5.0)
    assert 0.0 <= jitter_only <= 5.0
    assert retry_delay("web", 2, Backoff()) == pytest.approx(20.0 + jitter_only)


def test_negative_jitter_is_treated_as_none() -> None:
    negative = Backoff(jitter=-3.0)
    assert retry_delay("web", 1, negative) == pytest.approx(10.0)


# --- the one formula, and both of its callers --------------------------------------------


def formula(attempt: int, initial: float, multiplier: float, cap: float) -> float:
    """min(initial * multiplier**(n-1), cap), as the docs state it, n at least 1."""
    return min(initial * multiplier ** (max(1, attempt) - 1), cap)


@given(
    attempt=st.integers(min_value=-3, max_value=60),
    initial=st.floats(min_value=0.1, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=5.0),
    cap=st.floats(min_value=0.1, max_value=10_000.0),
)
def test_exponential_delay_is_the_stated_formula(
    attempt: int, initial: float, multiplier: float, cap: float
) -> None:
    assert exponential_delay(attempt, initial, multiplier, cap) == pytest.approx(
        formula(attempt, initial, multiplier, cap), rel=1e-12
    )


@given(
    name=st.text(min_size=1, max_size=20),
    attempts=st.integers(min_value=0, max_value=200),
    backoff=BACKOFFS,
)
def test_create_retries_use_the_formula_plus_the_jitter(
    name: str, attempts: int, backoff: Backoff
) -> None:
    n = max(1, attempts)
    expected = exponential_delay(n, backoff.initial, backoff.multiplier, backoff.max)
    expected += hashed_jitter(name, n, backoff.jitter)
    assert retry_delay(name, attempts, backoff) == expected


@pytest.mark.parametrize(
    ("failures", "cap", "expected"),
    [
        (0, 30, 1.0),
        (1, 30, 1.0),
        (2, 30, 2.0),
        (3, 30, 4.0),
        (5, 30, 16.0),
        (6, 30, 30.0),
        (10_000, 30, 30.0),
        (1, 0.2, 1.0),
        (3, 0.2, 1.0),
    ],
)
def test_listing_retries_use_the_formula_from_one_second(
    failures: int, cap: float, expected: float
) -> None:
    assert toolstack_delay(failures, cap) == expected
    assert toolstack_delay(failures, cap) == exponential_delay(failures, 1.0, 2.0, max(1.0, cap))


def test_the_planner_and_the_daemon_import_without_a_retry_library() -> None:
    # tenacity costs half a second of start-up in a slow Dom0 for one line of arithmetic.
    code = (
        "import sys, xenreconcile.planner, xenreconcile.daemon;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tenacity'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
