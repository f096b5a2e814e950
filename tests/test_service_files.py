"""The service files pass their system's own checkers: shellcheck for the rc.d
script, systemd-analyze for the unit, mandoc for the man pages; the newsyslog
entry and the unit agree with the config defaults."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RC_SCRIPT = ROOT / "rc.d" / "xenreconcile"
UNIT = ROOT / "etc" / "systemd" / "xenreconcile.service"
GUESTS_UNIT = ROOT / "etc" / "systemd" / "xenreconcile-guests.service"
DEBIAN = ROOT / "etc" / "debian"
LINUX_INSTALL = ROOT / "tests" / "linux_install.sh"
NEWSYSLOG = ROOT / "etc" / "newsyslog.conf.d" / "xenreconcile.conf"
MAN_PAGES = {
    "man8/xenreconcile.8": ROOT / "docs" / "man" / "xenreconcile.8",
    "man5/xenreconcile.yaml.5": ROOT / "docs" / "man" / "xenreconcile.yaml.5",
}


def tool(name: str, package: str) -> str:
    """The path of a checker program; skips the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package}; .ci/run installs it)")
    return path


def config_default(key: str) -> str:
    """The default of a config key as the schema shows it."""
    config = pytest.importorskip("xenreconcile.config")
    return next(default for name, _, default, _ in config.option_table() if name == key)


def seconds(duration: str) -> float:
    """Seconds of a simple duration such as `15s`, `2m` or `90`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration)
    assert match, duration
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def unit_settings(unit: Path | None = None) -> dict[str, list[str]]:
    """KEY=VALUE lines of the unit (default: the daemon's), values of repeated keys in order."""
    settings: dict[str, list[str]] = {}
    for line in (unit or UNIT).read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_rc_script_passes_shellcheck() -> None:
    shellcheck = tool("shellcheck", "shellcheck")

    result = subprocess.run(
        [shellcheck, "-s", "sh", str(RC_SCRIPT)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "script", [DEBIAN / "xenreconcile.sh", LINUX_INSTALL], ids=lambda script: script.name
)
def test_linux_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = tool("shellcheck", "shellcheck")

    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_rc_script_declares_its_place_in_rcorder() -> None:
    text = RC_SCRIPT.read_text(encoding="utf-8")

    assert "# PROVIDE: xenreconcile\n" in text
    assert "# REQUIRE: LOGIN xencommons\n" in text
    assert "# KEYWORD: shutdown\n" in text


def test_rc_script_never_kills_by_name_or_process_group() -> None:
    code = [
        line
        for line in RC_SCRIPT.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]

    assert not [line for line in code if re.search(r"\b(pkill|killall)\b|kill\s+-\S*\s+-\d", line)]


@pytest.mark.parametrize("source", [UNIT, GUESTS_UNIT], ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, source: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    program = tmp_path / "xenreconcile"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    unit = tmp_path / source.name
    unit.write_text(
        source.read_text(encoding="utf-8").replace(
            "/opt/xenreconcile/bin/xenreconcile", str(program)
        )
    )
    # Documentation= names man pages: let man(1) find ours.
    for relative, page in MAN_PAGES.items():
        (tmp_path / "man" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, tmp_path / "man" / relative)

    # Without man(1) (Debian package man-db) the Documentation= check cannot run.
    man_check = [] if shutil.which("man") else ["--man=no"]

    result = subprocess.run(
        [analyze, "verify", *man_check, str(unit)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MANPATH": str(tmp_path / "man")},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert source.name not in result.stderr, result.stderr


def test_guests_unit_drains_at_stop_only_and_outwaits_the_drain() -> None:
    settings = unit_settings(GUESTS_UNIT)

    assert settings["Type"] == ["oneshot"] and settings["RemainAfterExit"] == ["yes"]
    assert settings["ExecStop"][0].split()[-1] == "shutdown-guests"
    assert "shutdown-guests" not in settings["ExecStart"][0]
    assert settings["Conflicts"] == ["xendomains.service"]
    after = " ".join(settings["After"]).split()
    assert {"xenstored.service", "xenreconcile.service", "remote-fs.target"} <= set(after)
    assert "PartOf" not in settings and "Requires" not in settings, (
        "a restart of the daemon's unit must not drain the host"
    )
    assert seconds(settings["TimeoutStopSec"][0]) > seconds(config_default("host_shutdown_timeout"))


def test_unit_leaves_xl_monitors_alone_and_outwaits_the_daemon() -> None:
    settings = unit_settings()

    assert settings["KillMode"] == ["process"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Restart"] == ["on-failure"]
    assert seconds(settings["TimeoutStopSec"][0]) > seconds(config_default("stop_timeout"))


def newsyslog_entries() -> dict[str, list[str]]:
    """The fields of each newsyslog entry, by log file."""
    entries = [
        line.split()
        for line in NEWSYSLOG.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {fields[0]: fields for fields in entries}


def rc_variable(name: str) -> str:
    """The value the rc.d script assigns to a variable, with ${name} expanded."""
    text = RC_SCRIPT.read_text(encoding="utf-8")
    match = re.search(rf'^{name}="([^"]*)"$', text, flags=re.MULTILINE)
    assert match, f"{name} not set in the rc.d script"
    return match.group(1).replace("${name}", "xenreconcile")


def test_newsyslog_rotates_the_log_and_the_daemons_stderr() -> None:
    assert sorted(newsyslog_entries()) == sorted(
        [config_default("log_file"), rc_variable("output_file")]
    )


def test_newsyslog_entry_rotates_the_default_log_without_a_signal() -> None:
    _, owner, mode, count, size, when, flags = newsyslog_entries()[config_default("log_file")]

    assert owner == "root:wheel"
    assert re.fullmatch(r"[0-7]{3}", mode)
    assert int(count) > 0
    assert size == "*" or int(size) > 0
    assert when.startswith(("$", "@", "*")) or when.isdigit()
    assert "N" in flags, "no signal: the daemon reopens a rotated log by itself"


def test_newsyslog_has_the_supervisor_reopen_the_daemons_stderr() -> None:
    """daemon(8) -H reopens its -o file on SIGHUP; the daemon's own pid must not get it."""
    output_file = rc_variable("output_file")
    command_args = rc_variable("command_args").split()
    entry = newsyslog_entries()[output_file]

    assert command_args[command_args.index("-o") + 1] == "${output_file}"
    assert "-H" in command_args
    _, owner, mode, count, size, _, flags, pid_file, signal_number = entry
    assert pid_file == rc_variable("pidfile") == "/var/run/xenreconcile_daemon.pid"
    assert signal_number == "1"
    assert "N" not in flags
    assert mode == "600", "daemon(8) creates the file 0600"
    assert owner == "root:wheel"
    assert int(count) > 0
    assert int(size) > 0


@pytest.mark.parametrize("page", MAN_PAGES.values(), ids=lambda page: page.name)
def test_man_page_is_mandoc_lint_clean(page: Path) -> None:
    mandoc = tool("mandoc", "mandoc")

    result = subprocess.run(
        [mandoc, "-Tlint", str(page)], capture_output=True, text=True, check=False
    )

    # Pages of other packages (xl(1), daemon(8), ...) need not be installed here.
    messages = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "referenced manual not found" not in line
    ]
    assert messages == []


PORT = ROOT / "ports" / "sysutils" / "py-xenreconcile"
# PyPI project name -> FreeBSD port origin of its py- port.
PORT_ORIGINS = {
    "structlog": "devel/py-structlog",
    "pyyaml": "devel/py-yaml",
    "hatchling": "devel/py-hatchling",
    "prometheus-client": "devel/py-prometheus-client",
}


def port_variable(name: str) -> str:
    """The value of a variable of the port's Makefile, continuation lines joined."""
    text = (PORT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(rf"^{name}=\s*(.*)$", text, flags=re.MULTILINE)
    assert match, f"{name} not set in the port's Makefile"
    return " ".join(match.group(1).split())


def project() -> dict[str, Any]:
    """The [project] and [build-system] tables of pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def port_dependency(requirement: str) -> str:
    """The ports tree spelling of a PEP 508 `name>=version` requirement."""
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement.strip())
    assert match, requirement
    name, minimum = match.group(1).lower(), match.group(2)
    package = "yaml" if name == "pyyaml" else name
    return f"${{PYTHON_PKGNAMEPREFIX}}{package}>={minimum}:{PORT_ORIGINS[name]}@${{PY_FLAVOR}}"


def test_port_rc_script_is_the_source_trees_with_prefix() -> None:
    expected = RC_SCRIPT.read_text(encoding="utf-8").replace("/usr/local", "%%PREFIX%%")

    assert (PORT / "files" / "xenreconcile.in").read_text(encoding="utf-8") == expected, (
        "regenerate: sed 's,/usr/local,%%PREFIX%%,g' rc.d/xenreconcile"
        " > ports/sysutils/py-xenreconcile/files/xenreconcile.in"
    )


def test_port_depends_on_what_pyproject_requires() -> None:
    metadata = project()
    freebsd_requirements = [
        requirement.split(";")[0]
        for requirement in metadata["project"]["dependencies"]
        if "linux" not in requirement
    ]
    run_depends = port_variable("RUN_DEPENDS").split()
    build_depends = port_variable("BUILD_DEPENDS").split()

    assert sorted(port_dependency(r) for r in freebsd_requirements) == sorted(
        d for d in run_depends if d.startswith("${PYTHON_PKGNAMEPREFIX}")
    )
    assert [port_dependency(r) for r in metadata["build-system"]["requires"]] == build_depends
    assert port_variable("DISTVERSION") == metadata["project"]["version"]
    assert port_variable("USE_PYTHON").split() == ["autoplist", "pep517"]
    assert port_variable("USE_RC_SUBR") == "xenreconcile"


def test_port_installs_what_its_plist_lists() -> None:
    plist = (PORT / "pkg-plist").read_text(encoding="utf-8").split("\n")
    makefile = (PORT / "Makefile").read_text(encoding="utf-8")

    assert "@sample etc/xenreconcile.yaml.sample" in plist
    for page in MAN_PAGES:
        assert f"share/man/{page}.gz" in plist
        assert f"docs/man/{Path(page).name}" in makefile
    assert "etc/newsyslog.conf.d/xenreconcile.conf" in plist
    assert f"{NEWSYSLOG.relative_to(ROOT)}" in makefile
    assert (ROOT / "etc" / "xenreconcile.yaml.sample").exists()


# The README's Linux quickstart, the unit and the Debian files must agree. The commands
# come from tests/linux_install.sh --print: what CI runs as root on Debian 12.


def quickstart() -> list[list[str]]:
    """The README's Linux quickstart commands, each split into words."""
    result = subprocess.run(
        ["bash", str(LINUX_INSTALL), "--print"], capture_output=True, text=True, check=True
    )
    return [line.split() for line in result.stdout.splitlines() if line.strip()]


def installed_as(source: str) -> str:
    """Where the quickstart's `install ... SOURCE DEST` puts a file of the tree."""
    for words in quickstart():
        if "install" in words and source in words:
            destination = words[words.index(source) + 1]
            return destination + Path(source).name if destination.endswith("/") else destination
    pytest.fail(f"the Linux quickstart does not install {source}")


def unit_exec_start() -> list[str]:
    """The words of the unit's ExecStart."""
    (exec_start,) = unit_settings()["ExecStart"]
    return exec_start.split()


def debian_config() -> Any:
    """etc/debian/xenreconcile.yaml, parsed as the daemon parses it."""
    config = pytest.importorskip("xenreconcile.config")
    path = DEBIAN / "xenreconcile.yaml"
    return config.parse_config(path.read_text(encoding="utf-8"), str(path))


def test_linux_quickstart_builds_a_venv_with_debians_python_and_no_pypi_xenreconcile() -> None:
    commands = quickstart()
    venvs = [words[3] for words in commands if words[:3] == ["/usr/bin/python3", "-m", "venv"]]
    pips = [words for words in commands for word in words if word.endswith("pip")]

    assert venvs == ["/opt/xenreconcile"]
    assert pips == [["/opt/xenreconcile/bin/pip", "install", "."]], (
        "only the venv's pip, on this tree"
    )
    assert unit_exec_start()[0] == "/opt/xenreconcile/bin/xenreconcile"
    assert "python3-venv" in next(words for words in commands if "apt-get" in words)


def test_linux_quickstart_installs_the_files_the_unit_names() -> None:
    program, *args = unit_exec_start()
    config_path = args[args.index("-c") + 1]

    assert installed_as("etc/systemd/xenreconcile.service") == (
        "/etc/systemd/system/xenreconcile.service"
    )
    assert installed_as("etc/debian/xenreconcile.yaml") == config_path == "/etc/xenreconcile.yaml"
    assert args[-1] == "run"
    for page in MAN_PAGES.values():
        assert installed_as(str(page.relative_to(ROOT))).startswith("/usr/local/share/man/")
    for words in quickstart():
        for word in words:
            if word.startswith(("etc/", "docs/")):
                assert (ROOT / word).is_file(), f"the quickstart names {word}, not in the tree"
    wrapper = (DEBIAN / "xenreconcile.sh").read_text(encoding="utf-8")
    assert f"exec {program} " in wrapper
    assert f"XENRECONCILE_CONFIG:={config_path}" in wrapper


def test_debian_config_sets_debians_paths() -> None:
    config = debian_config()

    assert config.guests_dir == "/etc/xen/guests"
    assert config.state_dir == "/var/lib/xenreconcile"
    assert config.xl == ("/usr/sbin/xl",)
    assert config_default("state_dir") != config.state_dir, "FreeBSD's default is /var/db"
    assert any(
        words[:2] == ["install", "-d"] and config.guests_dir in words for words in quickstart()
    ), "the quickstart creates the guests directory"
    logrotate = [
        line.split()
        for line in (DEBIAN / "xenreconcile.logrotate").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert logrotate[0] == [config.log_file, "{"]
    # The daemon reopens a rotated log by itself: no copy, no signal.
    assert not [words for words in logrotate if words[0] in ("copytruncate", "postrotate")]


def test_debian_wrapper_runs_the_venv_program_with_debians_config(tmp_path: Path) -> None:
    program = tmp_path / "xenreconcile"
    program.write_text('#!/bin/sh\necho "$XENRECONCILE_CONFIG" "$@"\n')
    program.chmod(0o755)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(
        (DEBIAN / "xenreconcile.sh")
        .read_text(encoding="utf-8")
        .replace("/opt/xenreconcile/bin/xenreconcile", str(program))
    )
    wrapper.chmod(0o755)

    def run(**env: str) -> str:
        return subprocess.run(
            [str(wrapper), "hold", "web", "--reason", "two words"],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin", **env},
        ).stdout

    assert run() == "/etc/xenreconcile.yaml hold web --reason two words\n"
    assert run(XENRECONCILE_CONFIG="/srv/x.yaml") == "/srv/x.yaml hold web --reason two words\n"
