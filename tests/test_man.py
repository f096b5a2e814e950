"""The man pages: the key list of xenreconcile.yaml(5) is generated from the config
schema and must not go stale; xenreconcile(8) documents every command."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAN8 = ROOT / "docs" / "man" / "xenreconcile.8"
MAN5 = ROOT / "docs" / "man" / "xenreconcile.yaml.5"


def load_generator() -> ModuleType:
    """tools/gen_man_keys.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_man_keys", ROOT / "tools" / "gen_man_keys.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def option_rows() -> list[tuple[str, str, str, str]]:
    """The schema's key table; skips the test while the schema has none."""
    config = pytest.importorskip("xenreconcile.config")
    if not hasattr(config, "option_table"):
        pytest.skip("xenreconcile.config.option_table() does not exist yet")
    rows: list[tuple[str, str, str, str]] = config.option_table()
    return rows


def test_committed_key_list_matches_the_schema() -> None:
    page = MAN5.read_text(encoding="utf-8")

    regenerated = gen.replace_section(page, gen.render(option_rows()))

    assert regenerated == page, "docs/man/xenreconcile.yaml.5 is stale: run tools/gen_man_keys.py"


def test_every_schema_key_has_an_entry() -> None:
    page = MAN5.read_text(encoding="utf-8")
    entries = set(re.findall(r"^\.It Cm (\S+)$", page, flags=re.MULTILINE))

    assert {key for key, *_ in option_rows()} <= entries


def test_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "xenreconcile.yaml.5"
    stale.write_text(
        MAN5.read_text(encoding="utf-8").replace(".It Cm interval\n", ".It Cm intervall\n"),
        encoding="utf-8",
    )
    option_rows()

    assert gen.main(["--check", str(stale)]) == 1
    assert gen.main([str(stale)]) == 0
    assert gen.main(["--check", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == MAN5.read_text(encoding="utf-8")


def test_entry_turns_code_spans_into_quoted_literals() -> None:
    lines = gen.entry("log_file", "path or -", "/var/log/x.log", "Log file; `-` logs to stderr.")

    assert lines == [
        ".It Cm log_file",
        "Log file;",
        ".Ql -",
        "logs to stderr.",
        "Type: path or -.",
        "Default:",
        ".Ql /var/log/x.log .",
    ]


def test_punctuation_around_a_literal_goes_on_its_macro_line() -> None:
    lines = gen.describe("keyed by name (the cfg's `name`, not the file name).")

    assert lines == ["keyed by name (the cfg's", ".Ql name ,", "not the file name)."]


def test_opening_parenthesis_before_a_literal_is_kept_with_it() -> None:
    assert gen.describe("kqueue (FreeBSD), poll") == ["kqueue", ".Fx ( ) ,", "poll"]


def test_sentences_start_new_lines_and_lines_stay_short() -> None:
    text = "First sentence. " + "word " * 40 + "end."

    lines = gen.describe(text)

    assert lines[0] == "First sentence."
    assert all(len(line) <= 80 for line in lines)
    assert " ".join(lines[1:]) == "word " * 39 + "word end."


def test_text_that_mdoc_would_read_as_a_request_is_escaped() -> None:
    assert gen.escape_text(".cfg files") == "\\&.cfg files"
    assert gen.escape_text("a \\ b") == "a \\e b"
    assert gen.escape_argument("|") == "\\&|"


def test_man8_documents_every_command() -> None:
    cli = pytest.importorskip("xenreconcile.cli")
    parser = cli.build_parser()
    commands = next(
        action.choices for action in parser._actions if isinstance(action.choices, dict)
    )
    page = MAN8.read_text(encoding="utf-8")

    documented = set(re.findall(r"^\.It Cm ([\w-]+)", page, flags=re.MULTILINE))

    assert set(commands) <= documented
