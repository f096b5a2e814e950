"""Generated inputs for the xl.cfg parser.

- Random text and near-valid text (valid configs with a few characters
  deleted, inserted or cut off): only CfgError ever escapes, and its position
  lies inside the text.
- Generated configs, written with varied spacing, comments, separators and
  list layouts, parse back to the settings they were made from.
- Where xl's own parser library (libxlutil 4.17, Debian package
  libxenmisc4.17) is installed, every generated input is also given to it: both
  must accept or both reject, and accepted values must be equal.

The default run makes 3,000 fuzz inputs (a twentieth of that for the round-trip
properties, a fifth for the comparison with xl). For a deeper run set XR_FUZZ_EXAMPLES, e.g.
`XR_FUZZ_EXAMPLES=200000 pytest tests/test_xlcfg_fuzz.py`.
"""

from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenreconcile.xlcfg import CfgError, XlValue, guest_name, parse_cfg, render_cfg

FUZZ_EXAMPLES = int(os.environ.get("XR_FUZZ_EXAMPLES", "3000"))
PROPERTY_EXAMPLES = max(100, FUZZ_EXAMPLES // 20)
ORACLE_EXAMPLES = max(100, FUZZ_EXAMPLES // 5)

fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies -----------------------------------------------------------------------------

NUMBER_RE = re.compile(r"[0-9][0-9a-fx]*")
LOWER = "abcdefghijklmnopqrstuvwxyz"
keys = st.sampled_from(["name", "x", "a.b", "disk", "memory"]) | st.builds(
    str.__add__,
    st.sampled_from(LOWER),
    st.text(st.sampled_from(LOWER + "._0123456789"), max_size=8),
)
numbers = st.builds(
    str.__add__,
    st.sampled_from("0123456789"),
    st.text(st.sampled_from("0123456789abcdefx"), max_size=6),
)
strings = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=12
)
atoms = numbers | strings
values: st.SearchStrategy[XlValue] = st.recursive(
    atoms, lambda inner: st.lists(inner, max_size=4), max_leaves=8
)

# characters that matter to the lexer, plus a few that do not
LEXER_ALPHABET = list("abnmexz019fFX_.=+-[],;#'\"\\ \t\n\r\0()/:é$")
lexer_text = st.text(st.sampled_from(LEXER_ALPHABET), max_size=40)
any_text = st.text(max_size=60)
seeds = st.integers(0, 2**32 - 1)

QUOTE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
BLANKS = ["", " ", "\t", "  ", " \t "]
LIST_BREAKS = ["", "", "\n", "\n\n", " # note\n", "\n  # note\n"]


def quote(rng: random.Random, text: str) -> str:
    """`text` as an xl string literal, with a random quote character and random
    choices between raw and escaped tab, carriage return and the other quote."""
    q = rng.choice(["'", '"'])
    out = []
    for ch in text:
        if ch in QUOTE_ESCAPES:
            out.append(QUOTE_ESCAPES[ch])
        elif ch == q:
            out.append("\\" + ch)
        elif ch in "\t\r":
            out.append(rng.choice([ch, "\\t" if ch == "\t" else "\\r"]))
        elif ch in "'\"":
            out.append(rng.choice([ch, "\\" + ch]))
        else:
            out.append(ch)
    return q + "".join(out) + q


def format_value(rng: random.Random, value: XlValue) -> str:
    """xl text for `value` with random layout: bare or quoted numbers, quote
    characters, newlines and comments inside lists, trailing commas."""
    if isinstance(value, str):
        if NUMBER_RE.fullmatch(value) and rng.random() < 0.5:
            return value
        return quote(rng, value)
    parts = ["[", rng.choice(LIST_BREAKS), rng.choice(BLANKS)]
    for i, item in enumerate(value):
        parts += [format_value(rng, item), rng.choice(BLANKS), rng.choice(LIST_BREAKS)]
        if i < len(value) - 1 or rng.random() < 0.5:
            parts += [",", rng.choice(BLANKS), rng.choice(LIST_BREAKS)]
    parts.append("]")
    return "".join(parts)


def format_config(
    rng: random.Random, statements: list[tuple[str, XlValue, bool]]
) -> tuple[str, dict[str, XlValue]]:
    """A config of `statements` (key, value, use '+=') written with random layout,
    and the settings xl would store for it."""
    expected: dict[str, XlValue] = {}
    parts = [rng.choice(["", "\n", "# head\n", ";\n"])]
    for n, (key, value, append) in enumerate(statements):
        old = expected.get(key)
        same_kind = old is None or isinstance(old, str) == isinstance(value, str)
        op = "+=" if append and same_kind else "="
        if op == "+=" and old is not None:
            expected[key] = old + value  # type: ignore[operator]
        else:
            expected[key] = value
        parts += [key, rng.choice(BLANKS), op, rng.choice(BLANKS), format_value(rng, value)]
        ends = ["\n", ";", "; ", " # done\n", "\n\n", ";\n"]
        parts += [rng.choice(BLANKS), rng.choice([*ends, ""] if n == len(statements) - 1 else ends)]
    return "".join(parts), expected


formatted_configs = st.builds(
    lambda seed, statements: format_config(random.Random(seed), statements),
    seeds,
    st.lists(st.tuples(keys, values, st.booleans()), max_size=6),
)


def mutate(seed: int, text: str) -> str:
    """`text` with one to three characters deleted, inserted, duplicated or cut off."""
    rng = random.Random(seed)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randint(0, len(text))
        action = rng.choice(["delete", "insert", "truncate", "duplicate"])
        if action == "delete":
            text = text[:pos] + text[pos + 1 :]
        elif action == "insert":
            text = text[:pos] + rng.choice(LEXER_ALPHABET) + text[pos:]
        elif action == "truncate":
            text = text[:pos]
        else:
            text = text[:pos] + text[pos : pos + 3] + text[pos:]
    return text


STRING_ALPHABET = "abz AZ09/,:=.-_#[];'\"\\\t\r\a\x01é✓"
KEY_POOL = ["name", "x", "a.b", "disk", "memory", "vif", "extra"]


def random_value(rng: random.Random, depth: int = 0) -> XlValue:
    """A random atom or (nested) list, for inputs made from a single seed."""
    roll = rng.random()
    if roll < 0.2 and depth < 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.5:
        return rng.choice("0123456789") + "".join(
            rng.choices("0123456789abcdefx", k=rng.randint(0, 5))
        )
    return "".join(rng.choices(STRING_ALPHABET, k=rng.randint(0, 10)))


def random_config(seed: int) -> str:
    """A valid config made from `seed` alone (cheap to generate in bulk)."""
    rng = random.Random(seed)
    statements = [
        (rng.choice(KEY_POOL), random_value(rng), rng.random() < 0.3)
        for _ in range(rng.randint(0, 8))
    ]
    return format_config(rng, statements)[0]


near_valid_texts = st.builds(mutate, seeds, st.builds(random_config, seeds))


fuzz_inputs = near_valid_texts | lexer_text | any_text


# --- only CfgError escapes ------------------------------------------------------------------


def assert_error_inside(err: CfgError, text: str) -> None:
    """A parse error points at a line of the text and a column on it (or just past its end)."""
    assert err.file == "fuzz.cfg"
    lines = text.split("\n")
    assert 1 <= err.line <= len(lines), str(err)
    assert 1 <= err.column <= len(lines[err.line - 1]) + 1, str(err)


@fuzz_settings
@given(fuzz_inputs)
def test_only_cfg_error_escapes(text: str) -> None:
    try:
        cfg = parse_cfg(text, "fuzz.cfg")
    except CfgError as err:
        assert_error_inside(err, text)
        return
    try:
        name = guest_name(cfg, "fuzz.cfg")
    except CfgError as err:
        assert "'name'" in err.message
    else:
        assert name == cfg.settings["name"]


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(formatted_configs)
def test_formatted_config_parses_to_its_settings(case: tuple[str, dict[str, XlValue]]) -> None:
    text, expected = case
    assert parse_cfg(text).settings == expected


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_render_then_parse_gives_the_same_settings(values_by_key: dict[str, XlValue]) -> None:
    cfg = parse_cfg(render_cfg(values_by_key))
    assert cfg.settings == values_by_key
    assert list(cfg.lines.values()) == list(range(1, len(values_by_key) + 1))


# --- xl's own parser as the oracle ----------------------------------------------------------

# Runs in a helper process: loads libxlutil, then for each input line (the repr of
# (bytes, [keys])) forks a child that parses it (xl aborts on some inputs) and
# prints the repr of (result code, {key: value}) or None when the child died.
ORACLE_SOURCE = r"""
import ast, ctypes, ctypes.util, os, sys

try:
    lib = ctypes.CDLL(ctypes.util.find_library("xlutil") or "libxlutil.so.4.17")
except OSError:
    print("missing", flush=True)
    sys.exit(0)
vp, cp = ctypes.c_void_p, ctypes.c_char_p
lib.xlu_cfg_init.restype = vp
lib.xlu_cfg_init.argtypes = [vp, cp]
lib.xlu_cfg_readdata.argtypes = [vp, cp, ctypes.c_int]
lib.xlu_cfg_get_string.argtypes = [vp, cp, ctypes.POINTER(cp), ctypes.c_int]
lib.xlu_cfg_get_list.argtypes = [vp, cp, ctypes.POINTER(vp), vp, ctypes.c_int]
lib.xlu_cfg_get_listitem2.restype = vp
lib.xlu_cfg_get_listitem2.argtypes = [vp, ctypes.c_int]
lib.xlu_cfg_value_type.argtypes = [vp]
lib.xlu_cfg_value_get_string.argtypes = [vp, vp, ctypes.POINTER(cp), ctypes.c_int]
lib.xlu_cfg_value_get_list.argtypes = [vp, vp, ctypes.POINTER(vp), ctypes.c_int]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = vp
report = libc.fopen(b"/dev/null", b"w")

def items(cfg, xlist):
    out = []
    while (item := lib.xlu_cfg_get_listitem2(xlist, len(out))) is not None:
        if lib.xlu_cfg_value_type(item) == 0:
            text = cp()
            lib.xlu_cfg_value_get_string(cfg, item, ctypes.byref(text), 1)
            out.append(text.value)
        else:
            inner = vp()
            lib.xlu_cfg_value_get_list(cfg, item, ctypes.byref(inner), 1)
            out.append(items(cfg, inner.value))
    return out

def parse(data, wanted):
    cfg = lib.xlu_cfg_init(report, b"fuzz.cfg")
    rc = lib.xlu_cfg_readdata(cfg, data, len(data))
    found = {}
    for key in wanted if rc == 0 else []:
        text, xlist = cp(), vp()
        if lib.xlu_cfg_get_string(cfg, key.encode(), ctypes.byref(text), 1) == 0:
            found[key] = text.value
        elif lib.xlu_cfg_get_list(cfg, key.encode(), ctypes.byref(xlist), None, 1) == 0:
            found[key] = items(cfg, xlist.value)
    return rc, found

print("ready", flush=True)
for line in sys.stdin:
    data, wanted = ast.literal_eval(line)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, repr(parse(data, wanted)).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    print(b"".join(chunks).decode() if status == 0 else "None", flush=True)
"""


class XlOracle:
    """A helper process that runs libxlutil's parser on demand."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", ORACLE_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.available = self.process.stdout.readline().strip() == "ready"

    def parse(self, data: bytes, wanted: list[str]) -> tuple[int, dict[str, object]] | None:
        """xl's (result code, {key: value}) for `data`, or None when xl crashed."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(repr((data, wanted)) + "\n")
        self.process.stdin.flush()
        result: tuple[int, dict[str, object]] | None = ast.literal_eval(
            self.process.stdout.readline()
        )
        return result

    def close(self) -> None:
        """Stop the helper process."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def xl_oracle() -> Iterator[XlOracle]:
    oracle = XlOracle()
    try:
        if not oracle.available:
            pytest.skip("libxlutil (xl's parser library, Debian libxenmisc4.17) is not installed")
        yield oracle
    finally:
        oracle.close()


def as_bytes(value: XlValue) -> object:
    """Our value in the form read back from libxlutil (UTF-8 bytes)."""
    if isinstance(value, str):
        return value.encode()
    return [as_bytes(item) for item in value]


@settings(
    max_examples=ORACLE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=near_valid_texts | lexer_text | st.builds(random_config, seeds))
def test_agrees_with_xl(xl_oracle: XlOracle, text: str) -> None:
    try:
        ours: dict[str, XlValue] | None = parse_cfg(text).settings
    except CfgError:
        ours = None
    verdict = xl_oracle.parse(text.encode(), sorted(ours or {}))
    xl_accepts = verdict is not None and verdict[0] == 0
    assert xl_accepts == (ours is not None), f"xl result {verdict} for {text!r}"
    if ours is not None and verdict is not None:
        assert verdict[1] == {key: as_bytes(value) for key, value in ours.items()}
