#!/bin/sh
# The xenreconcile end-to-end scenario on real Xen (issue 7). Runs in Dom0, once per Dom0 boot.
# Boot 1: S1 create all, S2 destroy -> recreate, S3 invalid cfg + failing create, S4 hold,
#         S5 live migration to localhost, then `reboot -f`.
# Boot 2: S6 the daemon starts again and recovers, S7 stopping it leaves the guests running.
. "$XENLAB_SHARE/e2e/lib.sh"
VENV=$XENLAB_SHARE/venv
CONF=/etc/xenreconcile.yaml
GUESTS_DIR=/etc/xen/guests
LOG=/var/log/xen/xenreconcile.log
PIDFILE=/run/xenreconcile.pid
GRACE=5
INTERVAL=3
say "daemon scenario, boot $BOOT"

write_config() {
  cat > $CONF <<YAML
guests_dir: $GUESTS_DIR
xl: /usr/local/sbin/xl-audit
state_dir: /var/lib/xenreconcile
log_file: $LOG
log_level: info
interval: $INTERVAL
missing_grace: $GRACE
stable_after: 8
xl_timeout: 60
backoff:
  initial: 15
  multiplier: 2
  max: 60
  jitter: 1
YAML
}

xr() { "$VENV/bin/xenreconcile" -c $CONF "$@"; }

# Start the daemon detached, as a service manager would: own session, pidfile, no terminal.
start_daemon() {
  out=""
  start-stop-daemon --help 2>&1 | grep -q -- '--output' && out="--output /var/log/xen/xenreconcile.stderr"
  # shellcheck disable=SC2086
  start-stop-daemon --start --background --make-pidfile --pidfile $PIDFILE $out \
    --startas "$VENV/bin/xenreconcile" -- -c $CONF run
}

daemon_alive() { [ -f $PIDFILE ] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; }

# `status --json` is slow under emulation: refresh it once, then read fields from /tmp/status.json
refresh() { xr status --json > /tmp/status.json 2> /tmp/status.err; [ -s /tmp/status.json ]; }
# cached NAME KEY: one field of guest NAME in the last status (empty when unknown)
cached() { python3 "$E2E_DIR/statusq.py" field "$1" "$2" < /tmp/status.json 2>/dev/null; }
cached_is() { [ "$(cached "$1" "$2")" = "$3" ]; }
# field NAME KEY: the same from a fresh status
field() { refresh && cached "$1" "$2"; }
field_is() { [ "$(field "$1" "$2")" = "$3" ]; }
attempts_at_least() { [ "$(field "$1" attempts)" -ge "$2" ] 2>/dev/null; }
# states_are STATE NAME...: a fresh status shows every NAME in STATE
states_are() {
  _want=$1
  shift
  refresh || return 1
  for _g in "$@"; do cached_is "$_g" state "$_want" || return 1; done
}
status_table() {
  refresh
  python3 "$E2E_DIR/statusq.py" table < /tmp/status.json | sed 's/^/INFO status: /'
}
recreated() { _id=$(domid_of "$1") && [ "$_id" != "$2" ]; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
text_matches() { printf '%s\n' "$1" | grep -q -E "$2"; }
in_backoff() { cached_is "$1" state backoff && [ -n "$(cached "$1" next_retry)" ]; }
# failed_creates NAME: create_failed events of NAME in the daemon's log (this boot's log file)
failed_creates() { grep -c "event=create_failed guest=$1 " $LOG 2>/dev/null; }
# one_success NAME SINCE: the daemon's xl creates of NAME since SINCE were one success plus the
# failures it logged (real xl can fail under load, e.g. "console tty: timed out"): it never
# created a guest that was already running
one_success() {
  _c=$(creates_since "$1" "$2")
  _f=$(failed_creates "$1")
  [ "$_f" = 0 ] || info "$1: $_c xl create(s), $_f failed: $(grep "event=create_failed guest=$1 " $LOG | tail -1 | cut -c1-300)"
  [ "$_c" -ge 1 ] && [ "$_c" -le $((1 + _f)) ]
}
fresh_backoff() { refresh && in_backoff "$1"; }
log_has() { grep -q -E "$1" $LOG 2>/dev/null; }

s1_create_all() {
  t0=$(now)
  start_daemon
  if wait_until 120 all_listed alpha bravo charlie; then
    figure "boot1.daemon_start_to_all_running" "$(since "$t0")" s
    pass "S1.create the daemon created alpha, bravo and charlie"
  else
    fail "S1.create guests listed after 120 s: $(domains | tr '\n' ' ')"
  fi
  check S1.daemon "the daemon is still running" daemon_alive
  refresh
  check S1.status_daemon "status --json sees the running daemon" \
    [ "$(python3 "$E2E_DIR/statusq.py" get daemon.running < /tmp/status.json)" = true ]
  for g in alpha bravo charlie; do
    check "S1.once.$g" "one successful xl create of $g (retries only after failures)" one_success $g "$t0"
    check "S1.console.$g" "$g's console shows the guest's hello line" wait_until 60 console_has_hello $g
  done
  check S1.status "status --json says alpha, bravo and charlie are running" \
    wait_until 60 states_are running alpha bravo charlie
}

s2_destroy_recreate() {
  old=$(domid_of bravo)
  xl destroy bravo
  t=$(now)
  if wait_until 90 recreated bravo "$old"; then
    took=$(since "$t")
    figure destroy_to_recreated "$took" s
    pass "S2.recreate bravo recreated after xl destroy (domid $old -> $(domid_of bravo))"
    check S2.grace "not recreated before missing_grace (${GRACE}s): took ${took}s" at_least "$took" $GRACE
    check S2.once "one successful xl create of bravo" one_success bravo "$t"
  else
    fail "S2.recreate bravo not recreated within 90 s of xl destroy"
  fi
}

s3_bad_cfgs() {
  ids_before="$(domid_of alpha) $(domid_of bravo) $(domid_of charlie)"
  t=$(now)
  printf 'name = "broken"\ntype = "pv"\nthis is not valid\nmemory = 128\n' > $GUESTS_DIR/broken.cfg
  # a kernel file that exists but is no kernel: xl fails (a missing one would be waited for)
  printf 'not a kernel\n' > /var/lib/xenlab/not-a-kernel
  write_guest $GUESTS_DIR nokernel /var/lib/xenlab/not-a-kernel
  check S3.nokernel.failed "the missing-kernel guest's create failed and was recorded" \
    wait_until 60 attempts_at_least nokernel 1
  refresh
  err=$(cached nokernel last_error)
  info "nokernel last_error: $err"
  check S3.nokernel.status_error "status shows xl's own error text for nokernel" \
    text_matches "$err" 'libxl: error|xc: error|exited 3'
  check S3.nokernel.log_error "the log has xl's stderr for nokernel" \
    log_has "nokernel.*(libxl: error|xc: error)|(libxl: error|xc: error).*nokernel"
  if log_has "not-a-kernel|no loader found"; then
    info "the log names the bad kernel file or xl's loader error"
  else
    info "the log does not show xl's line about the bad kernel file"
  fi
  check S3.nokernel.backoff "status shows nokernel in backoff with a next retry" \
    wait_until 60 fresh_backoff nokernel
  if wait_until 60 attempts_at_least nokernel 2; then
    pass "S3.nokernel.retry a second attempt followed after the backoff"
    gap=$(create_times nokernel | awk '{ t[n++] = $1 } END { if (n > 1) printf "%.1f", t[1] - t[0] }')
    figure nokernel_first_retry_after "$gap" s
  else
    fail "S3.nokernel.retry no second attempt within 60 s"
  fi
  check S3.broken.invalid "status says broken.cfg is invalid" cached_is broken state invalid
  row=$(python3 "$E2E_DIR/statusq.py" table < /tmp/status.json | grep -E 'broken' | head -1)
  info "broken.cfg status: $row"
  check S3.broken.line "status points at line 3 of broken.cfg" \
    text_matches "$row" 'line=3|:3|line 3'
  check S3.broken.log "the log reports broken.cfg" log_has "broken\.cfg"
  check S3.broken.not_created "broken.cfg was never given to xl create" [ "$(creates_since broken "$t")" = 0 ]
  check S3.others "alpha, bravo and charlie kept running untouched" \
    [ "$(domid_of alpha) $(domid_of bravo) $(domid_of charlie)" = "$ids_before" ]
}

s4_hold() {
  check S4.hold "xenreconcile hold charlie exits 0" xr hold charlie --reason "e2e hold"
  check S4.held "status says charlie is held" wait_until 30 field_is charlie state held
  xl destroy charlie
  t=$(now)
  # absence is the point: give the daemon grace + two passes to (wrongly) recreate it
  sleep $((GRACE + 2 * INTERVAL + 3))
  check S4.not_recreated "held charlie was not recreated" not_listed charlie
  check S4.no_create "no xl create of charlie after the hold" [ "$(creates_since charlie "$t")" = 0 ]
  check S4.still_held "status still says held" field_is charlie state held
}

s5_migrate() {
  # an ssh stand-in: drops the host argument and runs the rest here
  printf '#!/bin/sh\nshift\nexec "$@"\n' > /usr/local/bin/xenlab-ssh
  chmod 755 /usr/local/bin/xenlab-ssh
  old=$(domid_of alpha)
  t=$(now)
  touch /run/sampling
  (while [ -f /run/sampling ]; do echo "$(now) $(domains | tr '\n' ' ')"; sleep 0.2; done) > /tmp/migrate.samples &
  xl migrate -s /usr/local/bin/xenlab-ssh alpha localhost > /tmp/migrate.out 2>&1
  rc=$?
  rm -f /run/sampling
  wait
  info "xl migrate alpha localhost exited $rc: $(tail -1 /tmp/migrate.out)"
  incoming=$(grep -c 'alpha--incoming' /tmp/migrate.samples)
  info "alpha--incoming seen in $incoming of $(wc -l < /tmp/migrate.samples) xl list samples"
  figure migrate_incoming_seen_for "$(awk -v n="$incoming" 'BEGIN { printf "%.1f", n * 0.2 }')" s
  # give the daemon grace + two passes to (wrongly) act on what it saw
  sleep $((GRACE + 2 * INTERVAL + 2))
  check S5.once "alpha is listed exactly once after the migration" [ "$(count_listed alpha)" = 1 ]
  check S5.no_incoming "no alpha--incoming is left" not_listed alpha--incoming
  check S5.no_create "the daemon ran no xl create of alpha during or after it" \
    [ "$(creates_since alpha "$t")" = 0 ]
  if [ $rc != 0 ]; then
    check S5.same_domain "the failed migration left the original alpha (domid $old) running" \
      [ "$(domid_of alpha)" = "$old" ]
  fi
  check S5.status "status says alpha is running" wait_until 30 field_is alpha state running
}

s6_after_reboot() {
  check S6.clean "after the Dom0 reboot only Domain-0 is listed" [ "$(domains | tr '\n' ' ')" = "Domain-0 " ]
  t0=$(now)
  start_daemon
  if wait_until 120 all_listed alpha bravo; then
    figure "boot$BOOT.daemon_start_to_all_running" "$(since "$t0")" s
    pass "S6.recreate the daemon recreated alpha and bravo after the Dom0 reboot"
  else
    fail "S6.recreate guests listed after 120 s: $(domains | tr '\n' ' ')"
  fi
  for g in alpha bravo; do
    check "S6.once.$g" "one successful xl create of $g in this boot" one_success $g "$t0"
  done
  before=$(cat /var/lib/xenlab/nokernel-attempts 2>/dev/null || echo 0)
  check S6.retried "nokernel was tried at once in this boot" wait_until 60 attempts_at_least nokernel 1
  now_attempts=$(cached nokernel attempts)
  info "nokernel attempts: $before at the end of boot 1, $now_attempts after its first try in boot $BOOT"
  check S6.counters_cleared "failure counters of boot 1 were cleared" \
    [ "${now_attempts:-99}" -lt "$before" ]
  sleep $((GRACE + INTERVAL))
  check S6.held "held charlie stays down after the reboot" not_listed charlie
  refresh
  check S6.still_held "status still says charlie is held" cached_is charlie state held
  check S6.broken "broken.cfg is still invalid" cached_is broken state invalid
}

s7_stop() {
  pid=$(cat $PIDFILE)
  check S7.stop "SIGTERM stops the daemon within 30 s" \
    start-stop-daemon --stop --pidfile $PIDFILE --retry TERM/30
  check S7.gone "the daemon process is gone" sh -c "! kill -0 $pid 2>/dev/null"
  check S7.guests_stay "stopping the daemon left alpha and bravo running" all_listed alpha bravo
}

finish_boot() {
  status_table
  info "xl list: $(domains | tr '\n' ' ')"
  echo "SCENARIO-END $BOOT"
  save_logs
}

install_xl_audit
if [ "$BOOT" = 1 ]; then
  echo "EXPECT-BOOTS 2"
  info "xenreconcile --version: $("$VENV/bin/xenreconcile" --version 2>&1 | tail -1)"
  write_config
  mkdir -p $GUESTS_DIR
  chmod 755 $GUESTS_DIR
  for g in alpha bravo charlie; do write_guest $GUESTS_DIR $g; done
  s1_create_all
  s2_destroy_recreate
  s3_bad_cfgs
  s4_hold
  s5_migrate
  field nokernel attempts > /var/lib/xenlab/nokernel-attempts
  info "nokernel attempts before the reboot: $(cat /var/lib/xenlab/nokernel-attempts)"
  finish_boot
  sync
  say "rebooting Dom0 (reboot -f)"
  reboot -f
else
  s6_after_reboot
  s7_stop
  finish_boot
fi
