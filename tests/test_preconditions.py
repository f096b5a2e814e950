"""Disk, kernel and bridge needs read from a cfg (xl-disk-configuration(5) forms)."""

from __future__ import annotations

import pytest

from xenreconcile.preconditions import Needs, guest_needs, parse_disk_spec, vif_bridge
from xenreconcile.xlcfg import parse_cfg

VOLUME = "/dev/vg/guest-volume"
ISO = "/root/image.iso"


@pytest.mark.parametrize(
    "spec",
    [
        f"{VOLUME},,hda",
        f"{VOLUME},raw,hda,rw",
        f"format=raw, vdev=hda, access=rw, target={VOLUME}",
        f"raw:{VOLUME},hda,w",
        f"phy:{VOLUME},xvda,w",
        f"tap:aio:{VOLUME},xvda,w",
        f"  {VOLUME},raw,xvda",
        f"vdev=xvda, {VOLUME}",
    ],
)
def test_disk_target_is_a_needed_path(spec: str) -> None:
    """Every equivalent form of the man page names the same target, and it must exist."""
    assert parse_disk_spec(spec).required_path == VOLUME


@pytest.mark.parametrize(
    "spec",
    [
        f"{ISO},,hdc,cdrom",
        f"{ISO},,hdc,,cdrom",
        f"{ISO},raw,hdc,devtype=cdrom",
        f"format=raw, vdev=hdc, access=ro, devtype=cdrom, target={ISO}",
        f"raw:{ISO},hdc:cdrom,ro",
        f"{ISO},raw,hdc:cdrom,r",
    ],
)
def test_cdrom_target_never_blocks(spec: str) -> None:
    """A cdrom's image may be gone (removed after the install): it is no need."""
    disk = parse_disk_spec(spec)
    assert disk.target == ISO
    assert disk.cdrom
    assert disk.required_path is None


@pytest.mark.parametrize("spec", [",,hdc:cdrom,r", ",hdc:cdrom,r", "vdev=hdc,devtype=cdrom"])
def test_empty_cdrom_has_no_target(spec: str) -> None:
    """An empty cdrom drive names no file at all."""
    disk = parse_disk_spec(spec)
    assert disk.cdrom
    assert not disk.target
    assert disk.required_path is None


def test_target_last_takes_commas_and_spaces() -> None:
    """`target=` consumes the rest of the spec, commas and trailing blanks included."""
    disk = parse_disk_spec("format=raw,vdev=xvda,target=/srv/a,b.img ")
    assert disk.target == "/srv/a,b.img "
    assert disk.vdev == "xvda"
    assert disk.format == "raw"


def test_positional_slots_in_order() -> None:
    """Target, format, vdev and access fill in that order; flags take no slot."""
    disk = parse_disk_spec(f"discard,{VOLUME},qcow2,xvdb,ro")
    assert (disk.target, disk.format, disk.vdev, disk.access) == (VOLUME, "qcow2", "xvdb", "ro")


@pytest.mark.parametrize(
    "spec",
    [
        "rbd:pool/image,raw,xvda",  # not a path
        "images/guest.img,raw,xvda",  # relative: xl resolves it, not us
        f"{VOLUME},raw,xvda,rw,script=block-drbd",  # the script gets the target
        f"format=empty,vdev=xvda,target={VOLUME}",
    ],
)
def test_targets_that_are_not_checked(spec: str) -> None:
    """What cannot be read as a Dom0 path with certainty is left to xl."""
    assert parse_disk_spec(spec).required_path is None


def test_guest_needs_from_a_cfg() -> None:
    """Disks (cdrom left out), kernel, ramdisk and bridges of a Handbook-like cfg."""
    cfg = parse_cfg(
        'name = "freebsd"\n'
        "disk = [ '/dev/zvol/tank/xendisk0,raw,hda,rw', '/root/freebsd.iso,raw,hdc:cdrom,r' ]\n"
        'kernel = "/boot/vmlinuz"\n'
        'ramdisk = "/boot/initrd.gz"\n'
        "vif = [ 'bridge=bridge0,mac=00:16:3e:00:00:01', 'mac=00:16:3e:00:00:02',"
        " 'bridge=bridge0', 'bridge=xenbr1, script=vif-bridge' ]\n"
    )
    assert guest_needs(cfg.settings) == Needs(
        paths=("/dev/zvol/tank/xendisk0", "/boot/vmlinuz", "/boot/initrd.gz"),
        bridges=("bridge0", "xenbr1"),
    )


def test_bootloader_reads_kernel_from_the_guest_disk() -> None:
    """With pygrub, `kernel` names a file inside the guest: no Dom0 need."""
    cfg = parse_cfg('name = "g"\nbootloader = "pygrub"\nkernel = "/boot/vmlinuz"\n')
    assert guest_needs(cfg.settings) == Needs()


@pytest.mark.parametrize(
    ("spec", "bridge"),
    [
        ("bridge=xenbr0", "xenbr0"),
        ("mac=00:16:3e:00:00:01, bridge = xenbr0 ", "xenbr0"),
        ("bridge=xenbr0,backend=0", "xenbr0"),
        ("bridge=xenbr0,script=/etc/xen/scripts/vif-bridge", "xenbr0"),
        ("bridge=xenbr0,backend=netdom", None),  # the bridge lives in a driver domain
        ("bridge=xenbr0,script=vif-nat", None),
        ("mac=00:16:3e:00:00:01", None),
    ],
)
def test_vif_bridge(spec: str, bridge: str | None) -> None:
    """Only a bridge Dom0 itself must have is a need."""
    assert vif_bridge(spec) == bridge
