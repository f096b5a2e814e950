"""Read `xenreconcile status --json` from stdin and answer one question (runs in the e2e Dom0).

    statusq.py field NAME KEY    print KEY of guest NAME ("" when null; exit 1 when no such guest)
    statusq.py table             print every guest as one line of key=value pairs
    statusq.py get A.B           print the value at a dotted path, e.g. daemon.running

A guest is found by its name, or by the file name of one of its paths (invalid files may have
no name). The status document is taken to be an object whose list values hold guest rows, or a
plain list of rows.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def rows(document: Any) -> list[dict[str, Any]]:
    """Given the parsed status document, return every guest row in it."""
    if isinstance(document, list):
        return [row for row in document if isinstance(row, dict)]
    found: list[dict[str, Any]] = []
    if isinstance(document, dict):
        for value in document.values():
            found.extend(rows(value) if isinstance(value, list) else [])
    return found


def matches(row: dict[str, Any], name: str) -> bool:
    """True when the row is guest `name` or one of its files is `name` or `name.cfg`."""
    if row.get("name") == name:
        return True
    paths = row.get("files") or row.get("paths") or ([row["path"]] if row.get("path") else [])
    return any(os.path.basename(str(p)) in (name, f"{name}.cfg") for p in paths)


def show(value: Any) -> str:
    """A field value as one line of text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("\n", " | ")
    return json.dumps(value)


def main(argv: list[str]) -> int:
    """Run the query named in argv against the JSON on stdin; return the exit status."""
    document = json.load(sys.stdin)
    if argv[:1] == ["table"]:
        for row in rows(document):
            print(" ".join(f"{key}={show(value)}" for key, value in row.items()))
        return 0
    if len(argv) == 2 and argv[0] == "get":
        value = document
        for key in argv[1].split("."):
            value = value.get(key) if isinstance(value, dict) else None
        print(show(value))
        return 0
    if len(argv) == 3 and argv[0] == "field":
        for row in rows(document):
            if matches(row, argv[1]):
                print(show(row.get(argv[2])))
                return 0
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
