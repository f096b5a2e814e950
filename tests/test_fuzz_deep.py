"""Deep fuzz of the three parsers that read what an admin or xl gives us.

Only the project's own error types may escape: CfgError from the xl.cfg
parser (and nothing at all from the guest-file reader, which turns every
problem into an invalid file), XlListError from the `xl list` parser,
ConfigError from the config loader. Inputs are random text, text over the
characters each grammar cares about, and real documents cut, spliced and
mutated.

The default profile makes 100 inputs per test (a few seconds in CI);
`pytest --hypothesis-profile deep tests/test_fuzz_deep.py` makes 100,000 each
(the profile is registered in tests/conftest_profiles.py).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenreconcile.config import ConfigError, parse_config, render_sample
from xenreconcile.guestdir import parse_guest_file
from xenreconcile.models import DesiredGuest, InvalidFile
from xenreconcile.xl import XlListError, parse_xl_list
from xenreconcile.xlcfg import CfgError, guest_name, parse_cfg

DATA = Path(__file__).parent / "data" / "cfg"
CFG_SAMPLES = [p.read_text(encoding="utf-8") for p in sorted(DATA.glob("*.cfg"))]
LIST_SAMPLE = (
    "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
    "Domain-0                                     0  1024     2     r-----      13.2\n"
    "freebsd                                      3   512     1     -b----       4.0\n"
    "web--incoming                                4   256     1     --p---       0.0\n"
    "old                                          2     0     1     -----d       1.5\n"
)
CONFIG_SAMPLE = render_sample()

# Every test inherits max_examples from the active profile (100 by default, 100,000 deep).
fuzz = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutated(samples: list[str], alphabet: str) -> st.SearchStrategy[str]:
    """A sample with a slice replaced by text over `alphabet` (insert, delete, splice)."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(samples))
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        insert = draw(st.text(st.sampled_from(alphabet), max_size=12) | st.text(max_size=4))
        cut = draw(st.integers(0, len(text)))
        return (text[:start] + insert + text[end:])[: max(cut, len(text) // 2)]

    return build()


CFG_ALPHABET = "name=+[],;#'\"\\ \t\n\r0x1fé.\0"
cfg_text = st.one_of(
    st.text(max_size=200),
    st.text(st.sampled_from(CFG_ALPHABET), max_size=120),
    mutated(CFG_SAMPLES, CFG_ALPHABET),
)
LIST_ALPHABET = "Domain-0 \t\n\r0123456789.rbpscd-IDMemVCPUsStateTime()"
list_text = st.one_of(
    st.text(max_size=200),
    st.text(st.sampled_from(LIST_ALPHABET), max_size=200),
    mutated([LIST_SAMPLE], LIST_ALPHABET),
)
YAML_ALPHABET = "abcdefgilmnoprstuvwxyz_:-{}[],'\"#&*!|>%@ \t\n10.5smh~"
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=10),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
KEYS = ["guests_dir", "xl", "interval", "backoff", "guests", "concurrency", "watch", "log_file"]
config_docs = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), yaml_values, max_size=5)
config_text = st.one_of(
    st.text(max_size=200),
    st.text(st.sampled_from(YAML_ALPHABET), max_size=150),
    mutated([CONFIG_SAMPLE], YAML_ALPHABET),
    config_docs.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True)),
)


@fuzz
@given(cfg_text)
def test_cfg_parser_raises_only_cfg_error(text: str) -> None:
    try:
        cfg = parse_cfg(text, "fuzz.cfg")
        guest_name(cfg, "fuzz.cfg")
    except CfgError as exc:
        assert exc.line >= 0 and exc.column >= 0
        assert str(exc)


@fuzz
@given(st.binary(max_size=300) | cfg_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_guest_file_reader_never_raises(data: bytes) -> None:
    outcome = parse_guest_file("/guests/fuzz.cfg", data)
    assert isinstance(outcome, DesiredGuest | InvalidFile)
    if isinstance(outcome, InvalidFile):
        assert outcome.reason


@fuzz
@given(list_text)
def test_xl_list_parser_raises_only_xl_list_error(text: str) -> None:
    try:
        domains = parse_xl_list(text)
    except XlListError as exc:
        assert str(exc)
        return
    assert any(d.name == "Domain-0" and d.domid == 0 for d in domains)


@fuzz
@given(config_text)
def test_config_loader_raises_only_config_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc)
