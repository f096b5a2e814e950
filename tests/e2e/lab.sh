#!/bin/bash
# The e2e lab: a real Xen 4.17 hypervisor with a Debian 12 Linux PV Dom0, booted by QEMU (TCG).
#
#   lab.sh deps               install the host packages the lab needs (apt-get)
#   lab.sh build [--force]    build the Dom0 image and boot files (skipped when cached and unchanged)
#   lab.sh venv               build the project's virtualenv for Dom0 (host /usr/bin/python3, shared over 9p)
#   lab.sh share SCENARIO     fill the share with the Dom0 scripts and tests/e2e/scenarios/SCENARIO.sh
#   lab.sh boot [-t SECS] [--shell]
#                             boot the lab once; Dom0 runs the scenario (across its own reboots) and
#                             powers off; exits 0 when Dom0 powered off on its own
#
# Everything lives under $XENLAB_WORK (default: <repo>/.xenlab): rootfs/ (debootstrap tree),
# out/ (image, hypervisor, kernel, initrd), share/ (9p share: scripts, venv, results), logs/.
# The share is mounted in Dom0 at the same absolute path as on the host, so the venv's scripts
# (whose #! lines name the venv's python by absolute path) run unchanged in Dom0.
set -euo pipefail

E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E/../.." && pwd)
WORK=${XENLAB_WORK:-$REPO/.xenlab}
ROOTFS=$WORK/rootfs
OUT=$WORK/out
SHARE=$WORK/share
LOGS=$WORK/logs
SUITE=bookworm
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMG_SIZE=${IMG_SIZE:-1536M}

HOST_PACKAGES=(qemu-system-x86 debootstrap e2fsprogs busybox-static cpio xz-utils zstd bc
  python3 python3-venv)
DOM0_PACKAGES=(xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils
  linux-image-amd64 initramfs-tools zstd kmod busybox-static procps python3 iproute2)
# kernel module trees a Dom0 inside QEMU never loads (keeps the image and mke2fs small)
PRUNE_MODULES=(drivers/gpu drivers/net/wireless drivers/net/ethernet drivers/media drivers/infiniband
  sound drivers/staging drivers/bluetooth drivers/iio drivers/isdn drivers/usb drivers/scsi
  drivers/hwmon drivers/mtd drivers/comedi drivers/input/touchscreen drivers/video drivers/hid
  net/wireless net/mac80211 net/bluetooth fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd fs/ceph
  fs/smb fs/f2fs drivers/md drivers/target drivers/nvme drivers/thunderbolt)

say() { echo "== lab: $*" >&2; }
die() { echo "== lab: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | awk '{printf "%.1f", $1}'; }

# --- deps -----------------------------------------------------------------------------------

cmd_deps() {
  export DEBIAN_FRONTEND=noninteractive
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then say "host packages present"; return 0; fi
  say "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}

check_host() {
  local tool
  for tool in qemu-system-x86_64 debootstrap mke2fs cpio bc zstd; do
    command -v "$tool" >/dev/null || die "$tool missing: run tests/e2e/run.sh --install-deps"
  done
  [[ -x /bin/busybox ]] || die "/bin/busybox missing: run tests/e2e/run.sh --install-deps"
  [[ $(id -u) == 0 ]] || die "the image build needs root (debootstrap, chroot)"
}

# --- build ----------------------------------------------------------------------------------

# The inputs of the image: when their hash changes the image is rebuilt.
image_inputs_hash() {
  {
    declare -f cmd_build build_rootfs install_lab_files build_guest_payload build_boot_files
    declare -p DOM0_PACKAGES PRUNE_MODULES SUITE IMG_SIZE
    cat "$E2E/image/"*
  } | sha256sum | cut -d' ' -f1
}

cmd_build() {
  local force=${1:-}
  local want; want=$(image_inputs_hash)
  if [[ $force != --force && -f $OUT/dom0.img && -f $OUT/xen && $(cat "$OUT/inputs.sha256" 2>/dev/null) == "$want" ]]; then
    say "image up to date ($OUT/dom0.img)"
    return 0
  fi
  check_host
  local t0; t0=$(now)
  mkdir -p "$OUT" "$LOGS"
  rm -f "$OUT/inputs.sha256"
  [[ $force == --force ]] && rm -rf "$ROOTFS"
  build_rootfs
  install_lab_files
  build_guest_payload
  build_boot_files
  rm -f "$OUT/dom0.img"
  mke2fs -q -t ext4 -L dom0root -d "$ROOTFS" "$OUT/dom0.img" "$IMG_SIZE"
  echo "$want" > "$OUT/inputs.sha256"
  say "image built in $(since "$t0")s"
}

chroot_mounts() {
  mount -t proc proc "$ROOTFS/proc"
  mount -t sysfs sys "$ROOTFS/sys"
  mount --bind /dev "$ROOTFS/dev"
  mount --bind /dev/pts "$ROOTFS/dev/pts"
}

chroot_umounts() {
  local m
  for m in dev/pts dev sys proc; do umount "$ROOTFS/$m" 2>/dev/null || true; done
}

# debootstrap (only when the tree is missing), then the Dom0 packages, then prune.
build_rootfs() {
  if [[ ! -x $ROOTFS/usr/bin/apt-get ]]; then
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" > "$LOGS/debootstrap.log" 2>&1 \
      || { tail -20 "$LOGS/debootstrap.log"; die "debootstrap failed"; }
  fi
  trap chroot_umounts EXIT
  chroot_mounts
  # never start services inside the chroot
  printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
  cp /etc/apt/sources.list.d/debian.sources "$ROOTFS/etc/apt/sources.list.d/" 2>/dev/null || true
  echo 'APT::Install-Recommends "false";' > "$ROOTFS/etc/apt/apt.conf.d/99norecommends"
  mkdir -p "$ROOTFS/etc/initramfs-tools/conf.d"
  printf 'MODULES=list\nCOMPRESS=zstd\n' > "$ROOTFS/etc/initramfs-tools/conf.d/xenlab.conf"
  printf 'virtio_pci\nvirtio_blk\next4\n' > "$ROOTFS/etc/initramfs-tools/modules"
  DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" sh -c \
    "apt-get update -q && apt-get install -y -q --no-install-recommends ${DOM0_PACKAGES[*]} && apt-get clean" \
    > "$LOGS/apt.log" 2>&1 || { tail -20 "$LOGS/apt.log"; die "apt-get in the Dom0 tree failed"; }
  rm -rf "$ROOTFS"/var/lib/apt/lists/*
  local kver; kver=$(dom0_kernel_version)
  rm -rf "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
  find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} +
  local d
  for d in "${PRUNE_MODULES[@]}"; do rm -rf "$ROOTFS/lib/modules/$kver/kernel/$d"; done
  chroot "$ROOTFS" depmod -a "$kver"
  chroot_umounts
  trap - EXIT
}

dom0_kernel_version() {
  find "$ROOTFS/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1
}

# The Dom0 side of the lab that lives in the image: PID 1 stub, service helpers, settings.
install_lab_files() {
  install -m 755 "$E2E/image/dom0-stub-init" "$ROOTFS/sbin/xenlab-init"
  local c
  for c in reboot poweroff halt; do ln -sf /bin/busybox "$ROOTFS/usr/local/sbin/$c"; done
  echo '/dev/vda / ext4 rw,noatime 0 1' > "$ROOTFS/etc/fstab"
  echo dom0 > "$ROOTFS/etc/hostname"
  # xenconsoled logs every guest console to /var/log/xen/console/guest-NAME.log
  grep -q '^XENCONSOLED_ARGS=' "$ROOTFS/etc/default/xen" \
    || echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> "$ROOTFS/etc/default/xen"
  chroot "$ROOTFS" passwd -d root > /dev/null
}

# PV guest payload at /xenlab/guest in the image: the Debian kernel as an uncompressed vmlinux
# (xl then skips the slow emulated xz decompression: create ~1.4 s instead of ~5 s) and a
# busybox initramfs whose init prints a hello line on the console and sleeps, and which powers
# off or reboots when xl asks it to.
build_guest_payload() {
  local kver g dest=$ROOTFS/xenlab/guest
  kver=$(dom0_kernel_version)
  g=$(mktemp -d)
  mkdir -p "$g/bin" "$g/proc" "$g/dev" "$dest"
  cp /bin/busybox "$g/bin/busybox"
  local a
  for a in sh mount echo sleep uname cat sync; do ln -s busybox "$g/bin/$a"; done
  install -m 755 "$E2E/image/guest-init" "$g/init"
  # the kernel's orderly poweroff / reboot (xl shutdown, xl reboot) runs /sbin/poweroff or
  # /sbin/reboot; without them the guest ignores the request
  mkdir -p "$g/sbin"
  install -m 755 "$E2E/image/guest-poweroff" "$g/sbin/poweroff"
  install -m 755 "$E2E/image/guest-reboot" "$g/sbin/reboot"
  (cd "$g" && find . | cpio -o -H newc --quiet | gzip -9) > "$dest/initrd.cpio.gz"
  rm -rf "$g"
  /usr/bin/python3 - "$ROOTFS/boot/vmlinuz-$kver" "$dest/vmlinux" <<'PY'
import lzma
import sys

data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
elf = lzma.LZMADecompressor().decompress(data[start:])
assert elf[:4] == b"\x7fELF", "the kernel did not decompress to an ELF image"
open(sys.argv[2], "wb").write(elf)
PY
}

# Host-side boot files: the hypervisor (gunzipped: a multiboot1 ELF that QEMU -kernel boots),
# the Dom0 kernel and a small busybox initrd that loads virtio/ext4 and switches to the disk.
build_boot_files() {
  local kver xengz f
  kver=$(dom0_kernel_version)
  xengz=$(find "$ROOTFS/boot" -name 'xen-4.*-amd64.gz' | sort -V | tail -1)
  gunzip -c "$xengz" > "$OUT/xen"
  cp "$ROOTFS/boot/vmlinuz-$kver" "$OUT/vmlinuz"
  f=$(mktemp -d)
  mkdir -p "$f/bin"
  cp /bin/busybox "$f/bin/busybox"
  install -m 755 "$E2E/image/initramfs-init" "$f/init"
  : > "$f/modules.order"
  local m ko
  for m in virtio_pci virtio_blk crc32c_generic ext4; do
    chroot "$ROOTFS" modprobe -S "$kver" --show-depends "$m"
  done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' | while read -r ko; do
    mkdir -p "$f$(dirname "$ko")"
    cp "$ROOTFS$ko" "$f$ko"
    echo "${ko#/}" >> "$f/modules.order"
  done
  (cd "$f" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.img"
  rm -rf "$f"
}

# --- venv -----------------------------------------------------------------------------------

# Dom0 runs the venv with its own /usr/bin/python3, so the host's must be Debian's and the same
# minor version as the image's.
cmd_venv() {
  local py=/usr/bin/python3 venv=$SHARE/venv t0
  t0=$(now)
  [[ -x $py ]] || die "$py missing: run tests/e2e/run.sh --install-deps"
  dpkg -S "$(readlink -f $py)" > /dev/null 2>&1 || die "$py is not Debian's python3"
  local ver; ver=$($py -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
  if [[ -d $ROOTFS/usr/bin && ! -x $ROOTFS/usr/bin/$ver ]]; then
    die "host $py is $ver but the Dom0 image has $(basename "$(readlink -f "$ROOTFS/usr/bin/python3")")"
  fi
  mkdir -p "$SHARE"
  local deps_hash; deps_hash=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
  if [[ ! -x $venv/bin/python || $(cat "$venv/.deps.sha256" 2>/dev/null) != "$deps_hash" ]]; then
    rm -rf "$venv"
    $py -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check "$REPO" > "$LOGS/pip.log" 2>&1 \
      || { tail -20 "$LOGS/pip.log"; die "pip install of the project failed"; }
    echo "$deps_hash" > "$venv/.deps.sha256"
  fi
  # the project itself changes all the time: always reinstall it (not editable: the source
  # tree is not in Dom0)
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$REPO" \
    > "$LOGS/pip.log" 2>&1 || { tail -20 "$LOGS/pip.log"; die "pip install of the project failed"; }
  say "venv ready in $(since "$t0")s: $venv"
}

# --- share ----------------------------------------------------------------------------------

cmd_share() {
  local scenario=${1:?usage: lab.sh share SCENARIO}
  local file=$E2E/scenarios/$scenario.sh
  [[ -f $file ]] || die "no scenario $file"
  mkdir -p "$SHARE"
  rm -rf "$SHARE/e2e" "$SHARE/results"
  mkdir -p "$SHARE/e2e" "$SHARE/results"
  cp "$E2E/dom0/"* "$SHARE/e2e/"
  cp "$file" "$SHARE/e2e/scenario.sh"
  echo "$scenario" > "$SHARE/e2e/scenario.name"
}

# --- boot -----------------------------------------------------------------------------------

cmd_boot() {
  local timeout=900 shell=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      -t) timeout=$2; shift 2 ;;
      --shell) shell=" xenlab.shell"; shift ;;
      *) die "boot: unknown option $1" ;;
    esac
  done
  [[ -f $OUT/dom0.img ]] || die "no image: run lab.sh build"
  [[ $SHARE != *[,\ ]* ]] || die "the share path must not contain commas or spaces: $SHARE"
  mkdir -p "$LOGS" "$WORK/run"
  # this run's disk: a sparse copy of the image, kept across the Dom0's reboots, dropped next run
  cp --sparse=always "$OUT/dom0.img" "$WORK/run/disk.img"
  local stamp; stamp=$(date +%Y%m%d-%H%M%S)
  BOOT_T0=$(now)
  BOOT_DEADLINE=$timeout
  local n=1 result
  # A Dom0 `reboot -f` ends this QEMU (-no-reboot) and the loop cold-boots the machine again:
  # QEMU's in-place reset makes Xen's next boot 10-20x slower under TCG.
  while :; do
    result=$(boot_machine "$LOGS/serial-$stamp-$n.log" "$shell")
    case $result in
      reboot) n=$((n + 1)) ;;
      poweroff) break ;;
      *) say "machine boot $n ended: $result"; break ;;
    esac
  done
  rm -f "$WORK/run/disk.img"
  say "qemu ran $(since "$BOOT_T0")s over $n machine boot(s)"
  echo "$(since "$BOOT_T0")" > "$SHARE/results/qemu-seconds"
  [[ $result == poweroff ]]
}

# Boot the machine once; given the serial log file and extra Dom0 arguments, print how it ended:
# poweroff, reboot, crash or timeout.
boot_machine() {
  local log=$1 extra=$2
  ln -sfn "$log" "$LOGS/serial-last.log"
  # Dom0 command line; in QEMU's multiboot -initrd string a comma separates modules
  local dom0_cmdline="root=/dev/vda rw console=hvc0 earlyprintk=xen panic=5"
  dom0_cmdline+=" init=/sbin/xenlab-init xenlab.share=$SHARE$extra"
  local xen_cmdline="dom0_mem=1024M,max:1024M dom0_max_vcpus=2 console=com1 com1=115200,8n1"
  xen_cmdline+=" loglvl=all guest_loglvl=all console_timestamps=boot"
  # TCG only: /dev/kvm on the hosts this was built on cannot run Xen; -cpu max crashes Dom0
  qemu-system-x86_64 -accel "tcg,thread=${XENLAB_TCG_THREAD:-multi}" -cpu qemu64 -m 3072 \
    -smp "${XENLAB_SMP:-2}" -no-reboot \
    -nodefaults -no-user-config -display none -serial stdio -monitor none \
    -kernel "$OUT/xen" -append "$xen_cmdline" \
    -initrd "$OUT/vmlinuz $dom0_cmdline,$OUT/initrd.img" \
    -device virtio-rng-pci \
    -drive "file=$WORK/run/disk.img,if=virtio,format=raw,cache=unsafe" \
    -virtfs "local,path=$SHARE,mount_tag=xenlabshare,security_model=none,id=xenlabshare" \
    < /dev/null > "$log" 2>&1 &
  local qpid=$!
  say "qemu pid $qpid, serial log $log"
  # show the scenario's own lines as they come (the serial log has Xen and kernel noise too)
  tail -n +1 -F --pid=$qpid "$log" 2>/dev/null \
    | grep --line-buffered -E '^\[(xenlab|e2e)|^(PASS|FAIL|FIGURE|INFO) ' >&2 &
  local how=""
  while kill -0 $qpid 2>/dev/null; do
    if (( $(since "$BOOT_T0" | cut -d. -f1) >= BOOT_DEADLINE )); then how="timeout after ${BOOT_DEADLINE}s"; break; fi
    if grep -q -E 'Dom0 crashed|Panic on CPU|Kernel panic' "$log"; then how=crash; sleep 2; break; fi
    # Dom0 has synced and handed over to Xen, whose own power-off or reboot takes many more
    # seconds under TCG: stop QEMU now (SIGTERM: QEMU flushes the disk and exits cleanly)
    if grep -q 'XENLAB-POWEROFF' "$log"; then how=poweroff; sleep 1; break; fi
    if grep -q 'reboot: Restarting system' "$log"; then how=reboot; sleep 1; break; fi
    # Dom0's watchdog expired (pool mode's fence): Xen resets the machine itself
    if grep -q 'Hardware Dom0 shutdown: watchdog rebooting' "$log"; then
      say "the Xen watchdog fired for Dom0: machine reset"
      how=reboot; sleep 1; break
    fi
    sleep 0.5
  done
  # QEMU may have exited on its own between two looks at the log (a quick power-off)
  if [[ -z $how ]] && grep -q 'XENLAB-POWEROFF' "$log"; then how=poweroff; fi
  if [[ -z $how ]] && grep -q -E 'Hardware Dom0 shutdown: (watchdog )?rebooting|reboot: Restarting system' "$log"; then
    how=reboot
  fi
  kill -0 $qpid 2>/dev/null && kill $qpid
  wait $qpid 2>/dev/null || true
  sleep 0.5
  echo "${how:-qemu exited}"
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    deps) cmd_deps "$@" ;;
    build) cmd_build "$@" ;;
    venv) cmd_venv "$@" ;;
    share) cmd_share "$@" ;;
    boot) cmd_boot "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
}

main "$@"
