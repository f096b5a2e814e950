"""The `restart` keys: global and per guest, checked and handed to the planner."""

from __future__ import annotations

import pytest

from xenreconcile.config import ConfigError, parse_config


def test_restart_defaults_to_always_and_a_guest_inherits_it() -> None:
    settings = parse_config("guests: {web: {order: 10}}\n", "test.yaml").planner_settings()
    assert (settings.restart, settings.restart_of("web"), settings.restart_of("db")) == (
        "always",
        "always",
        "always",
    )


def test_a_guest_s_own_restart_wins_over_the_global_one() -> None:
    text = "restart: never\nguests: {web: {restart: on-failure}}\n"
    settings = parse_config(text, "test.yaml").planner_settings()
    assert (settings.restart_of("web"), settings.restart_of("db")) == ("on-failure", "never")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("restart: sometimes\n", "restart"),
        ("guests: {web: {restart: sometimes}}\n", "guests.web.restart"),
    ],
)
def test_a_bad_restart_value_is_an_error_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test.yaml")
    assert key in str(raised.value)
    assert "always, on-failure, never" in str(raised.value)
