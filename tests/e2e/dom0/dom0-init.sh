#!/bin/sh
# The e2e Dom0 boot, run as PID 1 by /sbin/xenlab-init once the host share is mounted.
# Given the share's path ($1): brings up the Xen toolstack the way Debian does, runs
# e2e/scenario.sh with XENLAB_BOOT=<n> (a boot counter kept on the Dom0 disk), keeps its output in
# results/boot<n>.log on the share, and powers off. A scenario may `reboot -f` instead: QEMU then
# boots Xen again from the same (snapshot) disk and this script runs again with the next number.
SHARE=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export XENLAB_SHARE=$SHARE
log() { echo "[xenlab $(cut -d' ' -f1 /proc/uptime)] $*"; }

mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
hostname dom0
n=$(cat /var/lib/xenlab/bootcount 2>/dev/null || echo 0)
n=$((n + 1))
mkdir -p /var/lib/xenlab
echo $n > /var/lib/xenlab/bootcount
export XENLAB_BOOT=$n
log "Dom0 boot $n, kernel $(uname -r)"

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-netback xen-blkback virtio_rng; do
  modprobe -q $m  # no udev here; virtio_rng seeds the kernel RNG early (creates ~3 s faster)
done
mkdir -p /var/log/xen/console /var/lib/xen /run/xen
# Debian's sysv script: xenfs, oxenstored, xen-init-dom0, xenconsoled (hand-rolled starts make
# `xl create` fail with "Illegal pool specified")
/etc/init.d/xen start > /run/xen-start.log 2>&1
log "toolstack up (rc=$?): $(xl list | awk 'NR>1{print $1}' | tr '\n' ' ')"

mkdir -p "$SHARE/results"
( cd /tmp && sh "$SHARE/e2e/scenario.sh"; echo $? > /run/scenario.rc ) 2>&1 \
  | tee "$SHARE/results/boot$n.log"
log "scenario ended with rc=$(cat /run/scenario.rc)"
if grep -q 'xenlab.shell' /proc/cmdline; then
  log "xenlab.shell: root shell on the console"
  setsid sh -c 'exec sh </dev/hvc0 >/dev/hvc0 2>&1'
fi
sync
echo "XENLAB-POWEROFF"
busybox poweroff -f
