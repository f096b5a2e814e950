"""Self-fencing: `pool.fence.feed` runs after every confirmed lease renewal and at
no other time, so a host cut off from etcd stops feeding its watchdog and resets
(docs/pool.md, Fencing). Its failure is logged; it never stops the daemon."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

from xenreconcile.pool.store import request_timeout
from xenreconcile.schema import Config


def make_feeder(config: Config, log: Any) -> Callable[[], None]:
    """The feed action of `config` (a no-op without `pool.fence.feed`)."""
    feed = config.pool.fence.feed
    if not feed:
        return lambda: None
    env = {**os.environ, "XR_FENCE_TIMEOUT": str(int(config.pool.fence.timeout))}
    timeout = request_timeout(config.pool.lease_ttl)

    def run() -> None:
        try:
            done = subprocess.run(
                list(feed), env=env, timeout=timeout, capture_output=True, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("pool_fence_feed_failed", program=feed[0], error=str(exc))
            return
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()[-200:]
            log.error("pool_fence_feed_failed", program=feed[0], code=done.returncode, error=error)

    return run
