"""Parser for xl domain configuration files, the language of xl.cfg(5).

It accepts exactly what xl 4.17 (libxlutil's flex lexer and bison grammar)
accepts, and computes the same values, so the guest name we read is the one
`xl create` will use. Errors say where (file, line, column; both 1-based, a tab
counts as one column) and what was expected. The rules below come from reading
xl's lexer, grammar and value store (libxlu_cfg_l.l, libxlu_cfg_y.y,
libxlu_cfg.c) and are checked by tests that run libxlutil 4.17 itself on
generated inputs when it is installed.

The language
    file        statements separated by newlines or ';'; empty statements are fine;
                the last statement may end at end of file without a newline.
    statement   KEY '=' VALUE  or  KEY '+=' VALUE, all on one line.
    KEY         [a-z][._0-9a-z]*  (lowercase ASCII only: `Memory` is an error).
    VALUE       a string, a number, or a list.
    string      '...' or "..." on one line. Escapes: \\' \\" \\\\ \\a \\b \\f \\n \\r \\t \\v.
                Any other character after a backslash is an error, and so is a
                backslash at the end of a line.
    number      [0-9][0-9a-fx]* kept as written text (`0x1f`, `010`, `12ab` alike);
                xl only checks numbers when a key is used. No sign, no fraction:
                `-1` and `1.5` are errors, as in xl.
    list        '[' values separated by ',' ']'; newlines (and comments) may stand
                between any two tokens of a list, unlike anywhere else in a
                statement. One trailing ',' is allowed, `[ , ]` is not. Lists
                nest: `[ [1, 2], "a" ]`, as deep as xl's parser stack allows
                (4996 levels of `[[[...]]]`, fewer with items before them).
    comment     '#' up to the end of the line; it must end with a newline.
    blanks      space and tab only.

Values and repeated keys (as libxlutil stores them)
    Atoms stay strings: `memory = 512` gives "512". A key set twice with '='
    keeps the last value. `KEY += VALUE` appends to the previous value of KEY:
    string + string concatenates ("a" += 5 gives "a5"), list + list joins the
    lists; a string and a list do not mix (an error, as in xl). `+=` on a key
    not yet set just sets it.

Decisions on odd input, each following what xl does
    NUL             allowed inside a comment (xl skips it); inside a string it is an
                    error (xl aborts on an assertion there); anywhere else an error.
    non-ASCII       allowed inside strings and comments; anywhere else (a key, a
                    bare word, a byte-order mark) it is an error.
    CR (\\r)         allowed inside strings and comments; elsewhere an error, so a
                    file with CRLF line endings is rejected, as xl rejects it.
    no value        `memory =` or a bare `memory` is an error.
    value on the next line  `memory =` newline `512` is an error.
    empty file      valid, with no settings (it then lacks a `name`).
    last character  xl's lexer never reports a bad character that is the very
                    last byte of the file (a stray `$`, `"` or `#` with no newline
                    after it, or the `F` of a final `memory = 0x1F`, which leaves
                    "0x1"): it is ignored there, and so we ignore it too. A bad
                    character anywhere else (or a non-ASCII one, several bytes
                    long) is an error.
    \\x escapes      always rejected: xl's hex escape check can never pass.
    octal escapes   `\\` + digit 0-7 is decoded the way xl does, which drops it: the
                    digit is followed by up to three characters that C's strtoul
                    reads as a decimal number (leading blanks and a sign allowed);
                    if it reads at least two characters they are consumed and
                    nothing is written (`"a\\101b"` is "ab"), otherwise it is an
                    error (`"\\0"`, `"\\12"`).

Text is the file decoded from UTF-8 (the caller rejects other bytes).

Guest names (`guest_name`): the `name` key must be a non-empty string. Besides,
it must not be `Domain-0`, nor end with `--incoming` or `--migratedaway` (the
names xl gives a guest during live migration), nor contain control characters
(or any other character that is not printable, except spaces inside the name),
nor start or end with whitespace of any kind (str.isspace: U+00A0, U+3000 and
the other Unicode spaces too), because such a name cannot be matched against the
`xl list` table.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

from xenreconcile.errors import XenreconcileError
from xenreconcile.models import DOM0_NAME, INCOMING_SUFFIX, MIGRATEDAWAY_SUFFIX

XlValue: TypeAlias = "str | list[XlValue]"
"""A setting's value: an atom (string or number, kept as text) or a list of values."""


class CfgError(XenreconcileError, ValueError):
    """An xl.cfg file that cannot be used: where (`file`, 1-based `line` and
    `column`) and what is wrong (`message`). Line and column 0 mean the problem
    belongs to the whole file (a missing `name`, for example)."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{column}: {message}")
        self.file = file
        self.line = line
        self.column = column
        self.message = message


@dataclass(frozen=True)
class XlCfg:
    """A parsed file: the final value of each key, the line where each key was
    last set, and the column of that key on its line."""

    settings: dict[str, XlValue]
    lines: dict[str, int]
    columns: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        """The `name` key when it is a string (atom), else None."""
        value = self.settings.get("name")
        return value if isinstance(value, str) else None


# --- tokens -------------------------------------------------------------------------------

_IDENT = "key"
_NUMBER = "number"
_STRING = "string"
_NEWLINE = "newline"
_EOF = "end of file"
_ERROR = "error"
_PUNCT_GROUP = "punctuation"

_IDENT_RE = re.compile(r"[a-z][._0-9a-z]*")
_BLANKS_RE = re.compile(r"[ \t]+")
# Every valid token in one pattern: blanks, then a key, number, newline (or a
# comment and its newline), complete string or punctuation. Each alternative is
# a run of one character class or an unrolled string loop (no nested choices),
# so matching is linear. Where it does not match, the file ends or is wrong.
_TOKEN_RE = re.compile(
    r"""[ \t]*(?:
        (?P<key>[a-z][._0-9a-z]*)
      | (?P<number>[0-9][0-9a-fx]*)
      | (?P<newline>\n|\#[^\n]*\n)
      | (?P<string>'[^'\\\n]*(?:\\[^\n][^'\\\n]*)*'|"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*")
      | (?P<punct>\+=|[=\[\],;])
    )""",
    re.VERBOSE,
)
_GROUP_KINDS = {1: _IDENT, 2: _NUMBER, 3: _NEWLINE, 4: _STRING, 5: _PUNCT_GROUP}
_PYTHONISH = frozenset("+-.():")
_SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_C_SPACE = frozenset(" \t\n\v\f\r")


class _Token(NamedTuple):
    """One lexical token: its kind (one of the kinds above or the punctuation
    itself), its text (decoded for strings) and where it starts."""

    kind: str
    text: str
    line: int
    column: int

    def describe(self) -> str:
        """A short human description of the token for error messages."""
        if self.kind == _IDENT:
            return f"key {self.text!r}"
        if self.kind == _NUMBER:
            return f"number {self.text}"
        if self.kind == _STRING:
            return "a string"
        if self.kind in (_NEWLINE, _EOF):
            return self.kind
        return f"'{self.kind}'"


class _Lexer:
    """Splits the whole text into tokens the way xl's lexer does. A lexical error
    ends the list with an error token; the parser raises `error` when it gets
    there, so that the first problem in the file is the one reported."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.error: CfgError | None = None

    def tokens(self) -> list[_Token]:
        """Every token, ending with an end-of-file or an error token."""
        text = self.text
        tokens: list[_Token] = []
        append = tokens.append
        match = _TOKEN_RE.match
        pos, line, line_start = 0, 1, 0
        while (found := match(text, pos)) is not None:
            group = found.lastindex
            assert group is not None  # the pattern ends in one of its groups
            start, pos = found.start(group), found.end()
            kind, value = _GROUP_KINDS[group], found.group(group)
            column = start - line_start + 1
            if kind == _STRING:
                decoded = (
                    _decode_escapes(value[1:-1]) if "\\" in value or "\0" in value else value[1:-1]
                )
                if isinstance(decoded, _EscapeProblem):
                    return self._failed(tokens, line, column + 1 + decoded.offset, decoded.message)
                value = decoded
            elif kind == _PUNCT_GROUP:
                kind = value
            append(_Token(kind, value, line, column))
            if kind == _NEWLINE:
                line += 1
                line_start = pos
        return self._finish(tokens, pos, line, line_start)

    def _failed(self, tokens: list[_Token], line: int, column: int, message: str) -> list[_Token]:
        """End `tokens` with an error token for `message` at `line`:`column`."""
        self.error = CfgError(self.filename, line, column, message)
        tokens.append(_Token(_ERROR, "", line, column))
        return tokens

    def _finish(self, tokens: list[_Token], pos: int, line: int, line_start: int) -> list[_Token]:
        """The tail the token pattern does not match: blanks, then the end of the
        file, a bad character (ignored when it is the file's last byte, as xl
        does), an unterminated string or a comment without its newline."""
        text = self.text
        blanks = _BLANKS_RE.match(text, pos)
        if blanks:
            pos = blanks.end()
        column = pos - line_start + 1
        if pos >= len(text) or (pos == len(text) - 1 and ord(text[pos]) < 0x80):
            tokens.append(_Token(_EOF, "", line, column))
            return tokens
        ch = text[pos]
        if ch == "#":
            message = "comment at the end of the file must end with a newline"
        elif ch in ("'", '"'):
            message = _unterminated_message(text, pos, line, column)
        elif "A" <= ch <= "Z" and tokens and _ends_number(tokens[-1], line, column):
            message = f"unexpected {ch!r} in a number: hex digits must be lowercase"
        else:
            message = _bad_character_message(ch)
        return self._failed(tokens, line, column, message)


def _ends_number(token: _Token, line: int, column: int) -> bool:
    """True when `token` is a number that ends right before `line`:`column`."""
    return token.kind == _NUMBER and token.line == line and token.column + len(token.text) == column


def _unterminated_message(text: str, pos: int, line: int, column: int) -> str:
    """The error for the quote at `pos` that starts no valid string."""
    quote = text[pos]
    end = text.find("\n", pos)
    rest = text[pos + 1 : len(text) if end < 0 else end]
    if rest.endswith("\\") and end >= 0 and not _ends_in_escaped_backslash(rest):
        why = "a backslash cannot continue a string onto the next line"
    elif end < 0:
        why = "it reaches the end of the file"
    else:
        why = "strings cannot span lines"
    return f"unterminated string started at line {line} column {column}: no closing {quote} ({why})"


def _ends_in_escaped_backslash(rest: str) -> bool:
    """True when `rest` ends in an even run of backslashes (an escaped backslash)."""
    run = len(rest) - len(rest.rstrip("\\"))
    return run % 2 == 0


def _bad_character_message(ch: str) -> str:
    """What to tell about a character that starts no token."""
    if ch == "\r":
        return "carriage return: xl accepts only Unix (LF) line endings, not CRLF"
    if ch == "\0":
        return "NUL byte (allowed only inside a comment)"
    if ch == "\ufeff":
        return "byte-order mark: xl does not accept one at the start of the file"
    shown = repr(ch)
    if ch.isalpha() or ch == "_":
        return (
            f"unexpected character {shown}: keys are lowercase ASCII letters, digits, "
            "'_' and '.', starting with a letter a-z"
        )
    if ch == "-":
        return "unexpected character '-': xl has no negative numbers or expressions"
    if ch in _PYTHONISH:
        return f"unexpected character {shown}: xl config files are not Python"
    return f"unexpected character {shown}"


@dataclass(frozen=True, slots=True)
class _EscapeProblem:
    """A bad escape `offset` characters into a string's content."""

    offset: int
    message: str


def _decode_escapes(raw: str) -> str | _EscapeProblem:
    """The content of a quoted string (without quotes) decoded as xl decodes it."""
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\0":
            return _EscapeProblem(i, "NUL byte inside a string (xl aborts on it)")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nc = raw[i + 1]  # the lexer guarantees a character after a backslash
        if nc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nc])
            i += 2
        elif nc == "x":
            return _EscapeProblem(i, "\\x escapes are not supported by xl (it rejects them all)")
        elif "0" <= nc <= "7":
            used = _octal_escape_tail(raw, i + 2)
            if used is None:
                return _EscapeProblem(
                    i, "octal escape not accepted by xl (it needs two more digits after the first)"
                )
            i += 2 + used  # xl writes nothing for an octal escape
        else:
            return _EscapeProblem(i, f"invalid escape '\\{nc}' in string")
    return "".join(out)


def _octal_escape_tail(raw: str, start: int) -> int | None:
    """How many characters after an octal escape's first digit xl consumes: it reads
    up to 3 characters with strtoul(base 10) and needs 2 or more read; else None."""
    window = raw[start : start + 3]
    i = 0
    while i < len(window) and window[i] in _C_SPACE:
        i += 1
    if i < len(window) and window[i] in "+-":
        i += 1
    digits_start = i
    while i < len(window) and window[i].isascii() and window[i].isdigit():
        i += 1
    if i == digits_start or i < 2:
        return None
    return i


# --- grammar ------------------------------------------------------------------------------


# How many entries xl's bison parser stack holds at most (YYMAXDEPTH 10000, less
# the one it keeps free), and how many a statement and each open list use.
_XL_STACK_LIMIT = 9999
_STATEMENT_ENTRIES = 4  # start state, statements so far, key, '=' or '+='
_OPENED = 2  # '[' and the newlines after it
_AFTER_ITEM = 3  # '[', newlines, the values so far
_AFTER_COMMA = 5  # '[', newlines, values, ',', newlines
_CLOSED = 4  # '[', newlines, the value list, ']'


@dataclass(slots=True)
class _ListFrame:
    """A list being parsed: its '[' token, the items so far, and how many of
    xl's parser stack entries it holds in its current state."""

    opener: _Token
    items: list[XlValue]
    entries: int

    @property
    def where(self) -> str:
        """Where the list starts, for error messages."""
        return f"list opened at line {self.opener.line} column {self.opener.column}"


class _Parser:
    """Recursive descent over the lexer's tokens, storing settings as it goes."""

    def __init__(self, text: str, filename: str) -> None:
        self.lexer = _Lexer(text, filename)
        self.filename = filename
        self.tokens = self.lexer.tokens()
        self.index = 0
        self.token = self.tokens[0]
        self._raise_at_error()
        self.settings: dict[str, XlValue] = {}
        self.lines: dict[str, int] = {}
        self.columns: dict[str, int] = {}
        self.stack_entries = 0

    def advance(self) -> _Token:
        """Consume the current token and return it."""
        token = self.token
        self.index += 1
        self.token = self.tokens[self.index]
        if self.token.kind == _ERROR:
            self._raise_at_error()
        return token

    def _raise_at_error(self) -> None:
        """Raise the lexer's error once the parser reaches the token it ended in."""
        if self.token.kind == _ERROR:
            assert self.lexer.error is not None
            raise self.lexer.error

    def fail(self, token: _Token, message: str) -> CfgError:
        """A CfgError at `token`."""
        return CfgError(self.filename, token.line, token.column, message)

    def parse_file(self) -> XlCfg:
        """file := { [assignment] (NEWLINE | ';') } [assignment] EOF"""
        while self.token.kind != _EOF:
            if self.token.kind in (_NEWLINE, ";"):
                self.advance()
                continue
            key = self.parse_assignment()
            if self.token.kind in (_NEWLINE, ";", _EOF):
                continue
            raise self.fail(
                self.token,
                f"expected end of line or ';' after the value of {key!r}, "
                f"found {self.token.describe()}",
            )
        return XlCfg(self.settings, self.lines, self.columns)

    def parse_assignment(self) -> str:
        """assignment := KEY ('=' | '+=') value; returns the key."""
        key = self.token
        if key.kind != _IDENT:
            raise self.fail(
                key,
                f"expected a key (a lowercase name) to start a statement, found {key.describe()}",
            )
        self.advance()
        op = self.token
        if op.kind not in ("=", "+="):
            raise self.fail(
                op, f"expected '=' or '+=' after key {key.text!r}, found {op.describe()}"
            )
        self.advance()
        value_token = self.token
        value = self.parse_value(key.text)
        if op.kind == "+=" and key.text in self.settings:
            value = self._append(key, value_token, self.settings[key.text], value)
        self.settings[key.text] = value
        self.lines[key.text] = key.line
        self.columns[key.text] = key.column
        return key.text

    def parse_value(self, key: str) -> XlValue:
        """value := STRING | NUMBER | list"""
        token = self.token
        if token.kind in (_STRING, _NUMBER):
            self.advance()
            return token.text
        if token.kind == "[":
            return self.parse_list(key)
        hint = " (the value must be on the same line as the key)" if token.kind == _NEWLINE else ""
        raise self.fail(
            token,
            f"expected a value (a quoted string, a number or a '[' list) for key {key!r}, "
            f"found {token.describe()}{hint}",
        )

    def parse_list(self, key: str) -> list[XlValue]:
        """list := '[' nl* [ value nl* { ',' nl* value nl* } [ ',' nl* ] ] ']'

        Nested lists are parsed with an explicit stack, which also counts the
        entries xl's bison parser would hold, so that nesting deeper than xl
        can parse (about 5000 levels) is rejected as xl rejects it."""
        frames: list[_ListFrame] = []
        self.stack_entries = _STATEMENT_ENTRIES
        self._open_list(frames)
        while True:
            frame = frames[-1]
            token = self.token
            if token.kind == "]":
                value = self._close_list(frames)
                if not frames:
                    return value
                self._add_item(frames[-1], value)
            elif token.kind == _EOF:
                raise self.fail(frame.opener, f"{frame.where} is never closed")
            elif frame.entries == _AFTER_ITEM:
                if token.kind != ",":
                    raise self.fail(
                        token, f"expected ',' or ']' in the {frame.where}, found {token.describe()}"
                    )
                self.advance()
                self._grow_stack(frame, _AFTER_COMMA)
                self._skip_list_newlines()
            elif token.kind in (_STRING, _NUMBER):
                self.advance()
                self._add_item(frame, token.text)
            elif token.kind == "[":
                self._open_list(frames)
            else:
                raise self.fail(
                    token, f"expected a value or ']' in the {frame.where}, found {token.describe()}"
                )

    def _open_list(self, frames: list[_ListFrame]) -> None:
        """Consume '[' (and newlines after it) and start a new innermost list."""
        opener = self.advance()
        frame = _ListFrame(opener, [], 0)
        frames.append(frame)
        self._grow_stack(frame, _OPENED)
        self._skip_list_newlines()

    def _close_list(self, frames: list[_ListFrame]) -> list[XlValue]:
        """Consume ']' and return the finished innermost list."""
        frame = frames.pop()
        self._check_stack(self.stack_entries - frame.entries + _CLOSED)
        self.stack_entries -= frame.entries
        self.advance()
        return frame.items

    def _add_item(self, frame: _ListFrame, value: XlValue) -> None:
        """Append a parsed value to `frame` (and skip the newlines after it)."""
        # the value, the newlines after it and, briefly, each newline token
        self._check_stack(self.stack_entries + 2 + (self.token.kind == _NEWLINE))
        frame.items.append(value)
        self._grow_stack(frame, _AFTER_ITEM)
        self._skip_newlines()

    def _grow_stack(self, frame: _ListFrame, entries: int) -> None:
        """Set `frame` to hold `entries` parser stack entries, checking xl's limit."""
        self._check_stack(self.stack_entries - frame.entries + entries)
        self.stack_entries += entries - frame.entries
        frame.entries = entries

    def _skip_list_newlines(self) -> None:
        """Skip newlines inside a list; xl's parser briefly holds each one."""
        if self.token.kind == _NEWLINE:
            self._check_stack(self.stack_entries + 1)
            self._skip_newlines()

    def _check_stack(self, entries: int) -> None:
        if entries > _XL_STACK_LIMIT:
            raise self.fail(
                self.token,
                "lists are nested too deeply: xl's parser gives up at this depth "
                "(about 5000 levels)",
            )

    def _skip_newlines(self) -> None:
        while self.token.kind == _NEWLINE:
            self.advance()

    def _append(self, key: _Token, at: _Token, old: XlValue, new: XlValue) -> XlValue:
        """`old += new` as libxlutil does it: strings concatenate, lists join."""
        if isinstance(old, str) and isinstance(new, str):
            return old + new
        if isinstance(old, list) and isinstance(new, list):
            return old + new
        kinds = ("a list", "string") if isinstance(new, list) else ("a string", "list")
        raise self.fail(
            at,
            f"cannot add {kinds[0]} to the {kinds[1]} value of {key.text!r} "
            f"(set at line {self.lines[key.text]}): '+=' needs values of the same kind",
        )


def parse_cfg(text: str, filename: str = "<string>") -> XlCfg:
    """Parse the text of an xl.cfg file; `filename` is only used in errors.
    Returns the settings; raises CfgError (and nothing else) when xl would reject it."""
    return _Parser(text, filename).parse_file()


# --- guest names --------------------------------------------------------------------------


def guest_name(cfg: XlCfg, filename: str) -> str:
    """The guest name of a parsed file (`filename` for errors); CfgError when the
    `name` key is missing, not a string, empty or a name the daemon cannot manage."""
    if "name" not in cfg.settings:
        raise CfgError(filename, 0, 0, "no 'name' key: xl needs the guest's name")
    line, column = cfg.lines["name"], cfg.columns.get("name", 1)
    value = cfg.settings["name"]
    if not isinstance(value, str):
        raise CfgError(filename, line, column, "key 'name' must be a string, not a list")
    problem = _name_problem(value)
    if problem:
        raise CfgError(filename, line, column, f"key 'name' {problem}")
    return value


def _name_problem(name: str) -> str | None:
    """Why `name` cannot be a managed guest's name, or None when it can."""
    if not name:
        return "is empty"
    if name == DOM0_NAME:
        return f"is {DOM0_NAME!r}, the name of the control domain"
    for suffix in (INCOMING_SUFFIX, MIGRATEDAWAY_SUFFIX):
        if name.endswith(suffix):
            return f"ends with {suffix!r}, which xl uses for a guest in live migration"
    bad = next((ch for ch in name if _unprintable(ch)), None)
    if bad is not None:
        return (
            f"contains a control character or another unprintable one "
            f"({_describe_char(bad)}) in {name!r}"
        )
    if name != name.strip():
        edge = name[0] if name[0].isspace() else name[-1]
        return (
            f"starts or ends with blanks or other whitespace ({_describe_char(edge)}) "
            f"in {name!r}, which 'xl list' cannot show apart from its padding"
        )
    return None


def _unprintable(ch: str) -> bool:
    """True for a control, format, separator or unassigned character: anything
    not printable except a space inside a name (Unicode spaces included)."""
    return not ch.isprintable() and unicodedata.category(ch) != "Zs"


def _describe_char(ch: str) -> str:
    """A character for an error message: its code point and Unicode name."""
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}" if name else f"U+{ord(ch):04X}"


# --- rendering ----------------------------------------------------------------------------

_RENDER_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def render_value(value: XlValue) -> str:
    """xl.cfg text for a value: atoms as double-quoted strings, lists in brackets.
    Raises ValueError for a string holding a NUL, which xl cannot read."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError("xl strings cannot hold a NUL character")
        return '"' + "".join(_RENDER_ESCAPES.get(ch, ch) for ch in value) + '"'
    return "[" + ", ".join(render_value(item) for item in value) + "]"


def render_cfg(settings: Mapping[str, XlValue]) -> str:
    """xl.cfg text that parses back to `settings`, one `KEY = VALUE` line each.
    Raises ValueError for a key xl cannot read."""
    lines = []
    for key, value in settings.items():
        if not _IDENT_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a valid xl key")
        lines.append(f"{key} = {render_value(value)}\n")
    return "".join(lines)
