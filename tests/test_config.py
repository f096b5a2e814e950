"""The config schema: every key, its default, and the YAML traps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xenreconcile import config
from xenreconcile.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    load_config,
    option_table,
    parse_config,
    parse_duration,
    render_sample,
)
from xenreconcile.models import Backoff, GuestOverride, PlannerSettings

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "etc" / "xenreconcile.yaml.sample"


def parse(text: str) -> Config:
    return parse_config(text, "test.yaml")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


# --- defaults and every key ---------------------------------------------------------------


def test_empty_file_gives_all_defaults() -> None:
    cfg = parse("")
    assert cfg == Config(source="test.yaml")
    assert cfg.guests_dir == "/usr/local/etc/xen/guests"
    assert cfg.xl == ("xl",)
    assert cfg.state_dir == "/var/db/xenreconcile"
    assert cfg.log_file == "/var/log/xen/xenreconcile.log"
    assert (cfg.log_format, cfg.log_level, cfg.watch) == ("logfmt", "info", "auto")
    assert (cfg.interval, cfg.xl_timeout, cfg.list_timeout) == (30.0, 120.0, 30.0)
    assert (cfg.concurrency, cfg.start_delay) == (4, 0.0)
    assert (cfg.missing_grace, cfg.stable_after, cfg.stop_timeout) == (5.0, 60.0, 15.0)
    assert cfg.notify_command == ()
    assert cfg.backoff == Backoff(10.0, 2.0, 600.0, 5.0, 0)
    assert cfg.strict_permissions is True
    assert cfg.guests == {}


def test_comment_only_file_gives_all_defaults() -> None:
    assert parse("# nothing here\n\n") == Config(source="test.yaml")


def test_every_key_is_read() -> None:
    cfg = parse(
        """
guests_dir: /etc/xen/guests/
xl: [/usr/sbin/xl, -v]
state_dir: /var/lib/xenreconcile
log_file: "-"
log_format: json
log_level: debug
interval: 1m
watch: poll
concurrency: 2
start_delay: 2.5
xl_timeout: 1h30m
list_timeout: 10s
missing_grace: 7
stable_after: 90s
stop_timeout: 0
notify_command: [/usr/local/bin/notify, --to, root]
backoff:
  initial: 1s
  multiplier: 1.5
  max: 5m
  jitter: 0
  give_up_after: 3
strict_permissions: false
guests:
  web: {order: 10, hold: true}
  db:
    order: -1
  "123": {}
"""
    )
    assert cfg.guests_dir == "/etc/xen/guests"
    assert cfg.xl == ("/usr/sbin/xl", "-v")
    assert cfg.state_dir == "/var/lib/xenreconcile"
    assert cfg.log_file == "-"
    assert (cfg.log_format, cfg.log_level, cfg.watch) == ("json", "debug", "poll")
    assert (cfg.interval, cfg.xl_timeout, cfg.list_timeout) == (60.0, 5400.0, 10.0)
    assert (cfg.concurrency, cfg.start_delay) == (2, 2.5)
    assert (cfg.missing_grace, cfg.stable_after, cfg.stop_timeout) == (7.0, 90.0, 0.0)
    assert cfg.notify_command == ("/usr/local/bin/notify", "--to", "root")
    assert cfg.backoff == Backoff(1.0, 1.5, 300.0, 0.0, 3)
    assert cfg.strict_permissions is False
    assert cfg.guests == {
        "web": GuestOverride(order=10, hold=True),
        "db": GuestOverride(order=-1),
        "123": GuestOverride(),
    }


def test_xl_as_a_string_is_the_program() -> None:
    assert parse("xl: /usr/local/sbin/xl --debug\n").xl == ("/usr/local/sbin/xl --debug",)


def test_planner_settings_carry_the_planner_keys() -> None:
    cfg = parse(
        "concurrency: 1\nstart_delay: 3\nmissing_grace: 4\nstable_after: 5\n"
        "backoff: {initial: 6}\nguests: {g: {order: 7}}\n"
    )
    assert cfg.planner_settings() == PlannerSettings(
        concurrency=1,
        start_delay=3.0,
        missing_grace=4.0,
        stable_after=5.0,
        backoff=Backoff(initial=6.0),
        guests={"g": GuestOverride(order=7)},
    )


def test_empty_sections_give_defaults() -> None:
    cfg = parse("backoff:\nguests:\nnotify_command:\n")
    assert (cfg.backoff, cfg.guests, cfg.notify_command) == (Backoff(), {}, ())


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (30.5, 30.5),
        ("30", 30.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5m", 90.0),
        ("0", 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value, "interval") == seconds


@pytest.mark.parametrize(
    "value", ["", "5 m", "5x", "m", "-5s", "-1", "30m1h", "1h1h", True, None, [], float("nan")]
)
def test_parse_duration_refuses_and_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^backoff\.max: "):
        parse_duration(value, "backoff.max")


def test_zero_interval_is_refused() -> None:
    err = error_of("interval: 0\n")
    assert (err.key, err.line) == ("interval", 1)
    assert "greater than 0" in str(err)


# --- the YAML traps -----------------------------------------------------------------------


def test_duplicate_key_names_both_lines() -> None:
    err = error_of("interval: 10\nwatch: poll\ninterval: 20\n")
    assert err.key == "interval"
    assert err.line == 3
    assert str(err) == "test.yaml, line 3: interval: duplicate key (first given on line 1)"


def test_duplicate_nested_key_is_refused() -> None:
    err = error_of("backoff:\n  max: 10\n  max: 20\n")
    assert (err.key, err.line) == ("backoff.max", 3)


def test_duplicate_guest_name_is_refused() -> None:
    err = error_of("guests:\n  web: {order: 1}\n  web: {order: 2}\n")
    assert (err.key, err.line) == ("guests.web", 3)


@pytest.mark.parametrize("word", ["no", "yes", "on", "off", "true", "Off"])
def test_yaml_boolean_for_a_string_key_says_quote_it(word: str) -> None:
    err = error_of(f"log_level: info\nlog_format: {word}\n")
    assert (err.key, err.line) == ("log_format", 2)
    assert "boolean" in err.message
    assert "quote it" in err.message


def test_quoted_word_for_a_string_key_is_a_string() -> None:
    err = error_of("log_format: 'no'\n")
    assert err.key == "log_format"
    assert "one of logfmt, json" in err.message


def test_yaml_boolean_as_a_guest_name_says_quote_it() -> None:
    err = error_of("guests:\n  no: {hold: true}\n")
    assert (err.key, err.line) == ("guests", 2)
    assert "quote it" in err.message
    assert parse("guests:\n  'no': {hold: true}\n").guests == {"no": GuestOverride(hold=True)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("010", "not a plain decimal number"),
        ("0x10", "not a plain decimal number"),
        ("1:30", "not a plain decimal number"),
        ("1_000", "not a plain decimal number"),
        ("0o10", "not a duration"),  # a string to YAML 1.1
    ],
)
def test_non_decimal_number_for_a_duration_is_refused(value: str, expected: str) -> None:
    err = error_of(f"xl_timeout: {value}\n")
    assert (err.key, err.line) == ("xl_timeout", 1)
    assert expected in err.message


def test_octal_looking_value_for_a_path_says_quote_it() -> None:
    err = error_of("xl: 0755\n")
    assert err.key == "xl"
    assert "integer" in err.message
    assert "quote it" in err.message


def test_octal_looking_int_is_refused() -> None:
    assert error_of("concurrency: 010\n").key == "concurrency"


def test_unknown_key_suggests_the_closest() -> None:
    err = error_of("interval: 5\nintervall: 10\n")
    assert (err.key, err.line) == ("intervall", 2)
    assert "did you mean 'interval'?" in err.message


def test_unknown_nested_key_suggests_the_closest() -> None:
    err = error_of("backoff:\n  maximum: 10\n")
    assert err.key == "backoff.maximum"
    assert "did you mean 'max'?" in err.message


def test_unknown_guest_key_suggests_the_closest() -> None:
    err = error_of("guests:\n  web:\n    held: true\n")
    assert (err.key, err.line) == ("guests.web.held", 3)
    assert "did you mean 'hold'?" in err.message


def test_unknown_key_without_a_close_one_lists_the_known() -> None:
    assert "known keys: guests_dir, xl" in error_of("zzzz: 1\n").message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("concurrency: 2.5\n", "concurrency", "expected an integer"),
        ("concurrency: '4'\n", "concurrency", "expected an integer"),
        ("strict_permissions: 'true'\n", "strict_permissions", "expected a boolean"),
        ("strict_permissions: 1\n", "strict_permissions", "expected a boolean"),
        ("backoff: 5\n", "backoff", "expected a mapping"),
        ("backoff:\n  multiplier: fast\n", "backoff.multiplier", "expected a number"),
        ("backoff:\n  give_up_after: 1.5\n", "backoff.give_up_after", "expected an integer"),
        ("guests: [web]\n", "guests", "expected a mapping"),
        ("guests:\n  web: 10\n", "guests.web", "expected a mapping"),
        ("guests:\n  web: {hold: 'yes'}\n", "guests.web.hold", "expected a boolean"),
        ("notify_command: /bin/mail root\n", "notify_command", "expected a list of strings"),
        ("notify_command: [/bin/x, 5]\n", "notify_command[1]", "expected a string"),
        ("xl: []\n", "xl", "empty list"),
        ("xl: {a: b}\n", "xl", "got a mapping"),
        ("interval: [1]\n", "interval", "expected a duration"),
        ("interval:\n", "interval", "has no value"),
        ("watch: fsevents\n", "watch", "one of auto, inotify, kqueue, poll"),
        ("log_level: verbose\n", "log_level", "one of debug, info, warning, error"),
        ("concurrency: 0\n", "concurrency", "at least 1"),
        ("backoff:\n  multiplier: 0.5\n", "backoff.multiplier", "at least 1"),
        ("start_delay: -1\n", "start_delay", "at least 0"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(text: str, key: str, expected: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert expected in err.message
    assert err.line is not None


@pytest.mark.parametrize("key", ["guests_dir", "state_dir", "log_file"])
def test_relative_paths_are_refused(key: str) -> None:
    err = error_of(f"{key}: var/run\n")
    assert err.key == key
    assert "absolute path" in err.message


def test_dash_is_stderr_only_for_the_log_file() -> None:
    assert parse("log_file: '-'\n").log_file == "-"
    assert error_of("state_dir: '-'\n").key == "state_dir"


def test_backoff_max_below_initial_is_refused() -> None:
    err = error_of("backoff:\n  initial: 1m\n  max: 30s\n")
    assert err.key == "backoff.max"
    assert str(err).startswith("test.yaml: backoff.max: ")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    err = error_of(text)
    assert "top level must be a mapping" in err.message
    assert err.line == 1


def test_invalid_yaml_names_the_line() -> None:
    err = error_of("interval: 5\nwatch: [poll\n")
    assert "not valid YAML" in err.message
    assert err.line is not None
    assert err.line >= 2


def test_two_documents_are_refused() -> None:
    assert "not valid YAML" in error_of("interval: 5\n---\ninterval: 6\n").message


def test_non_string_key_says_quote_it() -> None:
    err = error_of("guests:\n  123: {order: 1}\n")
    assert "quote it" in err.message


# --- every problem at once ----------------------------------------------------------------


def test_every_problem_of_a_file_is_reported() -> None:
    err = error_of(
        "intervall: 5\n"
        "concurrency: 0\n"
        "backoff:\n"
        "  max: soon\n"
        "  jitter: [1]\n"
        "guests:\n"
        "  web: {hold: maybe}\n"
        "  db: 7\n"
        "watch: poll\n"
        "watch: kqueue\n"
    )
    found = [(e.key, e.line) for e in err.errors]
    assert found == [
        ("intervall", 1),
        ("concurrency", 2),
        ("backoff.max", 4),
        ("backoff.jitter", 5),
        ("guests.web.hold", 7),
        ("guests.db", 8),
        ("watch", 10),
    ]
    assert str(err).splitlines() == [str(e) for e in err.errors]
    assert all(line.startswith("test.yaml, line ") for line in str(err).splitlines())
    assert (err.key, err.line) == ("intervall", 1)


def test_a_broken_relation_is_reported_with_the_other_problems() -> None:
    err = error_of("interval: fast\nbackoff:\n  initial: 1m\n  max: 30s\n")
    assert [e.key for e in err.errors] == ["interval", "backoff.max"]
    assert "must not be smaller than backoff.initial (60s)" in err.errors[1].message


def test_a_relation_with_an_invalid_key_is_not_checked() -> None:
    err = error_of("backoff:\n  initial: soon\n  max: 30s\n")
    assert [e.key for e in err.errors] == ["backoff.initial"]


def test_a_single_problem_is_its_own_list() -> None:
    err = error_of("interval: 0\n")
    assert len(err.errors) == 1
    assert str(err) == str(err.errors[0])
    assert str(err) == "test.yaml, line 1: interval: must be greater than 0, got 0"


# --- loading files ------------------------------------------------------------------------


def test_load_named_file(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("concurrency: 9\n")
    cfg = load_config(str(path), env={})
    assert cfg.concurrency == 9
    assert cfg.source == str(path)


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path, env={})
    assert info.value.source == path


def test_missing_default_file_gives_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    assert load_config(None, env={}) == Config()


def test_default_path_is_read_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "default.yaml"
    path.write_text("watch: kqueue\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(path))
    assert load_config(None, env={}).watch == "kqueue"
    assert DEFAULT_CONFIG_PATH == "/usr/local/etc/xenreconcile.yaml"


def test_env_var_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("concurrency: 3\n")
    assert load_config(None, env={"XENRECONCILE_CONFIG": str(path)}).concurrency == 3


def test_missing_env_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(None, env={"XENRECONCILE_CONFIG": str(tmp_path / "absent.yaml")})


def test_path_argument_wins_over_env(tmp_path: Path) -> None:
    given = tmp_path / "given.yaml"
    given.write_text("concurrency: 1\n")
    cfg = load_config(str(given), env={"XENRECONCILE_CONFIG": str(tmp_path / "absent.yaml")})
    assert cfg.concurrency == 1


def test_error_message_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("interval: 5\nbackoff:\n  max: soon\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert str(info.value).startswith(f"{path}, line 3: backoff.max: ")


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"interval: 5\nxl: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(str(path), env={})
    assert info.value.line == 2


def test_directory_as_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path), env={})


# --- the sample and the key table ---------------------------------------------------------


def test_committed_sample_is_current() -> None:
    assert SAMPLE_PATH.read_text() == render_sample(), (
        "etc/xenreconcile.yaml.sample is stale; regenerate it with "
        "`python -m xenreconcile.config --sample > etc/xenreconcile.yaml.sample`"
    )


def test_sample_is_commented_out_and_parses_to_defaults() -> None:
    sample = render_sample()
    assert parse(sample) == Config(source="test.yaml")


def test_uncommented_sample_gives_the_defaults() -> None:
    # Setting lines start "#key" or "#  key"; top-level descriptions start "# Text".
    uncommented = re.sub(r"(?m)^#(?=\S| {2})", "", render_sample())
    cfg = parse(uncommented)
    assert cfg.guests == {"web": GuestOverride()}
    assert cfg == Config(guests={"web": GuestOverride()}, source="test.yaml")


def test_sample_mentions_every_key() -> None:
    sample = render_sample()
    for key, _type, _default, description in option_table():
        leaf = key.rsplit(".", 1)[-1]
        assert re.search(rf"(?m)^# *{leaf}:", sample), key
        assert description.split()[0] in sample


def test_option_table_lists_nested_keys_with_defaults() -> None:
    rows = {row[0]: row for row in option_table()}
    assert rows["backoff.max"][1:3] == ("duration", "600s")
    assert rows["guests.NAME.order"][1:3] == ("integer", "50")
    assert rows["guests.NAME.hold"][1:3] == ("boolean", "false")
    assert rows["watch"][1:3] == ("auto | inotify | kqueue | poll", "auto")
    assert rows["xl_timeout"][2] == "120s"
    assert set(rows) >= {f.name for f in Config.__dataclass_fields__.values()} - {"source"}


def test_main_prints_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert config.main(["--sample"]) == 0
    assert capsys.readouterr().out == render_sample()
    assert config.main(["--bogus"]) == 2


# --- the config file's own permissions -----------------------------------------------------

FOREIGN_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o664])
def test_config_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "loose.yaml"
    path.write_text("concurrency: 9\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    message = str(info.value)
    assert message.startswith(f"{path}: unsafe config file: mode {mode:04o} is writable by group")
    assert "chown root and chmod go-w" in message
    path.chmod(0o600)
    assert load_config(str(path), env={}).concurrency == 9


def test_strict_permissions_false_in_the_file_does_not_relax_it(tmp_path: Path) -> None:
    path = tmp_path / "loose.yaml"
    path.write_text("strict_permissions: false\n")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="strict_permissions does not apply to the config file"):
        load_config(str(path), env={})


@needs_root
def test_config_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.yaml"
    path.write_text("concurrency: 9\n")
    os.chown(path, FOREIGN_UID, -1)
    with pytest.raises(ConfigError, match=f"owned by uid {FOREIGN_UID}.*must be owned by uid 0"):
        load_config(str(path), env={})


@needs_root
def test_config_in_a_user_owned_directory_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chown(home, FOREIGN_UID, -1)
    path = home / "x.yaml"
    path.write_text("concurrency: 9\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert f"on the way to it, directory {home} (owner uid {FOREIGN_UID}" in str(info.value)


@needs_root
def test_config_reached_through_a_user_owned_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("concurrency: 9\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    os.lchown(link, FOREIGN_UID, -1)
    with pytest.raises(ConfigError, match=f"symlink {link} \\(owner uid {FOREIGN_UID}"):
        load_config(str(link), env={})
    os.lchown(link, 0, -1)
    assert load_config(str(link), env={}).concurrency == 9


def test_check_exits_2_for_a_world_writable_config(tmp_path: Path) -> None:
    path = tmp_path / "loose.yaml"
    path.write_text(f"guests_dir: {tmp_path}\n")
    path.chmod(0o666)
    done = subprocess.run(
        [sys.executable, "-m", "xenreconcile", "-c", str(path), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"xenreconcile: {path}: unsafe config file: mode 0666" in done.stderr
