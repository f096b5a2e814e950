"""The pool's etcd adapter, through etcd3gw (the JSON gateway of etcd's v3 API):
the host's lease, one range read of the pool, and the claim transactions.
Every failure to get an answer is a `StoreError`; nothing here decides."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exceptions

from xenreconcile.errors import XenreconcileError
from xenreconcile.pool.keys import PoolKeys
from xenreconcile.pool.placement import PoolView
from xenreconcile.schema import Pool

_UNANSWERED = (etcd_exceptions.Etcd3Exception, requests.RequestException, ValueError, KeyError)


class StoreError(XenreconcileError):
    """etcd did not answer, or answered something this adapter cannot read."""


def request_timeout(lease_ttl: float) -> float:
    """The time one etcd request may take: a fifth of the TTL, at most 2 s (the
    timing argument in docs/pool.md needs TTL >= 5 x this)."""
    return min(2.0, lease_ttl / 5)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class EtcdStore:
    """The etcd members of `settings.etcd`, tried in turn until one answers."""

    def __init__(self, settings: Pool) -> None:
        self.keys = PoolKeys(settings.name)
        timeout = request_timeout(settings.lease_ttl)
        self._clients = [_client(url, settings, timeout) for url in settings.etcd]
        self._current = 0

    # --- lease ----------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        """A new lease of `ttl` seconds (rounded up to whole seconds); its id."""
        answer = self._post("/lease/grant", {"TTL": int(-(-ttl // 1))})
        return int(answer["ID"])

    def refresh(self, lease: int) -> bool:
        """Renew `lease`; False when etcd says it has expired."""
        answer = self._post("/lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", -1)) > 0

    # --- reads and writes -----------------------------------------------------------------

    def publish(self, host: str, names: Iterable[str], lease: int) -> None:
        """Put this host's liveness key, listing `names`, under `lease`."""
        value = json.dumps({"listed": sorted(names)})
        self._post(
            "/kv/put", {"key": _b64(self.keys.host(host)), "value": _b64(value), "lease": lease}
        )

    def read(self) -> PoolView:
        """Every live host (with what it listed) and every claim, in one range read."""
        prefix = self.keys.prefix
        answer = self._post(
            "/kv/range", {"key": _b64(prefix), "range_end": _b64(_range_end(prefix))}
        )
        hosts: dict[str, frozenset[str]] = {}
        claims: dict[str, str] = {}
        members: set[str] = set()
        revisions: dict[str, int] = {}
        for kv in answer.get("kvs", []):
            parsed = self.keys.parse(_unb64(kv["key"]))
            value = _unb64(kv.get("value", ""))
            if parsed is None:
                continue
            kind, name = parsed
            if kind == "hosts":
                hosts[name] = _listed(name, value)
                revisions[name] = int(kv.get("mod_revision", 0))
            elif kind == "members":
                members.add(name)
            else:
                claims[name] = value
        return PoolView(hosts, claims, frozenset(members), revisions)

    def join(self, host: str) -> None:
        """Make `host` a member of the pool (a key with no lease)."""
        self._post("/kv/put", {"key": _b64(self.keys.member(host)), "value": _b64(host)})

    def forget(self, host: str) -> bool:
        """Remove `host` from the members if its liveness key is absent; True if removed."""
        key = _b64(self.keys.member(host))
        host_key = _b64(self.keys.host(host))
        return self._txn(
            [{"key": host_key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            [{"request_delete_range": {"key": key}}],
        )

    def claim(self, guest: str, host: str) -> bool:
        """Claim `guest` for `host` if nobody holds it; True if this call took it."""
        key = _b64(self.keys.claim(guest))
        return self._txn(
            [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            [{"request_put": {"key": key, "value": _b64(host)}}],
        )

    def move(self, guest: str, old: str, new: str) -> bool:
        """Move the claim of `guest` from `old` to `new`; True if it was `old`'s."""
        key = _b64(self.keys.claim(guest))
        return self._txn(
            [{"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(old)}],
            [{"request_put": {"key": key, "value": _b64(new)}}],
        )

    def free(self, guest: str, old: str) -> bool:
        """Delete the claim of `guest` if `old` holds it and `old`'s liveness key
        is absent; True if deleted."""
        key = _b64(self.keys.claim(guest))
        host_key = _b64(self.keys.host(old))
        return self._txn(
            [
                {"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(old)},
                {"key": host_key, "result": "EQUAL", "target": "CREATE", "create_revision": 0},
            ],
            [{"request_delete_range": {"key": key}}],
        )

    # --- transport ------------------------------------------------------------------------

    def _txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]]) -> bool:
        answer = self._post("/kv/txn", {"compare": list(compare), "success": list(success)})
        return bool(answer.get("succeeded", False))

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to the first member that answers, starting with the last
        one that did; raises StoreError when none does."""
        errors = []
        for step in range(len(self._clients)):
            index = (self._current + step) % len(self._clients)
            client = self._clients[index]
            try:
                answer = client.post(client.get_url(path), json=body)
            except _UNANSWERED as exc:
                errors.append(f"{client.host}:{client.port}: {_short(exc)}")
                continue
            self._current = index
            if not isinstance(answer, dict):
                raise StoreError(f"{path}: unexpected answer {answer!r:.80}")
            return answer
        raise StoreError("; ".join(errors) or "no etcd member configured")


def _listed(host: str, value: str) -> frozenset[str]:
    """The names in `host`'s liveness key; a value it cannot read is a StoreError
    (what that host runs is unknown, so the whole view is not trusted)."""
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    names = doc.get("listed") if isinstance(doc, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StoreError(f"liveness key of pool host {host} is unreadable: {value!r:.80}")
    return frozenset(names)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def _client(url: str, settings: Pool, timeout: float) -> Any:
    """An etcd3gw client for the member at `url` (TLS files from the settings)."""
    parts = urlsplit(url)
    return etcd3gw.Etcd3Client(
        host=parts.hostname or "localhost",
        port=parts.port or 2379,
        protocol=parts.scheme or "http",
        ca_cert=settings.ca_cert or None,
        cert_key=settings.key or None,
        cert_cert=settings.cert or None,
        timeout=timeout,
        api_path="/v3/",
    )
