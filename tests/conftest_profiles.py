"""Hypothesis profiles for the suite.

`pytest --hypothesis-profile deep tests/test_fuzz_deep.py` runs the deep fuzz:
100,000 inputs per test that does not fix its own `max_examples`. The default
profile is left as hypothesis ships it (100 per test) so CI stays fast.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

DEEP_EXAMPLES = 100_000

settings.register_profile(
    "deep",
    max_examples=DEEP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
