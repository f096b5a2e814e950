"""The metrics against the real Prometheus tools (Debian's `prometheus` package;
.ci/run installs it): a Prometheus server started as a user would, with a config
file, scraping the real daemon; `promtool check metrics` on a scrape; `promtool
check rules` on the example alert rules. Skipped where the tools are missing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.daemon_harness import DaemonRun, wait_for
from tests.test_metrics import free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "etc" / "prometheus" / "xenreconcile.rules.yml"
SCRAPE_INTERVAL = "1s"

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:
  - {rules}
scrape_configs:
  - job_name: xenreconcile
    static_configs:
      - targets: ["{target}"]
"""


def tool(name: str) -> str:
    """The path of a Prometheus tool, or skip the test."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus)")
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read().decode())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonRun, str]]:
    """The real daemon with metrics_listen on loopback: guest `web` runs, guest
    `bad` fails every create."""
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "daemon").mkdir()
    run = DaemonRun(tmp_path / "daemon", metrics_listen=address, interval="2s")
    run.sim.set_faults(create_fail={"bad": "kernel"})
    run.add_guest("web")
    run.add_guest("bad")
    try:
        run.start()
        wait_for(lambda: run.events("metrics_listening"), 20, "the metrics endpoint")
        yield run, address
    finally:
        run.stop()
        run.kill()


def scrape(address: str) -> str:
    return get_text(f"http://{address}/metrics")


def test_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


# Series for `promtool test rules`, one sample a minute: a guest down on this host
# ("web"), one running on another host of the pool ("db", state elsewhere), and a
# host that cannot confirm its pool lease.
RULE_TEST = """\
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'xenreconcile_guest_up{{instance="h1", guest="web"}}'
        values: '0x20'
      - series: 'xenreconcile_guest_state{{instance="h1", guest="web", state="backoff"}}'
        values: '1x20'
      - series: 'xenreconcile_guest_up{{instance="h1", guest="db"}}'
        values: '0x20'
      - series: 'xenreconcile_guest_state{{instance="h1", guest="db", state="elsewhere"}}'
        values: '1x20'
      - series: 'xenreconcile_pool_confirmed{{instance="h1"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 12m
        alertname: XenGuestDown
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1, guest: web}}
            exp_annotations:
              summary: "Xen guest web on h1 has been down for 10 minutes"
              description: "{down_description}"
      - eval_time: 12m
        alertname: XenreconcilePoolNotConfirmed
        exp_alerts:
          - exp_labels: {{severity: critical, instance: h1}}
            exp_annotations:
              summary: "{pool_summary}"
              description: "{pool_description}"
      - eval_time: 3m
        alertname: XenreconcilePoolNotConfirmed
        exp_alerts: []
"""


def test_the_alert_rules_fire_on_a_down_guest_not_on_one_running_elsewhere(
    tmp_path: Path,
) -> None:
    promtool = tool("promtool")
    rules = {
        r["alert"]: r["annotations"]
        for r in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"][0]["rules"]
    }
    quoted = {  # the annotations as promtool expands them, quoted for YAML
        "down_description": rules["XenGuestDown"]["description"],
        "pool_summary": rules["XenreconcilePoolNotConfirmed"]["summary"].replace(
            "{{ $labels.instance }}", "h1"
        ),
        "pool_description": rules["XenreconcilePoolNotConfirmed"]["description"],
    }
    test_file = tmp_path / "rules-test.yml"
    test_file.write_text(
        RULE_TEST.format(rules=RULES, **{k: v.replace('"', '\\"') for k, v in quoted.items()}),
        encoding="utf-8",
    )
    tested = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


@pytest.mark.parametrize("doc", ["README.md", "docs/man/xenreconcile.8"])
def test_the_docs_show_the_rules_files_alerts_and_expressions(doc: str) -> None:
    text = " ".join((ROOT / doc).read_text(encoding="utf-8").split())
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"][0]["rules"]
    for rule in rules:
        expr = " ".join(rule["expr"].split())
        assert f"alert: {rule['alert']}" in text
        assert expr + (f" for: {rule['for']}" if "for" in rule else "") in text, rule["alert"]


def test_a_scrape_of_the_daemon_passes_promtool_check_metrics(
    daemon: tuple[DaemonRun, str],
) -> None:
    promtool = tool("promtool")
    _run, address = daemon
    wait_for(lambda: 'xenreconcile_creates_total{guest="bad"' in scrape(address), 20, "a create")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape(address),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # no lint remark either


@pytest.fixture
def prometheus(tmp_path: Path, daemon: tuple[DaemonRun, str]) -> Iterator[str]:
    """A Prometheus server on loopback scraping the daemon: its base URL."""
    binary = tool("prometheus")
    _run, target = daemon
    config = tmp_path / "prometheus.yml"
    config.write_text(
        PROMETHEUS_CONFIG.format(interval=SCRAPE_INTERVAL, rules=RULES, target=target)
    )
    listen = f"127.0.0.1:{free_port()}"
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - lives with the process
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={listen}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base = f"http://{listen}"
    try:
        wait_for(lambda: ready(base), 60, "Prometheus to be ready")
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def ready(base: str) -> bool:
    try:
        return "Ready" in get_text(f"{base}/-/ready")
    except OSError:
        return False


def query(base: str, expr: str) -> dict[str, float]:
    """An instant query's result: the `guest` label (or "") -> value."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = get_json(url)
    assert answer["status"] == "success", answer
    return {r["metric"].get("guest", ""): float(r["value"][1]) for r in answer["data"]["result"]}


def test_a_real_prometheus_scrapes_the_guests_up_and_down(prometheus: str) -> None:
    wanted = {"web": 1.0, "bad": 0.0}
    wait_for(
        lambda: query(prometheus, "xenreconcile_guest_up") == wanted,
        90,
        "Prometheus to have scraped web up and bad down",
    )
    assert query(prometheus, "xenreconcile_toolstack_up") == {"": 1.0}
    backoff = 'xenreconcile_guest_state{state="backoff"} == 1'
    wait_for(lambda: query(prometheus, backoff) == {"bad": 1.0}, 60, "bad in backoff")
    failed = query(prometheus, 'xenreconcile_creates_total{result="failed"}')
    assert set(failed) == {"bad"} and failed["bad"] >= 1
    rules = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
    assert [g["name"] for g in rules] == ["xenreconcile"]
    assert {r["health"] for r in rules[0]["rules"]} <= {"ok", "unknown"}
