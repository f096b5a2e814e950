"""The one bit of logic in the value types: which line of xl's output says why."""

from __future__ import annotations

import pytest

from xenreconcile.models import CreateResult

# Real xl 4.17 outputs, as captured on a Xen 4.17 Dom0 (long lines kept verbatim).
NO_KERNEL = """Parsing config from /tmp/nokernel.cfg
xc: error: panic: xg_dom_core.c:205: failed to open file '/no/such/vmlinuz': No such file or directory: Internal error
libxl: error: libxl_dom.c:646:libxl__build_pv: xc_dom_kernel_file failed: No such file or directory
libxl: error: libxl_create.c:1640:domcreate_rebuild_done: Domain 3:cannot (re-)build domain: -3
libxl: error: libxl_domain.c:1064:domain_destroy_cb: Domain 3:Destruction of domain failed
"""
PARSE_ERROR = """Parsing config from /tmp/bad.cfg
/tmp/bad.cfg:3: config parsing error near `is': syntax error, unexpected IDENT, expecting += or '='
Failed to parse config: Invalid argument
"""
EXISTS = """Parsing config from /lab/guest/guest1.cfg
libxl: error: libxl_domain.c:81:libxl__domain_rename: Domain 2:Domain with name "guest1" already exists.
libxl: error: libxl_create.c:1296:initiate_domain_create: Domain 2:cannot make domain: -6
"""


@pytest.mark.parametrize(
    ("output", "cause"),
    [
        (NO_KERNEL, "failed to open file '/no/such/vmlinuz'"),
        (PARSE_ERROR, "/tmp/bad.cfg:3: config parsing error near `is'"),
        (EXISTS, 'Domain with name "guest1" already exists.'),
        ("Parsing config from /x.cfg\nsomething odd\n", "something odd"),
        ("", "no error output"),
    ],
)
def test_the_error_names_the_first_error_line(output: str, cause: str) -> None:
    result = CreateResult(ok=False, exit_code=3, stderr_tail=output)
    assert cause in result.cause
    assert result.error.startswith("xl create exited 3: ")


def test_a_timeout_says_so() -> None:
    result = CreateResult(ok=False, exit_code=None, timed_out=True, duration=120.2)
    assert result.error == "xl create timed out after 120s"


def test_success_has_no_error() -> None:
    assert CreateResult(ok=True, exit_code=0).error == ""
