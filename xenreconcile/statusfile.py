"""The status file: `state_dir/status.json`, the document `xenreconcile status`
and `plan` read while the daemon runs (docs/json.md).

Written atomically (a temp file renamed over it, never following a symlink),
and only when its content changed. Used by the loop's thread only.
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
        self._last: str | None = None  # what was written, without its time stamp

    def write(self, doc: dict[str, Any]) -> None:
        """Write `doc` unless only its `generated_at` differs from the last one
        written; a failure is logged and tried again next time."""
        body = json.dumps({k: v for k, v in doc.items() if k != "generated_at"}, sort_keys=True)
        if body == self._last:
            return
        try:
            write_atomically(self.state_dir, STATUS_FILE, json.dumps(doc, indent=1), durable=False)
        except OSError as exc:
            self.log.debug("status_write_failed", error=str(exc))
            return
        self._last = body

    def remove(self) -> None:
        """Remove the file (the daemon stops: nobody keeps it current)."""
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.state_dir, STATUS_FILE))
