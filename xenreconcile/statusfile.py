"""The status file: `state_dir/status.json`, the document `xenreconcile status`
and `plan` read while the daemon runs (docs/json.md).

Written atomically (a temp file renamed over it, never following a symlink)
after every pass: its `daemon.last_pass` is the loop's liveness, so it changes
every time. Compact JSON: `indent` would take json's pure-Python encoder, which
made the status write half of an unchanged pass at 2,000 guests. Used by the
loop's thread only.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from xenreconcile.state import write_atomically

STATUS_FILE = "status.json"


class StatusFile:
    """The status document of one `state_dir`."""

    def __init__(self, state_dir: str, log: Any) -> None:
        self.state_dir = state_dir
        self.log = log

    def write(self, doc: dict[str, Any]) -> None:
        """Write `doc`; a failure is logged, and the next pass writes again."""
        try:
            write_atomically(self.state_dir, STATUS_FILE, json.dumps(doc), durable=False)
        except OSError as exc:
            self.log.debug("status_write_failed", error=str(exc))

    def remove(self) -> None:
        """Remove the file (the daemon stops: nobody keeps it current)."""
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.state_dir, STATUS_FILE))
