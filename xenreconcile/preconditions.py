"""What a guest needs from Dom0 before `xl create` can work: pure, no I/O.

Given a parsed cfg's settings, `guest_needs` returns the paths that must exist
(every disk target that is a path, `kernel`, `ramdisk`) and the bridges its vifs
name. A need we cannot read with certainty is left out: a missing need makes a
guest wait, a need left out only lets xl report the problem as before.

Disk specs follow xl-disk-configuration(5), the way xl 4.17's lexer reads them:
comma-separated flags (`cdrom`, `discard`, ...), `key=value` pairs and
positional parameters (target, format, vdev, access, in that order); a
`target=` consumes the rest of the spec, commas included, so it comes last.
Deprecated prefixes (`phy:`, `file:`, `raw:`, `tap:aio:`, ...) before the
target are dropped, and after one the next positional is the vdev. `vdev:cdrom`
marks a cdrom. Left out: cdrom targets (the Handbook removes the ISO after the
install, and xl takes an empty cdrom), empty targets, targets handed to a block
`script=`, and relative targets (xl resolves them against its own working
directory, or they are not paths at all, like `rbd:pool/image`).

`kernel` and `ramdisk` are left out when a `bootloader` is set: pygrub reads
them from inside the guest's disk. A vif's `bridge=` is left out when the vif
uses another backend domain or a script other than vif-bridge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from xenreconcile.xlcfg import XlValue

# Bare words of a disk spec that are flags, never positional parameters.
DISK_FLAGS = frozenset({"cdrom", "direct-io-safe", "discard", "no-discard", "colo"})
# `phy:`, `tap:aio:`, ...: xl drops them (and with them the positional format).
_DEPRECATED_PREFIX = re.compile(r"(?:raw|qcow2?|vhd|tapdisk|tap2?|aio|ioemu|file|phy):")
_POSITIONALS = ("target", "format", "vdev", "access")
# How a vif that needs no Dom0 bridge names its backend or script.
_DOM0_BACKENDS = frozenset({"", "0", "Domain-0"})
_BRIDGE_SCRIPTS = frozenset({"", "vif-bridge"})


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """The parts of one disk spec that say whether its target must exist:
    `target` (None when none was given), whether it is a `cdrom`, and the block
    `script` it is handed to, if any."""

    target: str | None = None
    cdrom: bool = False
    script: str | None = None
    format: str | None = None
    vdev: str | None = None
    access: str | None = None

    @property
    def required_path(self) -> str | None:
        """The target as a path that must exist before a create, or None."""
        if self.cdrom or self.script is not None or self.format == "empty":
            return None
        if self.target is None or not self.target.startswith("/"):
            return None
        return self.target


@dataclass(frozen=True, slots=True)
class Needs:
    """What a guest needs from Dom0: paths that must exist, bridges by name."""

    paths: tuple[str, ...] = ()
    bridges: tuple[str, ...] = ()


def parse_disk_spec(spec: str) -> DiskSpec:
    """Given one DISKSPEC string, return its target, cdrom mark and script."""
    fields: dict[str, str] = {}
    cdrom = False
    prefixed = False
    rest = spec
    while rest:
        rest = rest.lstrip(" \t\n")
        if rest.startswith("target="):
            fields["target"] = rest[len("target=") :]
            break
        while (match := _DEPRECATED_PREFIX.match(rest)) is not None:
            prefixed = True
            rest = rest[match.end() :]
        param, _comma, rest = rest.partition(",")
        if param in DISK_FLAGS:
            cdrom = cdrom or param == "cdrom"
        elif "=" in param:
            key, _eq, value = param.partition("=")
            cdrom = _take_named(fields, key, value) or cdrom
        else:
            cdrom = _take_positional(fields, param, prefixed=prefixed) or cdrom
    return DiskSpec(
        target=fields.get("target"),
        cdrom=cdrom,
        script=fields.get("script"),
        format=fields.get("format"),
        vdev=fields.get("vdev"),
        access=fields.get("access"),
    )


def _take_named(fields: dict[str, str], key: str, value: str) -> bool:
    """Store `key=value` in `fields`; True when it makes the disk a cdrom."""
    if key == "devtype":
        return value == "cdrom"
    if key == "vdev":
        return _take_vdev(fields, value)
    fields[key] = value
    return False


def _take_positional(fields: dict[str, str], param: str, *, prefixed: bool) -> bool:
    """Store a positional parameter in the first free slot, as xl does (after a
    deprecated prefix the format slot is skipped; after an empty target a
    `vdev:devtype` fills the vdev slot); True when it makes the disk a cdrom."""
    if "target" not in fields:
        fields["target"] = param
        return False
    if not prefixed and "format" not in fields:
        if fields["target"] == "" and ":" in param:
            fields["format"] = "empty"
            return _take_vdev(fields, param)
        fields["format"] = param
        return False
    if "vdev" not in fields:
        return _take_vdev(fields, param)
    fields.setdefault("access", param)
    return False


def _take_vdev(fields: dict[str, str], value: str) -> bool:
    """Store a vdev, splitting a `:cdrom` / `:disk` suffix; True for `:cdrom`."""
    vdev, colon, devtype = value.rpartition(":")
    if not colon:
        fields["vdev"] = value
        return False
    fields["vdev"] = vdev
    return devtype == "cdrom"


def parse_vif_spec(spec: str) -> dict[str, str]:
    """Given one vif string (`bridge=xenbr0,mac=...`), return its key=value pairs."""
    pairs: dict[str, str] = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if eq:
            pairs[key.strip()] = value.strip()
    return pairs


def vif_bridge(spec: str) -> str | None:
    """The Dom0 bridge a vif string names, or None (no `bridge=`, another
    backend domain, or a script that is not vif-bridge)."""
    pairs = parse_vif_spec(spec)
    bridge = pairs.get("bridge")
    if not bridge or pairs.get("backend", "") not in _DOM0_BACKENDS:
        return None
    script = pairs.get("script", "").rsplit("/", 1)[-1]
    return bridge if script in _BRIDGE_SCRIPTS else None


def guest_needs(settings: Mapping[str, XlValue]) -> Needs:
    """Given a parsed cfg's settings, return the paths and bridges the guest needs."""
    paths = [
        path
        for spec in _strings(settings.get("disk"))
        if (path := parse_disk_spec(spec).required_path) is not None
    ]
    if "bootloader" not in settings:
        for key in ("kernel", "ramdisk"):
            value = settings.get(key)
            if isinstance(value, str) and value.startswith("/"):
                paths.append(value)
    bridges = [b for spec in _strings(settings.get("vif")) if (b := vif_bridge(spec))]
    return Needs(paths=_unique(paths), bridges=_unique(bridges))


def _strings(value: XlValue | None) -> list[str]:
    """The string items of a list setting (nothing for an atom or no setting)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def _unique(items: list[str]) -> tuple[str, ...]:
    """`items` without repeats, in their first order."""
    return tuple(dict.fromkeys(items))
