"""The peer: Debian's `xendomains` init script (xen-utils-common 4.17), fetched at bench time.

Nothing of it is kept in this repository: `apt-get download` fetches the .deb into a
temp dir, `dpkg-deb -x` unpacks it, and the copy is adapted at run time so that it
runs without Xen against the simulated xl:

- the `/proc/xen/privcmd` presence check is turned off (sed on the temp copy);
- `/etc/default/xendomains` is replaced by a temp copy whose XENDOMAINS_AUTO is the
  bench's guests dir and whose XENDOMAINS_SAVE is empty (no restore step);
- `xen-init-name` is called from the unpacked tree; it runs `xen create --dryrun`,
  which the simulated xl does not implement, so a small `xl` front in the temp dir
  answers `--dryrun` with the JSON real xl prints (`c_info.name`) and hands every
  other call to the simulated xl;
- the package's own `/usr/sbin/xen` (`exec xl "$@"`) is first on PATH.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

PACKAGE = "xen-utils-common"
INIT_SCRIPT = "etc/init.d/xendomains"
INIT_NAME = "usr/lib/xen-common/bin/xen-init-name"

# `xl create --dryrun` prints the domain's JSON; xen-init-name only reads c_info.name.
DRYRUN_FRONT = """#!/bin/sh
# Front for the simulated xl: answers `create --dryrun` like xl 4.17 (JSON on stdout).
for arg in "$@"; do
  if [ "$arg" = "--dryrun" ]; then
    for file in "$@"; do last="$file"; done
    sp='[[:space:]]*'
    name=$(sed -n "s/^${sp}name${sp}=${sp}[\\"']\\([^\\"']*\\).*/\\1/p" "$last")
    printf '{"c_info": {"name": "%s"}}\\n' "$name"
    exit 0
  fi
done
exec {simxl} "$@"
"""


class PeerUnavailable(Exception):
    """The peer could not be fetched or unpacked (no apt, no network)."""


def fetch(work_dir: Path) -> Path:
    """Download and unpack xen-utils-common into `work_dir`; returns the unpacked root."""
    work_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(work_dir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None:
            raise PeerUnavailable("apt-get not found")
        got = subprocess.run(
            ["apt-get", "download", PACKAGE],
            cwd=work_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(work_dir.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            raise PeerUnavailable(f"apt-get download {PACKAGE} failed: {got.stderr.strip()}")
    root = work_dir / "unpacked"
    if not (root / INIT_SCRIPT).exists():
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    return root


def version(work_dir: Path) -> str:
    """The fetched package's version, from its file name."""
    debs = sorted(work_dir.glob(f"{PACKAGE}_*.deb"))
    return debs[-1].name.split("_")[1] if debs else "unknown"


def prepare(unpacked: Path, run_dir: Path, guests_dir: Path, simxl_wrapper: Path) -> Path:
    """Write the adapted script and its helpers into `run_dir`; returns the script."""
    bin_dir = run_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    front = bin_dir / "xl"
    front.write_text(DRYRUN_FRONT.replace("{simxl}", shlex.quote(str(simxl_wrapper))))
    front.chmod(0o755)
    shutil.copy2(unpacked / "usr/sbin/xen", bin_dir / "xen")
    defaults = run_dir / "default-xendomains"
    text = (unpacked / "etc/default/xendomains").read_text()
    text = re.sub(r"(?m)^XENDOMAINS_AUTO=.*$", f"XENDOMAINS_AUTO={guests_dir}", text)
    text = re.sub(r"(?m)^XENDOMAINS_SAVE=.*$", "XENDOMAINS_SAVE=", text)
    defaults.write_text(text)
    script = (unpacked / INIT_SCRIPT).read_text()
    script = script.replace("! [ -e /proc/xen/privcmd ]", "false")
    script = script.replace("/etc/default/xendomains", str(defaults))
    script = script.replace(f"/{INIT_NAME}", str(unpacked / INIT_NAME))
    adapted = run_dir / "xendomains"
    adapted.write_text(script)
    adapted.chmod(0o755)
    return adapted


def run_start(script: Path, bin_dir: Path, timeout: float) -> tuple[float, str]:
    """Run `xendomains start` with `bin_dir` first on PATH; returns (seconds, output)."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(script), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return time.monotonic() - started, done.stdout + done.stderr
