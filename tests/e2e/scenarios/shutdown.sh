#!/bin/sh
# Host shutdown and boot on real Xen (issue 13). Runs in Dom0, once per Dom0 boot.
# Boot 1: four guests, one per policy (saved: save, damaged: save, plain: shutdown, kept:
#         leave), the daemon running; the drain run as the host's shutdown runs it (the
#         command of xenreconcile-guests.service's ExecStop); one image is then damaged;
#         `reboot -f`.
# Boot 2: the daemon starts as at boot: `saved` is restored (its console shows no second
#         boot), `plain` and `kept` are booted fresh, `damaged`'s image is moved aside and the
#         guest held with the reason.
. "$XENLAB_SHARE/e2e/lib.sh"
VENV=$XENLAB_SHARE/venv
CONF=/etc/xenreconcile.yaml
GUESTS_DIR=/etc/xen/guests
STATE=/var/lib/xenreconcile
SAVE_DIR=$STATE/save
LOG=/var/log/xen/xenreconcile.log
PIDFILE=/run/xenreconcile.pid
INTERVAL=3
say "shutdown scenario, boot $BOOT"

write_config() {
  cat > $CONF <<YAML
guests_dir: $GUESTS_DIR
xl: /usr/local/sbin/xl-audit
state_dir: $STATE
log_file: $LOG
log_level: info
interval: $INTERVAL
missing_grace: 5
stable_after: 8
xl_timeout: 60
host_shutdown_timeout: 60
guests:
  saved: {order: 10, on_host_shutdown: save}
  damaged: {order: 10, on_host_shutdown: save}
  plain: {order: 50}
  kept: {order: 50, on_host_shutdown: leave}
YAML
}

xr() { "$VENV/bin/xenreconcile" -c $CONF "$@"; }

start_daemon() {
  start-stop-daemon --start --background --make-pidfile --pidfile $PIDFILE \
    --startas "$VENV/bin/xenreconcile" -- -c $CONF run
}

log_has() { grep -q -E "$1" $LOG 2>/dev/null; }
# log_value EVENT GUEST KEY: KEY of the daemon's last EVENT line for GUEST (logfmt)
log_value() {
  grep "event=$1 guest=$2 " $LOG 2>/dev/null | tail -1 | tr ' ' '\n' | sed -n "s/^$3=//p"
}
refresh() { xr status --json > /tmp/status.json 2> /tmp/status.err; [ -s /tmp/status.json ]; }
cached() { python3 "$E2E_DIR/statusq.py" field "$1" "$2" < /tmp/status.json 2>/dev/null; }
state_is() { refresh && [ "$(cached "$1" state)" = "$2" ]; }
hello_count() { cat "/var/log/xen/console/guest-$1.log" 2>/dev/null | grep -c 'GUEST-HELLO'; }
# the daemon's passes so far (one `xl list` each, in the audit log)
passes() { awk '$2 == "list"' /var/log/xen/xl-audit.log 2>/dev/null | wc -l; }
passes_above() { [ "$(passes)" -gt "$1" ]; }
first_audit() { awk -v v="$1" '$2 == v { print $1; exit }' /var/log/xen/xl-audit.log; }
earlier() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && (b == "" || a < b)) }'; }

boot1() {
  echo "EXPECT-BOOTS 2"
  install_xl_audit
  mkdir -p $GUESTS_DIR
  for g in saved damaged plain kept; do write_guest $GUESTS_DIR $g; done
  write_config
  t0=$(now)
  start_daemon
  if wait_until 180 all_listed saved damaged plain kept; then
    figure boot1.daemon_start_to_all_running "$(since "$t0")" s
    pass "B1.create the daemon created the four guests"
  else
    fail "B1.create guests listed after 180 s: $(domains | tr '\n' ' ')"
  fi
  for g in saved damaged plain kept; do
    check "B1.console.$g" "$g's console shows its boot" wait_until 60 console_has_hello $g
  done
  check B1.dry_run "shutdown-guests --dry-run names each guest's action" \
    sh -c "'$VENV/bin/xenreconcile' -c $CONF shutdown-guests --dry-run | grep -q 'saved (save)'"

  # What xenreconcile-guests.service's ExecStop runs when the host goes down.
  t=$(now)
  "$VENV/bin/xenreconcile" -c $CONF shutdown-guests > /tmp/drain.out 2>&1
  rc=$?
  took=$(since "$t")
  sed 's/^/INFO drain: /' /tmp/drain.out
  figure boot1.drain "$took" s
  check B1.drain_rc "shutdown-guests exited 0 (every guest shut down, saved or left)" [ "$rc" = 0 ]
  check B1.stood_down "the running daemon answered the stand-down before the drain" \
    log_has "event=stood_down daemon=answered"
  for g in saved damaged; do
    check "B1.saved.$g" "$g was saved into $SAVE_DIR and is gone" \
      sh -c "[ -s $SAVE_DIR/$g.save ] && ! xl domid $g >/dev/null 2>&1"
    figure "boot1.save.$g" "$(log_value guest_saved $g seconds)" s
  done
  check B1.shutdown "plain was shut down cleanly (its console says GUEST-POWEROFF)" \
    sh -c "! xl domid plain >/dev/null 2>&1 && grep -q GUEST-POWEROFF /var/log/xen/console/guest-plain.log"
  check B1.leave "kept (leave) is still running" listed kept
  before=$(passes)
  wait_until 60 passes_above $((before + 2))  # three more passes of the daemon
  check B1.no_create "the stood-down daemon created nothing after the drain" \
    sh -c "! xl domid plain >/dev/null 2>&1 && ! xl domid saved >/dev/null 2>&1"
  check B1.no_tmp "no half-written image left" sh -c "! ls -A $SAVE_DIR | grep -q '^\.'"
  info "images: $(find $SAVE_DIR -maxdepth 1 -type f -printf "%f %s bytes; ")"
  # A damaged image: what a full disk or a crash mid-write would leave under the final name.
  truncate -s 65536 $SAVE_DIR/damaged.save
  echo "SCENARIO-END 1"
  save_logs
  # Boot 2's consoles start empty, so a restored guest's log shows whether it booted again.
  mkdir -p /var/log/xen/console-boot1 && mv /var/log/xen/console/*.log /var/log/xen/console-boot1/
  mv /var/log/xen/xl-audit.log /var/log/xen/xl-audit-boot1.log
  sync
  say "rebooting Dom0 (reboot -f)"
  reboot -f
}

boot2() {
  t0=$(now)
  start_daemon
  if wait_until 180 all_listed saved plain kept; then
    figure boot2.daemon_start_to_all_running "$(since "$t0")" s
    pass "B2.up saved, plain and kept run again"
  else
    fail "B2.up guests listed after 180 s: $(domains | tr '\n' ' ')"
  fi
  check B2.restored "saved was restored (guest_restored in the log)" \
    wait_until 30 log_has "event=guest_restored guest=saved "
  figure boot2.restore.saved "$(log_value guest_restored saved seconds)" s
  restore_at=$(first_audit restore) create_at=$(first_audit create)
  check B2.restore_first "the first xl restore ran before the first xl create" \
    earlier "$restore_at" "$create_at"
  check B2.consumed "saved's image was removed once it ran" [ ! -e $SAVE_DIR/saved.save ]
  wait_until 60 console_has_hello plain
  check B2.no_second_boot "saved's console shows no second GUEST-HELLO (it continued)" \
    [ "$(hello_count saved)" = 0 ]
  xl sysrq saved h 2>/dev/null
  if wait_until 10 grep -q -i 'sysrq' /var/log/xen/console/guest-saved.log; then
    info "the restored guest's kernel answers sysrq on its console"
  else
    info "no sysrq answer seen on the restored guest's console"
  fi
  for g in plain kept; do
    check "B2.cold.$g" "$g was booted fresh (GUEST-HELLO on its console)" \
      wait_until 60 console_has_hello $g
  done
  check B2.held "damaged is held" wait_until 60 state_is damaged held
  detail=$(cached damaged detail)
  info "damaged: $detail"
  check B2.reason "its status says why: restore failed" \
    sh -c "printf '%s' \"\$1\" | grep -q '^restore failed: '" _ "$detail"
  check B2.aside "the damaged image was moved aside (damaged.save.failed-*)" \
    sh -c "ls $SAVE_DIR | grep -q '^damaged\.save\.failed-'"
  check B2.not_booted "damaged was not booted" not_listed damaged
  check B2.lifted "the stand-down mark of boot 1 is gone" [ ! -e $STATE/stood-down ]
  plain_at=$(awk '$2 == "create" && $NF == "cfgname=plain" { print $1; exit }' /var/log/xen/xl-audit.log)
  info "first create (plain) at $plain_at, first restore at $restore_at"
  figure boot2.cold_boot.plain "$(log_value create_ok plain seconds)" s
  echo "SCENARIO-END 2"
  save_logs
}

if [ "$BOOT" = 1 ]; then boot1; else boot2; fi
