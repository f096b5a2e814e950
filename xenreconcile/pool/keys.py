"""The etcd key layout of a pool: `/xenreconcile/POOL/hosts/HOST` (liveness,
under the host's lease), `/xenreconcile/POOL/members/HOST` and
`/xenreconcile/POOL/claims/GUEST` (no lease)."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "/xenreconcile/"


@dataclass(frozen=True)
class PoolKeys:
    """The keys of the pool `name`."""

    name: str

    @property
    def prefix(self) -> str:
        """Every key of this pool starts with this."""
        return f"{ROOT}{self.name}/"

    def host(self, host: str) -> str:
        """The liveness key of `host`."""
        return f"{self.prefix}hosts/{host}"

    def member(self, host: str) -> str:
        """The membership key of `host` (no lease: only `pool takeover` removes it)."""
        return f"{self.prefix}members/{host}"

    def claim(self, guest: str) -> str:
        """The claim key of `guest`."""
        return f"{self.prefix}claims/{guest}"

    def parse(self, key: str) -> tuple[str, str] | None:
        """Given a key of this pool, ("hosts", "claims" or "members", name); None
        for any other key."""
        if not key.startswith(self.prefix):
            return None
        kind, _, name = key[len(self.prefix) :].partition("/")
        if kind not in ("hosts", "claims", "members") or not name or "/" in name:
            return None
        return kind, name
