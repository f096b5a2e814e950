"""`xenreconcile pool status [--json]` and `xenreconcile pool takeover HOST --yes`
(docs/pool.md). Imported only for these commands."""

from __future__ import annotations

import json
import sys
from typing import Any

from xenreconcile.pool.placement import PoolView
from xenreconcile.pool.store import EtcdStore, StoreError
from xenreconcile.schema import Config

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def status_document(view: PoolView) -> dict[str, Any]:
    """The `pool status --json` document: every host alive or holding a claim, and
    every claim: `{"hosts": {NAME: {"alive": bool}}, "claims": {GUEST: HOST}}`."""
    names = set(view.hosts) | set(view.claims.values()) | view.members
    return {
        "hosts": {name: {"alive": name in view.hosts} for name in sorted(names)},
        "claims": dict(sorted(view.claims.items())),
    }


def status_table(doc: dict[str, Any]) -> str:
    """The status document as the plain `pool status` shows it."""
    lines = ["HOST                 ALIVE  CLAIMS"]
    for host, info in doc["hosts"].items():
        claimed = sorted(g for g, h in doc["claims"].items() if h == host)
        alive = "yes" if info["alive"] else "NO"
        lines.append(f"{host:<20} {alive:<6} {', '.join(claimed) or '-'}")
    return "\n".join(lines)


def cmd_status(config: Config, as_json: bool) -> int:
    """Print hosts and claims; 1 when etcd cannot be read."""
    try:
        view = EtcdStore(config.pool).read()
    except StoreError as exc:
        print(f"xenreconcile: pool {config.pool.name}: etcd: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    doc = status_document(view)
    print(json.dumps(doc, indent=2) if as_json else status_table(doc))
    return EXIT_OK


def cmd_takeover(config: Config, host: str, confirmed: bool) -> int:
    """Free the claims of `host`, which the admin confirms is down (`--yes`), and
    remove it from the members; refused while `host`'s liveness key exists."""
    if not confirmed:
        print(
            f"xenreconcile: pool takeover frees the claims of {host}, so that other hosts "
            f"start its guests: confirm that {host} is down (powered off or fenced) "
            "with --yes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = EtcdStore(config.pool)
    try:
        view = store.read()
        if host in view.hosts:
            print(
                f"xenreconcile: pool host {host} is alive (its lease is renewed); not taking over",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        held = sorted(g for g, h in view.claims.items() if h == host)
        freed = [g for g in held if store.free(g, host)]
        if freed == held:
            store.forget(host)
    except StoreError as exc:
        print(f"xenreconcile: pool {config.pool.name}: etcd: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    print(f"freed {len(freed)} claim(s) of {host}: {', '.join(freed) or '-'}")
    return EXIT_OK if freed == held else EXIT_PROBLEM
