"""The xl.cfg parser: every form xl accepts, the values it stores, and the
errors (with line and column) for what xl rejects. Expected values were checked
against xl 4.17's own parser (libxlutil)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenreconcile.xlcfg import (
    CfgError,
    XlCfg,
    XlValue,
    guest_name,
    parse_cfg,
    render_cfg,
    render_value,
)

DATA = Path(__file__).parent / "data" / "cfg"


def settings(text: str) -> dict[str, object]:
    """The settings of `text`, which must parse."""
    return dict(parse_cfg(text).settings)


def error_of(text: str) -> CfgError:
    """The CfgError that parsing `text` raises."""
    with pytest.raises(CfgError) as info:
        parse_cfg(text, "guest.cfg")
    return info.value


# --- shipped and documented examples --------------------------------------------------------


def test_freebsd_handbook_example() -> None:
    cfg = parse_cfg((DATA / "freebsd.cfg").read_text(), "freebsd.cfg")
    assert cfg.settings == {
        "type": "hvm",
        "memory": "8192",
        "vcpus": "4",
        "name": "freebsd",
        "disk": [
            "/dev/zvol/xendata/freebsd.img,raw,hda,rw",
            "/root/FreeBSD-14.0-RELEASE-amd64-dvd1.iso,raw,hdc:cdrom,r",
        ],
        "boot": "d",
        "vif": ["bridge=bridge0"],
        "vnc": "1",
        "vnclisten": "0.0.0.0",
        "serial": "pty",
        "usbdevice": "tablet",
    }
    assert guest_name(cfg, "freebsd.cfg") == "freebsd"
    assert cfg.lines["disk"] == 7
    assert cfg.lines["boot"] == 13


@pytest.mark.parametrize(
    ("filename", "name", "keys"),
    [
        ("hvm.cfg", "demo.hvm", {"name", "memory", "vcpus", "vif", "disk", "sdl"}),
        (
            "pvlinux.cfg",
            "demo.pvlinux",
            {"name", "kernel", "extra", "memory", "vcpus", "vif", "disk"},
        ),
        (
            "pvhlinux.cfg",
            "demo.pvhlinux",
            {"type", "name", "kernel", "extra", "memory", "vcpus", "vif", "disk"},
        ),
    ],
)
def test_xen_example_configs(filename: str, name: str, keys: set[str]) -> None:
    cfg = parse_cfg((DATA / filename).read_text(), filename)
    assert guest_name(cfg, filename) == name
    assert set(cfg.settings) == keys  # commented-out keys are not set
    assert cfg.settings["vif"] == [""]


def test_every_construct_in_one_file() -> None:
    cfg = parse_cfg((DATA / "everything.cfg").read_text())
    assert cfg.settings == {
        "name": "every",
        "type": "pvh",
        "memory": "1024",
        "vcpus": "0x2",
        "maxmem": "010",
        "extra": "console=hvc0 quiet",
        "cpus": "0-3,^1",
        "disk": [
            "/dev/vg/every,raw,xvda,rw",
            "/dev/vg/data,raw,xvdb,rw",
            "format=raw, vdev=xvdc, target=/tmp/x.img",
            "format=raw, vdev=xvdd, access=ro, target=/tmp/y.img",
        ],
        "vnuma": [
            ["pnode=0", "size=512", "vcpus=0", "vdistances=10,20"],
            ["pnode=1", "size=512", "vcpus=1", "vdistances=20,10"],
        ],
        "pci": [],
        "on_crash": "preserve",
        "cmdline": 'tab\there, quote " and \\ backslash',
        "last": "1",
    }
    assert cfg.lines["type"] == 2
    assert cfg.lines["disk"] == 18  # the `+=` line: where the key was last set
    assert cfg.columns["type"] == 18


# --- valid forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("\n\n;;\n", {}),
        ("# only a comment\n", {}),
        ('name = "a"', {"name": "a"}),  # no newline at the end
        ('name = "a"\n', {"name": "a"}),
        ("name='a'", {"name": "a"}),
        ('name\t=\t"a"  \t', {"name": "a"}),
        ('name="a";', {"name": "a"}),
        ('name="a"; memory=5;', {"name": "a", "memory": "5"}),
        ('name="a" # trailing comment\n', {"name": "a"}),
        ('name="has # inside"\n', {"name": "has # inside"}),
        ("memory = 512", {"memory": "512"}),
        ("memory = 0x1f", {"memory": "0x1f"}),
        ("memory = 0777", {"memory": "0777"}),
        ("memory = 12abc", {"memory": "12abc"}),  # xl's number token, checked only on use
        ("a.b_c.9 = 1", {"a.b_c.9": "1"}),
        ('name = ""', {"name": ""}),
        ("x = []", {"x": []}),
        ("x = [ ]", {"x": []}),
        ("x = [\n]", {"x": []}),
        ("x = [1]", {"x": ["1"]}),
        ("x = [1,]", {"x": ["1"]}),
        ("x = [1, 'b', \"c\"]", {"x": ["1", "b", "c"]}),
        ("x = [\n  1,\n  2,\n]\n", {"x": ["1", "2"]}),
        ("x = [ 1\n , 2 ]", {"x": ["1", "2"]}),
        ("x = [ # why\n 1, # one\n\n 2 # two\n ]", {"x": ["1", "2"]}),
        ("x = [[1, 2], [], 'a']", {"x": [["1", "2"], [], "a"]}),
        ("x = [[[['deep']]]]", {"x": [[[["deep"]]]]}),
    ],
)
def test_valid_forms(text: str, expected: dict[str, object]) -> None:
    assert settings(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "a"\nname = "b"', "b"),  # the last `=` wins
        ('name = "a"\nname += "b"', "ab"),  # `+=` concatenates strings
        ('name = "a"; name += 5', "a5"),  # a number is a string too
        ('name += "only"', "only"),  # `+=` without a previous value just sets
        ('name = "a"; name += "b"; name = "c"; name += "d"', "cd"),
    ],
)
def test_repeated_keys_on_strings(text: str, expected: str) -> None:
    assert parse_cfg(text).name == expected


def test_plus_equals_joins_lists_and_records_the_last_line() -> None:
    cfg = parse_cfg("disk = ['a']\nother = 1\ndisk += ['b', ['c']]\ndisk += []\n")
    assert cfg.settings["disk"] == ["a", "b", ["c"]]
    assert cfg.lines == {"disk": 4, "other": 2}


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r"'a\'b'", "a'b"),
        (r'"a\'b"', "a'b"),
        (r"'a\"b'", 'a"b'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\a\b\f\n\r\t\v"', "\a\b\f\n\r\t\v"),
        ("'single \"double\" inside'", 'single "double" inside'),
        ('"tab\tand\rcarriage return raw"', "tab\tand\rcarriage return raw"),
        ('"héllo wörld ✓"', "héllo wörld ✓"),
        # xl consumes an octal escape and writes nothing (see the module docstring)
        (r'"a\101b"', "ab"),
        (r'"a\1234b"', "ab"),
        (r'"a\12345b"', "a5b"),
        (r'"a\1 5b"', "ab"),
        (r'"a\0-1b"', "ab"),
    ],
)
def test_string_escapes(literal: str, value: str) -> None:
    assert settings(f"s = {literal}") == {"s": value}


def test_nul_and_carriage_return_inside_a_comment_are_fine() -> None:
    assert settings('# a \0 and a \r here\nname = "a"\n') == {"name": "a"}


@pytest.mark.parametrize("last", ["$", '"', "'", "#", "-", "\0", "\r", "F"])
def test_a_stray_last_character_is_ignored_like_xl_does(last: str) -> None:
    assert settings(f'name = "a"\n{last}') == {"name": "a"}


def test_a_stray_last_character_cuts_a_number_like_xl_does() -> None:
    assert settings("memory = 0x1F") == {"memory": "0x1"}


# --- invalid inputs: message, line and column ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ('name = "a"\nmemory 512\n', 2, 8, "expected '=' or '+=' after key 'memory'"),
        ('name = "a"\nmemory\n', 2, 7, "expected '=' or '+=' after key 'memory', found newline"),
        ("name = 'a'\n\nmemory =\n", 3, 9, "same line as the key"),
        ("memory =", 1, 9, "found end of file"),
        ('\n\nname = "abc\n', 3, 8, "unterminated string started at line 3 column 8"),
        ("name = 'abc", 1, 8, "it reaches the end of the file"),
        ('name = "a\\\nb"\n', 1, 8, "backslash cannot continue a string"),
        (
            "x = 1\n\n\n\n\ndisk = [ 'a',\n  'b'\n",
            6,
            8,
            "list opened at line 6 column 8 is never closed",
        ),
        ("disk = [ 'a'\n  'b' ]\n", 2, 3, "expected ',' or ']' in the list opened at line 1"),
        ("disk = [ , ]", 1, 10, "expected a value or ']'"),
        ("disk = [ 'a',\nname = 'x'\n]", 2, 1, "found key 'name'"),
        ('name = "a" memory = 5\n', 1, 12, "expected end of line or ';' after the value of 'name'"),
        ("name = 'a' 'b'", 1, 12, "found a string"),
        ("x = [1] [2]", 1, 9, "found '['"),
        ('Name = "a"\n', 1, 1, "keys are lowercase"),
        ('name = "a"\nkernel = /boot/vmlinuz\n', 2, 10, "unexpected character '/'"),
        ("kernel = vmlinuz\n", 1, 10, "expected a value"),
        ("memory = -1\n", 1, 10, "no negative numbers"),
        ("memory = 1.5\n", 1, 11, "not Python"),
        ("x = 0x1F\n", 1, 8, "hex digits must be lowercase"),
        ('name = "a"\r\nmemory = 1\r\n', 1, 11, "CRLF"),
        ("\ufeffname = 'a'\n", 1, 1, "byte-order mark"),
        ("name = 'a'\n\0\n", 2, 1, "NUL byte"),
        ("name = 'a\0b'\n", 1, 10, "NUL byte inside a string"),
        ('name = "é"\nnäme = "b"\n', 2, 2, "unexpected character 'ä'"),
        ("x = 'a\\qb'", 1, 7, "invalid escape '\\q'"),
        ("x = 'a\\x41'", 1, 7, "\\x escapes"),
        ("x = 'a\\12'", 1, 7, "octal escape"),
        (
            "x = 'a'\nx += ['b']\n",
            2,
            6,
            "cannot add a list to the string value of 'x' (set at line 1)",
        ),
        ("x = ['a']\n\nx += 'b'\n", 3, 6, "cannot add a string to the list value of 'x'"),
        ("= 5\n", 1, 1, "expected a key"),
        ("name = 'a'\n# no newline after this comment", 2, 1, "comment at the end of the file"),
        ("name == 'a'", 1, 7, "expected a value"),
        ("name = 'a'\n$$\n", 2, 1, "unexpected character '$'"),
        # the first problem in the file is the one reported
        ("x = [1 2]\n$$\n", 1, 8, "expected ',' or ']'"),
        ("x = 'a\\q'\ny = 1 2\n", 1, 7, "invalid escape"),
    ],
)
def test_invalid_inputs_point_at_the_problem(text: str, line: int, column: int, words: str) -> None:
    err = error_of(text)
    assert (err.line, err.column) == (line, column), str(err)
    assert words in err.message
    assert err.file == "guest.cfg"
    assert str(err) == f"guest.cfg:{line}:{column}: {err.message}"


def test_error_is_a_value_error() -> None:
    assert isinstance(error_of("x ="), ValueError)


def test_nesting_as_deep_as_xl_allows() -> None:
    value = parse_cfg("x = " + "[" * 4996 + "]" * 4996).settings["x"]
    for _ in range(4995):
        assert isinstance(value, list)
        value = value[0]
    assert value == []


@pytest.mark.parametrize(
    ("text", "column"),
    [
        # at the token that would overflow xl's parser stack
        ("x = " + "[" * 4997 + "]" * 4997, 5002),  # the first ']'
        ("x = " + "[1," * 2000 + "]" * 2000, 6003),  # the '1' in the 2000th list
    ],
)
def test_nesting_deeper_than_xl_allows(text: str, column: int) -> None:
    err = error_of(text)
    assert "nested too deeply" in err.message
    assert (err.line, err.column) == (1, column)


def test_default_filename() -> None:
    with pytest.raises(CfgError) as info:
        parse_cfg("x =")
    assert str(info.value).startswith("<string>:1:4: ")


# --- guest names ----------------------------------------------------------------------------


def test_name_property() -> None:
    assert parse_cfg("name = 'web'").name == "web"
    assert parse_cfg("name = 7").name == "7"
    assert parse_cfg("name = ['web']").name is None
    assert parse_cfg("memory = 1").name is None


def test_guest_name_of_a_number_is_its_text() -> None:
    assert guest_name(parse_cfg("name = 0x10"), "g.cfg") == "0x10"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("\u00a0web", "U+00A0 NO-BREAK SPACE"),
        ("web\u00a0", "U+00A0 NO-BREAK SPACE"),
        ("\u3000web", "U+3000 IDEOGRAPHIC SPACE"),
        ("\u2003web", "U+2003 EM SPACE"),
        ("web\u200a", "U+200A HAIR SPACE"),
        ("\u1680web", "U+1680 OGHAM SPACE MARK"),
    ],
)
def test_names_with_unicode_whitespace_at_an_end_are_invalid(name: str, shown: str) -> None:
    with pytest.raises(CfgError) as info:
        guest_name(parse_cfg(f"memory = 1\nname = '{name}'\n"), "g.cfg")
    err = info.value
    assert (err.file, err.line, err.column) == ("g.cfg", 2, 1)
    assert f"starts or ends with blanks or other whitespace ({shown})" in err.message


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("we\u0085b", "U+0085"),
        ("we\u2028b", "U+2028 LINE SEPARATOR"),
        ("we\u2029b", "U+2029 PARAGRAPH SEPARATOR"),
        ("\u2028web", "U+2028 LINE SEPARATOR"),
        ("we\u200bb", "U+200B ZERO WIDTH SPACE"),
        ("web\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("we\x1bb", "U+001B"),
        ("we\x7fb", "U+007F"),
        ("we\u009bb", "U+009B"),
    ],
)
def test_names_with_unprintable_characters_are_invalid(name: str, shown: str) -> None:
    with pytest.raises(CfgError) as info:
        guest_name(parse_cfg(f"name = '{name}'\n"), "g.cfg")
    assert f"control character or another unprintable one ({shown})" in info.value.message


@pytest.mark.parametrize("name", ["web server", "web\u00a0server", "caf\u00e9", "\u4e2d\u6587"])
def test_names_with_inner_spaces_and_letters_of_any_script_are_fine(name: str) -> None:
    assert guest_name(parse_cfg(f"name = '{name}'\n"), "g.cfg") == name


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("memory = 1\n", 0, 0, "no 'name' key"),
        ("", 0, 0, "no 'name' key"),
        ("memory = 1\n  name = ['a']\n", 2, 3, "must be a string, not a list"),
        ("name = ''\n", 1, 1, "is empty"),
        ("name = 'Domain-0'\n", 1, 1, "the name of the control domain"),
        ("name = 'web--incoming'\n", 1, 1, "ends with '--incoming'"),
        ("name = 'web--migratedaway'\n", 1, 1, "ends with '--migratedaway'"),
        ("name = 'a\\nb'\n", 1, 1, "control character"),
        ("name = 'web '\n", 1, 1, "blanks"),
        ("name = ' web'\n", 1, 1, "blanks"),
    ],
)
def test_invalid_guest_names(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(CfgError) as info:
        guest_name(parse_cfg(text), "g.cfg")
    err = info.value
    assert (err.file, err.line, err.column) == ("g.cfg", line, column)
    assert words in err.message
    assert "'name'" in err.message


@pytest.mark.parametrize(
    "name", ["web", "Domain-1", "db.example.org", "a--incomingx", "x y", "ünï"]
)
def test_valid_guest_names(name: str) -> None:
    assert guest_name(parse_cfg(f"name = {render_value(name)}"), "g.cfg") == name


# --- rendering ------------------------------------------------------------------------------


def test_render_round_trip_of_a_sample() -> None:
    values: dict[str, XlValue] = {
        "name": 'we"ird\\na\tme\n',
        "memory": "512",
        "disk": ["a", ["b", []], ""],
        "empty": [],
    }
    text = render_cfg(values)
    assert parse_cfg(text).settings == values


def test_render_refuses_what_xl_cannot_read() -> None:
    with pytest.raises(ValueError, match="NUL"):
        render_value("a\0b")
    with pytest.raises(ValueError, match="not a valid xl key"):
        render_cfg({"Name": "a"})


def test_xlcfg_is_frozen() -> None:
    cfg = parse_cfg("name = 'a'")
    assert isinstance(cfg, XlCfg)
    with pytest.raises(AttributeError):
        cfg.settings = {}  # type: ignore[misc]
