"""Save images and what is known about them: `save_dir/NAME.save` and its record.

An image is written by `xl save` under a temp name (`.NAME.save.tmp`) and renamed
to `NAME.save` only when the save succeeded, so a half-written image never has
the name a restore looks for. Each finished save is recorded in
`state_dir/saves.json`: the boot it was made in, when, the guest's memory, and
whether the guest has been seen running since (`ran_since`). The rules:

* an image withholds the cold boot of its guest for as long as it exists (booting
  a guest whose image exists puts disk and image out of sync);
* an image is restored at the first pass of a later boot, before any cold boot;
* an image whose guest has run since the save is never restored: moved aside as
  `NAME.save.stale-TIME` and reported; so is one with no record;
* a failed restore moves it aside as `NAME.save.failed-TIME`.

Everything here is file bookkeeping; running xl is the caller's.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from xenreconcile.config import Config
from xenreconcile.state import (
    Boot,
    read_private,
    same_boot,
    trusted_uids,
    unsafe_path_problem,
    write_atomically,
)

SUFFIX = ".save"
DUE, STALE, LATER, UNRECORDED = "due", "stale", "later", "unrecorded"
RECORDS = "saves.json"
SPACE_MARGIN = 1.1  # an image is a little larger than the guest's memory (101 MB for 96 MB)
SPACE_SLACK = 64 * 1024 * 1024  # and the file system must keep some room beyond it
_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """What is known of one finished save."""

    boot_id: str | None
    boot_time: float | None
    uptime: float | None
    saved_at: float
    mem_mib: int
    ran_since: bool = False

    @property
    def boot(self) -> Boot:
        """The Dom0 boot the save was made in."""
        return Boot(self.boot_id, self.boot_time, self.uptime)


@dataclass(frozen=True, slots=True)
class Image:
    """An image in save_dir, its record (None: none), what becomes of it in this
    boot (`fate`: DUE restored now, STALE never restored, LATER at the next boot,
    UNRECORDED left to the admin) and why."""

    name: str
    path: str
    size: int
    record: Record | None
    fate: str
    why: str

    @property
    def due(self) -> bool:
        """True when the image is restored in this boot."""
        return self.fate == DUE


def image_bytes_needed(mem_mib: int) -> int:
    """The free space a save of a guest of `mem_mib` MiB needs."""
    return int(mem_mib * 1024 * 1024 * SPACE_MARGIN) + SPACE_SLACK


def savable_name(name: str) -> bool:
    """True when `name` can name an image file (no '/', not hidden)."""
    return "/" not in name and not name.startswith(".") and "\0" not in name


class SaveStore:
    """The save images of one config and their records."""

    def __init__(self, config: Config, wall: Callable[[], float] = time.time) -> None:
        self.dir = config.save_path
        self.state_dir = config.state_dir
        self.is_default = not config.save_dir
        self.wall = wall

    # --- the directory ----------------------------------------------------------------------

    def prepare(self, *, create: bool = True) -> str | None:
        """Make the default save_dir (0700) if missing and `create`; return why
        save_dir cannot take images (missing, unsafe), or None when it can."""
        if self.is_default and create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.dir, 0o700)
        if self.is_default and not create and not os.path.lexists(self.dir):
            return unsafe_path_problem(self.state_dir, trusted_uids())  # made when it saves
        if not os.path.isdir(self.dir):
            return f"save_dir {self.dir} does not exist (not mounted?)"
        return unsafe_path_problem(self.dir, trusted_uids())

    def free_bytes(self) -> int:
        """Bytes free for us in save_dir (in state_dir while the default one is not made)."""
        where = self.dir if os.path.isdir(self.dir) else self.state_dir
        st = os.statvfs(where)
        return st.f_bavail * st.f_frsize

    def image_path(self, name: str) -> str:
        """Where the image of `name` lives."""
        return os.path.join(self.dir, name + SUFFIX)

    def temp_path(self, name: str) -> str:
        """Where `xl save` writes the image of `name` before it is complete."""
        return os.path.join(self.dir, f".{name}{SUFFIX}.tmp")

    # --- saving -----------------------------------------------------------------------------

    def commit(self, name: str, boot: Boot, mem_mib: int) -> None:
        """A save of `name` finished in its temp file: give it its name, durably,
        and record it."""
        os.replace(self.temp_path(name), self.image_path(name))
        _fsync_dir(self.dir)
        record = Record(boot.boot_id, boot.boot_time, boot.uptime, self.wall(), mem_mib)
        self._write({**self.records(), name: record})

    def discard_temp(self, name: str) -> None:
        """Remove what a failed save left."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path(name))

    # --- what exists ------------------------------------------------------------------------

    def records(self) -> dict[str, Record]:
        """The records, by guest name; a damaged file counts as none (the images
        then have no record and are never restored)."""
        try:
            data = read_private(os.path.join(self.state_dir, RECORDS), trusted_uids(), _LIMIT)
            raw = json.loads(data)
            return {str(k): Record(**v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def images(self, current: Boot) -> list[Image]:
        """Every image in save_dir, by name, and whether it is due for restore in
        the `current` boot."""
        try:
            entries = sorted(os.listdir(self.dir))
        except OSError:
            return []
        records = self.records()
        found = []
        for entry in entries:
            name = entry[: -len(SUFFIX)]
            if not entry.endswith(SUFFIX) or entry.startswith(".") or not name:
                continue
            path = os.path.join(self.dir, entry)
            try:
                size = os.stat(path, follow_symlinks=False).st_size
            except OSError:
                continue
            fate, why = _fate(records.get(name), current)
            found.append(Image(name, path, size, records.get(name), fate, why))
        return found

    def withheld(self, current: Boot) -> dict[str, str]:
        """The guests that must not be cold-booted now, because an image of theirs
        exists that is not stale, with the reason shown in status."""
        return {
            image.name: f"save image {image.path}: {image.why}"
            for image in self.images(current)
            if image.fate != STALE
        }

    def note_running(self, names: Iterable[str], listed_at: float, current: Boot) -> None:
        """Given the guests a listing taken at epoch `listed_at` showed running,
        remember which of them ran in the boot of their save after it (their disks
        have moved on: the image must never be restored)."""
        records, running = self.records(), set(names)
        changed = {
            name: _ran(rec)
            for name, rec in records.items()
            if name in running
            and not rec.ran_since
            and listed_at > rec.saved_at
            and same_boot(rec.boot, current)
        }
        if changed:
            self._write({**records, **changed})

    # --- after a restore --------------------------------------------------------------------

    def consume(self, name: str) -> None:
        """The guest runs from its image: remove the image and its record."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.image_path(name))
        self._forget(name)

    def move_aside(self, name: str, why: str) -> str:
        """Rename the image of `name` to NAME.save.WHY-TIME and forget its record;
        returns the new path."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.wall()))
        aside = f"{self.image_path(name)}.{why}-{stamp}"
        os.replace(self.image_path(name), aside)
        self._forget(name)
        return aside

    def _forget(self, name: str) -> None:
        records = self.records()
        if records.pop(name, None) is not None:
            self._write(records)

    def _write(self, records: dict[str, Record]) -> None:
        text = json.dumps({k: asdict(v) for k, v in sorted(records.items())}, indent=1)
        write_atomically(self.state_dir, RECORDS, text + "\n", durable=True)


def _fate(record: Record | None, current: Boot) -> tuple[str, str]:
    """What becomes of an image with `record` in the `current` boot, and why."""
    if record is None:
        return UNRECORDED, "no record of its save: not restored, not booted (restore or remove it)"
    if record.ran_since:
        return STALE, "its guest ran after the save: never restored"
    if same_boot(record.boot, current) is not False:
        return LATER, "saved in this boot: restored at the next boot"
    return DUE, "restored before any cold boot"


def _ran(record: Record) -> Record:
    return Record(**{**asdict(record), "ran_since": True})


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- what `status` and `plan` show -------------------------------------------------------

FATE_WORDS = {
    DUE: "restored at the next pass, before any cold boot",
    LATER: "restored at the next boot",
    STALE: "never restored (its guest ran after the save); moved aside at the next pass",
    UNRECORDED: "not restored: no record of its save; restore or remove it by hand",
}


def images_document(images: Sequence[Image]) -> list[dict[str, object]]:
    """The `save_images` list of the status and plan documents (docs/json.md)."""
    return [
        {
            "name": i.name,
            "path": i.path,
            "bytes": i.size,
            "saved_at": i.record.saved_at if i.record else None,
            "restore": i.fate,
            "detail": FATE_WORDS[i.fate],
        }
        for i in images
    ]


def images_text(entries: Sequence[dict[str, object]]) -> str:
    """The lines `status` and `plan` print under their table ("" when there are none)."""
    lines = [
        f"save image {e['path']} ({int(str(e['bytes'])) // 2**20} MiB): {e['detail']}"
        for e in entries
    ]
    return "\n".join(lines)
