"""parse_xl_list and split_migration_name: real xl 4.17 listings, edge cases, fuzz."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenreconcile.models import NULL_NAME, Domain, split_migration_name
from xenreconcile.simxl.cli import HEADER, format_row
from xenreconcile.xl import (
    UnreadRow,
    XlListError,
    XlListRowsError,
    parse_xl_list,
)

FUZZ_EXAMPLES = int(os.environ.get("XR_FUZZ_EXAMPLES", "3000"))

# Captured from xl 4.17 (Debian 12, PV Dom0 under QEMU); note the TABs in the header.
REAL_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
REAL_DOM0_ONLY = (
    f"{REAL_HEADER}\n"
    "Domain-0                                     0  1024     2     r-----      13.2\n"
)
REAL_JUST_CREATED = (
    f"{REAL_HEADER}\n"
    "Domain-0                                     0  1024     2     r-----      19.4\n"
    "guest1                                       1   128     1     ------       0.4\n"
)
REAL_TWO_GUESTS = (
    f"{REAL_HEADER}\n"
    "Domain-0                                     0  1024     2     r-----      33.1\n"
    "guest1                                       4   128     1     -b----       2.9\n"
    "guest2                                       5   128     1     r-----       0.3\n"
)
DOM0_ROW = "Domain-0                                     0  1024     2     r-----      13.2"


def listing(*rows: str) -> str:
    """A listing with the real header, Domain-0 and `rows`."""
    return "\n".join([REAL_HEADER, DOM0_ROW, *rows]) + "\n"


# --- real output -------------------------------------------------------------------------


def test_real_listing_with_only_domain0() -> None:
    assert parse_xl_list(REAL_DOM0_ONLY) == (
        Domain(name="Domain-0", domid=0, mem=1024, vcpus=2, flags="r-----", time=13.2),
    )


def test_real_listing_of_a_guest_just_created_with_no_state_letter() -> None:
    guest = parse_xl_list(REAL_JUST_CREATED)[1]
    assert guest == Domain(name="guest1", domid=1, mem=128, vcpus=1, flags="------", time=0.4)
    assert not guest.dying
    assert not guest.stale


def test_real_listing_with_two_guests_keeps_order() -> None:
    domains = parse_xl_list(REAL_TWO_GUESTS)
    assert [(d.name, d.domid, d.flags) for d in domains] == [
        ("Domain-0", 0, "r-----"),
        ("guest1", 4, "-b----"),
        ("guest2", 5, "r-----"),
    ]


def test_terminal_line_ends_and_trailing_blank_lines_are_accepted() -> None:
    text = REAL_TWO_GUESTS.replace("\n", "\r\r\n") + "\n\n"
    assert parse_xl_list(text) == parse_xl_list(REAL_TWO_GUESTS)


def test_simxl_prints_the_real_rows_byte_for_byte() -> None:
    assert HEADER == REAL_HEADER
    assert (
        format_row("guest1", 4, 128, 1, state="-b----", time=2.9)
        == (REAL_TWO_GUESTS.splitlines()[2])
    )
    assert format_row("Domain-0", 0, 1024, 2, state="r-----", time=13.2) == DOM0_ROW


# --- edge cases that real xl can print ----------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            format_row(
                "a-very-long-guest-name-longer-than-forty-chars",
                7,
                512,
                2,
                state="-b----",
                time=1.0,
            ),
            Domain("a-very-long-guest-name-longer-than-forty-chars", 7, 512, 2, "-b----", 1.0),
        ),
        (
            format_row("web server 2", 3, 256, 1, state="-b----", time=5.5),
            Domain("web server 2", 3, 256, 1, "-b----", 5.5),
        ),
        (
            format_row("7", 8, 128, 1, state="-b----", time=0.0),
            Domain("7", 8, 128, 1, "-b----", 0.0),
        ),
        (
            format_row("dying", 9, 0, 1, state="-----d", time=12.3),
            Domain("dying", 9, 0, 1, "-----d", 12.3),
        ),
        (
            format_row("crashed", 10, 128, 1, state="---sc-", time=4.0),
            Domain("crashed", 10, 128, 1, "---sc-", 4.0),
        ),
        (
            format_row("watchdog", 11, 128, 1, state="---sw-", time=4.0),
            Domain("watchdog", 11, 128, 1, "---sw-", 4.0),
        ),
        (
            format_row("busy", 32000, 99999, 128, state="r-p---", time=123456789.9),
            Domain("busy", 32000, 99999, 128, "r-p---", 123456789.9),
        ),
        (
            format_row("g--incoming", 12, 128, 1, state="--p---", time=0.0),
            Domain("g--incoming", 12, 128, 1, "--p---", 0.0),
        ),
    ],
)
def test_rows_real_xl_can_print(row: str, expected: Domain) -> None:
    assert parse_xl_list(listing(row))[1] == expected


@pytest.mark.parametrize(
    "name", ["\u00a0web", "web\u00a0", "\u3000web", "\u2028web", " web", "web\u0085"]
)
def test_only_xls_own_padding_is_taken_off_a_name(name: str) -> None:
    row = format_row(name, 5, 128, 1, state="-b----", time=1.5)
    assert parse_xl_list(listing(row))[1] == Domain(name, 5, 128, 1, "-b----", 1.5)


def test_a_row_that_cannot_be_read_leaves_the_others_readable() -> None:
    good = format_row("db", 3, 128, 1, state="-b----", time=1.0)
    text = listing(good, "web", format_row("mail", 4, 128, 1, state="r-----", time=2.0))
    with pytest.raises(XlListRowsError) as caught:
        parse_xl_list(text)
    error = caught.value
    assert error.line == 4
    assert str(error) == "xl list output line 4: not an xl list row: 'web'"
    assert [d.name for d in error.domains] == ["Domain-0", "db", "mail"]
    assert error.rows == (UnreadRow(4, "web", "not an xl list row: 'web'"),)


def test_every_unreadable_row_is_kept_and_counted() -> None:
    with pytest.raises(
        XlListRowsError, match=r"line 3: .*\(and 1 more unreadable rows\)"
    ) as caught:
        parse_xl_list(listing("garbage", "guest1   40000   128   1   -b----   2.9"))
    assert [(row.line, row.reason) for row in caught.value.rows] == [
        (3, "not an xl list row: 'garbage'"),
        (4, "domain id 40000 out of range"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        listing("garbage").rstrip("\n"),  # cut short: what followed is unknown
        REAL_HEADER + "\ngarbage\n",  # no Domain-0
        listing("garbage", DOM0_ROW),  # a duplicate
    ],
)
def test_unreadable_rows_in_an_unsound_listing_distrust_all_of_it(text: str) -> None:
    with pytest.raises(XlListError) as caught:
        parse_xl_list(text)
    assert not isinstance(caught.value, XlListRowsError)


def test_dying_and_stale_properties_follow_the_state_letters() -> None:
    dying, crashed = parse_xl_list(
        listing(
            format_row("a", 1, 0, 1, state="-----d", time=1.0),
            format_row("b", 2, 128, 1, state="---sc-", time=1.0),
        )
    )[1:]
    assert dying.dying
    assert not dying.stale
    assert crashed.stale
    assert not crashed.dying


# --- output that must not be trusted -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", None),
        ("\n\n", None),
        (DOM0_ROW + "\n", 1),
        ("Name ID Mem VCPUs State\n" + DOM0_ROW + "\n", 1),
        ("Name ID Mem VCPUs State Time(s) Extra\n" + DOM0_ROW + "\n", 1),
        (REAL_HEADER + "\n", None),
        (listing("guest1   1   128   1   -b----"), 3),
        (listing("guest1   1   128   1   -b----   2"), 3),
        (listing("guest1   1   128   1   -b----   2.95"), 3),
        (listing("guest1   1   128   1   b-----   2.9"), 3),
        (listing("guest1   1   128   1   -b---   2.9"), 3),
        (listing("guest1   1   128   1   -b-----   2.9"), 3),
        (listing("guest1   -1   128   1   -b----   2.9"), 3),
        (listing("guest1   1   1e3   1   -b----   2.9"), 3),
        (listing("1   128   1   -b----   2.9"), 3),
        (listing("   1   128   1   -b----   2.9"), 3),
        (listing("guest1   1   128   1   -b----   2.9   extra"), 3),
        (listing("guest1   1   128   1   -b----   nan"), 3),
        (listing("guest1   \u0661   128   1   -b----   2.9"), 3),
        (listing("guest1   40000   128   1   -b----   2.9"), 3),
        (listing("", "guest1   1   128   1   -b----   2.9"), 3),
        (listing("guest1   1   128   1   -b----   2.9", "guest1   2   128   1   -b----   2.9"), 4),
        (listing("guest1   0   128   1   -b----   2.9"), 3),
        (REAL_HEADER + "\nguest1   1   128   1   -b----   2.9\n", None),
        (REAL_HEADER + "\nDomain-0   3   1024   2   r-----   2.9\n", None),
        ("libxl: error: cannot init xl context\n", 1),
    ],
)
def test_untrusted_output_is_rejected_naming_the_line(text: str, line: int | None) -> None:
    with pytest.raises(XlListError) as caught:
        parse_xl_list(text)
    assert caught.value.line == line


def test_missing_domain0_says_so() -> None:
    with pytest.raises(XlListError, match="no Domain-0 row in xl list output"):
        parse_xl_list(REAL_HEADER + "\n")


def test_the_error_message_names_the_line_and_quotes_it() -> None:
    with pytest.raises(XlListError, match=r"line 3: not an xl list row: 'garbage here'"):
        parse_xl_list(listing("garbage here"))


# --- migration names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("g--incoming", ("g", "incoming")),
        ("g--migratedaway", ("g", "migratedaway")),
        ("g", ("g", None)),
        ("web--01--incoming", ("web--01", "incoming")),
        ("--incoming", ("--incoming", None)),
        ("g--incoming2", ("g--incoming2", None)),
        ("g-incoming", ("g-incoming", None)),
    ],
)
def test_split_migration_name(name: str, expected: tuple[str, str | None]) -> None:
    assert split_migration_name(name) == expected


# --- fuzz ----------------------------------------------------------------------------------

_NAME_CHARS = "abcxyz-_.09 \tDomain\u00e9\u4e2d"
_names = st.one_of(
    st.sampled_from(["Domain-0", "g", "web server 2", "g--incoming", "(null)", "x" * 60]),
    st.text(alphabet=_NAME_CHARS, min_size=1, max_size=12).map(lambda s: s.strip() or "g"),
)
_states = st.tuples(
    *(st.sampled_from(letters) for letters in ("r-", "b-", "p-", "s-", "-rscwS?", "d-"))
)
_rows = st.builds(
    lambda name, domid, mem, vcpus, state, t: format_row(
        name, domid, mem, vcpus, state="".join(state), time=t
    ),
    _names,
    st.integers(0, 40000),
    st.integers(0, 10**6),
    st.integers(0, 512),
    _states,
    st.integers(0, 10**8).map(lambda tenths: tenths / 10),
)
_lines = st.one_of(
    _rows,
    st.sampled_from([REAL_HEADER, DOM0_ROW, "", "\t", "Domain-0", "[rc=0]"]),
    st.text(max_size=30),
)


def _document(with_header: bool, lines: list[str]) -> str:
    """`lines` as a listing, after the real header and Domain-0 row if `with_header`."""
    return listing(*lines) if with_header else "\n".join(lines)


def _mutate(text: str, position: int, insert: str, cut: int) -> str:
    """`text` with `cut` characters removed at `position` and `insert` put there."""
    position %= len(text) + 1
    return text[:position] + insert + text[position + cut :]


_documents = st.builds(_document, st.booleans(), st.lists(_lines, max_size=5))
_inputs = st.one_of(
    _documents,
    st.builds(_mutate, _documents, st.integers(0, 400), st.text(max_size=3), st.integers(0, 4)),
)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_inputs)
def test_fuzz_only_xl_list_error_escapes(text: str) -> None:
    try:
        domains = parse_xl_list(text)
    except XlListError as exc:
        assert str(exc)
        return
    names = [d.name for d in domains]
    assert "Domain-0" in names
    named = [name for name in names if name != NULL_NAME]
    assert len(set(named)) == len(named), "only nameless domains being torn down may repeat"
    assert all(len(d.flags) == 6 for d in domains)


@settings(max_examples=max(FUZZ_EXAMPLES // 10, 100), deadline=None)
@given(st.lists(_rows, max_size=6))
def test_fuzz_formatted_rows_parse_back(rows: list[str]) -> None:
    text = listing(*rows)
    try:
        domains = parse_xl_list(text)
    except XlListError as exc:
        # only colliding rows (same name or id) and reserved domain ids may be refused
        assert "duplicate" in str(exc) or "out of range" in str(exc)
        return
    assert [
        format_row(d.name, d.domid, d.mem, d.vcpus, state=d.flags, time=d.time) for d in domains
    ][1:] == rows


def test_several_nameless_domains_being_torn_down_are_a_trusted_listing() -> None:
    # Real xl 4.17 under load, a few destroys in: two `(null)` rows at once. Refusing
    # the listing (a duplicate name) stopped every pass until they were gone.
    text = listing(
        "(null)                                       2     0     1     --p--d      40.1",
        "(null)                                       3     0     1     --p--d      40.0",
    )
    assert [(d.name, d.domid) for d in parse_xl_list(text)[1:]] == [("(null)", 2), ("(null)", 3)]


def test_two_rows_of_one_guest_name_still_are_refused() -> None:
    text = listing(
        "web                                          2   128     1     -b----       4.0",
        "web                                          3   128     1     -b----       4.0",
    )
    with pytest.raises(XlListError, match="duplicate domain name 'web'"):
        parse_xl_list(text)
