#!/bin/sh
# The preconditions scenario on real Xen (issue 16). Runs in Dom0, one boot.
# P0 the lab itself: xl creates a guest with a file disk and a vif on a bridge.
# P1 a guest whose disk file appears 20 s after the daemon started waits, then is created
#    with no failure counted. P2 a guest whose vif names a missing bridge waits until the
#    bridge exists, then is created.
. "$XENLAB_SHARE/e2e/lib.sh"
VENV=$XENLAB_SHARE/venv
CONF=/etc/xenreconcile.yaml
GUESTS_DIR=/etc/xen/guests
DISKS=/var/lib/xenlab/disks
LOG=/var/log/xen/xenreconcile.log
PIDFILE=/run/xenreconcile.pid
INTERVAL=2
say "preflight scenario, boot $BOOT"

write_config() {
  cat > $CONF <<YAML
guests_dir: $GUESTS_DIR
xl: /usr/local/sbin/xl-audit
state_dir: /var/lib/xenreconcile
log_file: $LOG
log_level: info
interval: $INTERVAL
missing_grace: 5
stable_after: 8
xl_timeout: 300
precondition_timeout: 600
YAML
}

xr() { "$VENV/bin/xenreconcile" -c $CONF "$@"; }

start_daemon() {
  out=""
  start-stop-daemon --help 2>&1 | grep -q -- '--output' && out="--output /var/log/xen/xenreconcile.stderr"
  # shellcheck disable=SC2086
  start-stop-daemon --start --background --make-pidfile --pidfile $PIDFILE $out \
    --startas "$VENV/bin/xenreconcile" -- -c $CONF run
}
stop_daemon() { start-stop-daemon --stop --pidfile $PIDFILE --retry 20 >/dev/null 2>&1; }

refresh() { xr status --json > /tmp/status.json 2> /tmp/status.err; [ -s /tmp/status.json ]; }
cached() { python3 "$E2E_DIR/statusq.py" field "$1" "$2" < /tmp/status.json 2>/dev/null; }
field() { refresh && cached "$1" "$2"; }
field_is() { [ "$(field "$1" "$2")" = "$3" ]; }
detail_has() { field "$1" detail | grep -q -F "$2"; }
log_has() { grep -q -E "$1" $LOG 2>/dev/null; }
failed_creates() { grep -c "event=create_failed guest=$1 " $LOG 2>/dev/null; }
# built and running: xl lists a domain paused (--p---) while it builds it
running() { xl list "$1" 2>/dev/null | awk 'NR == 2 { exit ($5 ~ /p/) }' && listed "$1"; }

# write_needy_guest NAME DISK BRIDGE: a lab guest with one file disk and one vif
write_needy_guest() {
  write_guest "$GUESTS_DIR" "$1"
  printf "disk = [ '%s,raw,xvda,w' ]\nvif = [ 'bridge=%s' ]\n" "$2" "$3" >> "$GUESTS_DIR/$1.cfg"
}

add_bridge() { ip link add "$1" type bridge && ip link set "$1" up; }

# What a Dom0 with udev has and the lab's has not: the hotplug scripts' lock (locking.sh)
# stats /dev/stdin, and a file disk needs a loop device.
dom0_like_udev() {
  [ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
  [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
  modprobe -q loop
}

p0_lab() {
  dom0_like_udev
  mkdir -p /tmp/p0
  add_bridge xrlab0
  truncate -s 16M $DISKS/p0.img
  write_guest /tmp/p0 p0
  printf "disk = [ '%s,raw,xvda,w' ]\nvif = [ 'bridge=xrlab0' ]\n" $DISKS/p0.img >> /tmp/p0/p0.cfg
  if xl create /tmp/p0/p0.cfg > /tmp/p0/create.out 2>&1; then
    pass "P0.lab xl creates a guest with a file disk and a vif on a bridge"
  else
    fail "P0.lab xl create with a file disk and a bridged vif: $(grep -E 'error' /tmp/p0/create.out | head -3 | tr '\n' ' ')"
    info "P0 hotplug log: $(tail -5 /var/log/xen/xen-hotplug.log 2>/dev/null | tr '\n' ' ')"
  fi
  info "P0 interfaces:$(awk -F: 'NR > 2 { printf " %s", $1 }' /proc/net/dev)"
  xl destroy p0 2>/dev/null
  wait_until 30 not_listed p0
}

p1_disk_appears() {
  check P1.waiting "diskwait is waiting while its disk file is missing" \
    wait_until 90 field_is diskwait state waiting
  check P1.detail "status says what it waits for" detail_has diskwait "waiting for $DISKS/diskwait.img"
  check P1.logged "the log says the guest waits" log_has "event=guest_waiting guest=diskwait "
  # the disk file appears 20 s after the daemon started
  left=$(awk -v a="$T0" -v b="$(now)" 'BEGIN { d = a + 20 - b; printf "%d", d > 0 ? d : 0 }')
  sleep "$left"
  check P1.not_created "no xl create of diskwait while its disk was missing" \
    [ "$(creates_since diskwait "$T0")" = 0 ]
  truncate -s 16M $DISKS/diskwait.img
  t=$(now)
  if wait_until 300 running diskwait; then
    figure disk_appeared_to_running "$(since "$t")" s
    pass "P1.created diskwait created once its disk file appeared"
  else
    fail "P1.created diskwait not running 300 s after its disk appeared: $(field diskwait last_error)"
  fi
  check P1.running "status says diskwait is running" wait_until 120 field_is diskwait state running
  check P1.attempts "status counts zero failures for diskwait" field_is diskwait attempts 0
  check P1.one_create "exactly one xl create of diskwait" [ "$(creates_since diskwait "$T0")" = 1 ]
  check P1.no_failure "no failed create of diskwait logged" [ "$(failed_creates diskwait)" = 0 ]
}

p2_bridge_appears() {
  check P2.waiting "bridgewait is waiting while its bridge is missing" field_is bridgewait state waiting
  check P2.detail "status names the missing bridge" detail_has bridgewait "waiting for bridge xrbr1"
  check P2.not_created "no xl create of bridgewait while its bridge was missing" \
    [ "$(creates_since bridgewait "$T0")" = 0 ]
  add_bridge xrbr1
  t=$(now)
  if wait_until 300 running bridgewait; then
    figure bridge_added_to_running "$(since "$t")" s
    pass "P2.created bridgewait created once its bridge existed"
  else
    fail "P2.created bridgewait not running 300 s after its bridge appeared: $(field bridgewait last_error)"
  fi
  check P2.running "status says bridgewait is running" wait_until 120 field_is bridgewait state running
  check P2.attempts "status counts zero failures for bridgewait" field_is bridgewait attempts 0
  check P2.one_create "exactly one xl create of bridgewait" [ "$(creates_since bridgewait "$T0")" = 1 ]
  check P2.no_failure "no failed create of bridgewait logged" [ "$(failed_creates bridgewait)" = 0 ]
  check P2.vif "bridgewait's vif is a port of xrbr1" \
    wait_until 60 sh -c 'ls /sys/class/net/xrbr1/brif/ | grep -q vif'
}

echo "EXPECT-BOOTS 1"
install_xl_audit
write_config
mkdir -p $GUESTS_DIR $DISKS
chmod 755 $GUESTS_DIR
p0_lab
add_bridge xrbr0
write_needy_guest diskwait $DISKS/diskwait.img xrbr0
truncate -s 16M $DISKS/bridgewait.img
write_needy_guest bridgewait $DISKS/bridgewait.img xrbr1
T0=$(now)
start_daemon
p1_disk_appears
p2_bridge_appears
refresh
python3 "$E2E_DIR/statusq.py" table < /tmp/status.json | sed 's/^/INFO status: /'
stop_daemon
info "xl list: $(domains | tr '\n' ' ')"
echo "SCENARIO-END $BOOT"
save_logs
sync
