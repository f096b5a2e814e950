"""`xl save` and `xl restore` of the simulated xl, as xl 4.17 does them (`xl shutdown`
lives in the CLI with the other ends of a domain; its HVM text is here).

    shutdown [-w] [-F] NAME|ID   asks the guest to power off: "Shutting down domain N" on
                                 stderr, rc 0 at once; with -w it also prints "Waiting for 1
                                 domains" and returns when the domain is gone ("Domain N has
                                 been shut down, reason code 0"). A guest that ignores the
                                 request keeps running (and -w waits for ever, as real xl
                                 does). An HVM guest (`type = "hvm"`) without PV drivers
                                 refuses it unless -F (the ACPI power button) is given.
    save NAME|ID FILE            writes the guest's image to FILE and destroys the domain;
                                 the image carries the guest's config, as real xl's does
    restore FILE                 makes the domain again from FILE, running; the guest goes on
                                 where it was (its boot count is unchanged: no second boot)

Fault knobs (per guest, see the package docstring): `shutdown_delay` (seconds the guest
takes to power off, default 0.3, the real 0.34 s), `ignore_shutdown` (true: the guest's
kernel never acts on the request, like the lab's busybox without /sbin/poweroff),
`no_pv_drivers` (true: an HVM guest has no PV drivers), `save_delay`, `save_fail` (rc 1,
the domain keeps running), `restore_delay`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from xenreconcile.simxl import monitor, store

IMAGE_MAGIC = "SIMXL-SAVE-1"
# real xl 4.17 to an HVM guest without PV drivers, unless -F (the ACPI power button)
NO_PV_CONTROL_TEXT = (
    "PV control interface not available: external graceful shutdown not possible.\n"
    'Use "-F" to fallback to ACPI power event.\nshutdown failed (rc=-13)'
)


def cmd_save(state_dir: Path, faults: dict[str, Any], args: list[str]) -> int:
    """`xl save DOMAIN FILE`: image written, domain gone; returns the exit code."""
    positional = [a for a in args if not a.startswith("-")]
    if len(positional) != 2:
        _err("'xl save' requires at least 2 arguments.")
        return 2
    target, file = positional
    dom, error = _lookup(store.read_state(state_dir), target)
    if dom is None:
        _err(error)
        return 1
    name = dom["name"]
    _sleep(store.for_guest(faults, "save_delay", name))
    if store.for_guest(faults, "save_fail", name):
        _err(
            f"libxl: error: libxl_stream_write.c:350:libxl__xc_domain_save_done: "
            f"Domain {dom['domid']}:saving domain: domain did not respond to suspend request: "
            "Invalid argument\nFailed to save domain, resuming domain"
        )
        return 1
    _err(f"Saving to {file} new xl format (info 0x3/0x0/1071)")
    try:
        Path(file).write_text(json.dumps(_image_of(dom)), encoding="utf-8")
    except OSError as exc:
        _err(f"Failed to open temp file {file} for writing: {os.strerror(exc.errno or 0)}")
        return 1
    with store.transaction(state_dir) as state:
        state["domains"] = [d for d in state["domains"] if d["uuid"] != dom["uuid"]]
    return 0


def cmd_restore(state_dir: Path, faults: dict[str, Any], args: list[str]) -> int:
    """`xl restore FILE`: the domain back from its image, running; returns the exit code."""
    positional = [a for a in args if not a.startswith("-")]
    if not positional:
        _err("'xl restore' requires at least 1 argument.")
        return 2
    file = positional[-1]
    image = _read_image(file)
    if image is None:
        _err(
            f"libxl: error: libxl_stream_read.c:331:stream_header_done: Invalid Magic number "
            f"in stream header\nlibxl: error: libxl_create.c:1640:domcreate_rebuild_done: "
            f"cannot (re-)build domain: -3\nxl: Failed to restore {file}"
        )
        return 3
    name = image["name"]
    _sleep(store.for_guest(faults, "restore_delay", name))
    with store.transaction(state_dir) as state:
        domid = state["next_domid"]
        state["next_domid"] = domid + 1
        if store.find(state, name) is not None:
            from xenreconcile.simxl.cli import already_exists_text  # noqa: PLC0415 - no cycle at import

            _err(already_exists_text(name, domid), end="")
            return 3
        dom = _domain_from_image(image, domid)
        state["domains"].append(dom)
    _err("xc: info: Restore successful")
    pid = monitor.spawn(state_dir, dom["uuid"], name, faults)
    with store.transaction(state_dir) as state:
        for listed in state["domains"]:
            if listed["uuid"] == dom["uuid"]:
                listed["monitor_pid"] = pid
    return 0


def _image_of(dom: dict[str, Any]) -> dict[str, Any]:
    """What the image of `dom` holds: enough to make it again."""
    keys = ("name", "mem", "vcpus", "hvm", "boots")
    return {"magic": IMAGE_MAGIC} | {k: dom.get(k) for k in keys}


def _read_image(file: str) -> dict[str, Any] | None:
    """The image in `file`, or None when it cannot be read or is not one."""
    try:
        image = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(image, dict) or image.get("magic") != IMAGE_MAGIC:
        return None
    return image


def _domain_from_image(image: dict[str, Any], domid: int) -> dict[str, Any]:
    """A running domain record made from a saved image."""
    return {
        "uuid": str(uuid.uuid4()),
        "name": image["name"],
        "domid": domid,
        "mem": int(image.get("mem") or 128),
        "vcpus": int(image.get("vcpus") or 1),
        "hvm": bool(image.get("hvm")),
        "boots": int(image.get("boots") or 1),
        "restored": True,
        "state": store.RUNNING_STATE,
        "created": time.time(),
        "die_at": None,
        "die_mode": "vanish",
        "dying_for": 0.0,
        "gone_at": None,
        "monitor_pid": None,
    }


def _lookup(state: store.State, target: str) -> tuple[dict[str, Any] | None, str]:
    """The guest named or numbered `target`, or None and xl's error text."""
    if target.isdigit():
        dom = next((d for d in state["domains"] if d["domid"] == int(target)), None)
    else:
        dom = store.find(state, target)
    if dom is None or dom["state"] == store.DYING_STATE:
        return None, f"{target} is an invalid domain identifier (rc=-6)"
    return dom, ""


def _exists(state_dir: Path, dom_uuid: str) -> bool:
    """True while the domain with `dom_uuid` is listed."""
    return any(d["uuid"] == dom_uuid for d in store.read_state(state_dir)["domains"])


def _sleep(seconds: Any) -> None:
    """Spend the seconds of a fault knob, if any."""
    if seconds:
        time.sleep(float(seconds))


def _err(text: str, end: str = "\n") -> None:
    """Write `text` to stderr at once."""
    os.write(2, (text + end).encode("utf-8"))
