"""The schema is the one place a config key is written: every field of a section
is a key, the planner's settings are config keys with the config's defaults, and
the pure core loads neither YAML nor the config loader."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from xenreconcile import models
from xenreconcile.schema import Backoff, Config, GuestOverride, Kind, PlannerSettings, options


@pytest.mark.parametrize("section", [Config, Backoff, GuestOverride])
def test_every_field_of_a_section_is_a_key(section: type[object]) -> None:
    fields = {f.name for f in dataclasses.fields(section)} - {"source"}  # type: ignore[arg-type]
    assert {option.key for option in options(section)} == fields


def test_nested_sections_name_their_dataclass() -> None:
    by_key = {option.key: option for option in options(Config)}
    assert by_key["backoff"].spec.section is Backoff
    assert by_key["guests"].spec.section is GuestOverride
    assert [child.key for child in by_key["guests"].children] == [
        "order",
        "hold",
        "restart",
        "on_host_shutdown",
        "pool_host",
    ]
    assert {option.spec.kind for option in options(Config)} >= {Kind.SECTION, Kind.GUESTS}


def test_planner_settings_are_config_keys_with_the_config_defaults() -> None:
    config_fields = {f.name: f.type for f in dataclasses.fields(Config)}
    for f in dataclasses.fields(PlannerSettings):
        assert config_fields[f.name] == f.type, f.name
    assert PlannerSettings() == Config().planner_settings()


def test_models_names_the_schema_classes() -> None:
    assert models.Backoff is Backoff
    assert models.GuestOverride is GuestOverride
    assert models.PlannerSettings is PlannerSettings


def test_the_planner_imports_neither_yaml_nor_the_config_loader() -> None:
    code = (
        "import sys, xenreconcile.planner; "
        "print(sorted(m for m in ('yaml', 'xenreconcile.config') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
