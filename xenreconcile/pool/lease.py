"""Whether this host's lease is known to be alive: pure bookkeeping of renewal
send times, so that a slow answer only ever shortens the window."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LeaseClock:
    """The lease of TTL `ttl` seconds: renewed every `ttl / 3`; known alive until
    two thirds of the TTL after the send time of the last renewal etcd confirmed."""

    ttl: float
    last_confirmed_send: float | None = None

    @property
    def renew_every(self) -> float:
        """How often the lease is renewed."""
        return self.ttl / 3

    @property
    def safe_for(self) -> float:
        """How long after a confirmed renewal was sent the lease counts as alive."""
        return self.ttl - self.ttl / 3

    def confirmed(self, sent_at: float) -> None:
        """Record that the renewal (or grant) sent at `sent_at` was confirmed."""
        if self.last_confirmed_send is None or sent_at > self.last_confirmed_send:
            self.last_confirmed_send = sent_at

    def lost(self) -> None:
        """Record that etcd says the lease has expired."""
        self.last_confirmed_send = None

    def known_alive(self, now: float) -> bool:
        """True while the last confirmed renewal was sent less than `safe_for` ago."""
        sent = self.last_confirmed_send
        return sent is not None and now - sent < self.safe_for

    def renewal_due(self, now: float) -> bool:
        """True when the next renewal should be sent."""
        sent = self.last_confirmed_send
        return sent is None or now - sent >= self.renew_every
