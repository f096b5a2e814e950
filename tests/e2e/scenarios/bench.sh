#!/bin/sh
# Boot-recovery benchmark on real Xen (issue 12), one Dom0 boot. Knobs (tests/e2e/run.sh --env):
#   BENCH_GUESTS  PV guests per arm (default 8)     BENCH_RUNS  runs of every arm (default 3)
#   BENCH_CURVE   concurrency values of xenreconcile's curve (default "1 2 4 8")
#   BENCH_CURVE_RUNS  in how many of the runs the curve is measured (default all)
#   BENCH_REACT   1: measure xl destroy -> running again with the default interval (default 1)
# Each run, side by side, from nothing listed until every guest is listed running (no p/s/c/d):
#   bare        N `xl create` started at once (the floor xl's create lock allows)
#   xendomains  Debian's /etc/init.d/xendomains start (XENDOMAINS_AUTO = the cfgs, no save dir)
#   xr          xenreconcile run, default config (guests_dir, state_dir, log_file set), from spawn
#               (from a copy of the venv on Dom0's own disk, as an install would be)
#   xr-cC       the same with `concurrency: C`, for each C of BENCH_CURVE
# All guests are destroyed between two arms. Then, once: where the daemon's time goes (imports,
# time to its first create, xl calls) and the reaction time. Prints FIGURE lines; writes
# results/bench.md (the table) and results/bench-samples.txt (every sample), and where the time
# goes: bench-importtime.txt (-X importtime), bench-startprofile.txt (cProfile of spawn -> first
# create) and bench-profile-xenreconcile.log (the log of the profiled daemon and the reaction).
. "$XENLAB_SHARE/e2e/lib.sh"
VENV=$XENLAB_SHARE/venv
# The venv is on the lab's 9p share, where every file read is a round trip through the emulated
# machine (the daemon's import took 15.7 s from there against 0.65 s for a bare python3, on a
# loaded host); a Dom0's own install is on its own disk, so the daemon runs from a copy there.
LOCAL_VENV=/var/tmp/xr-bench-venv
XR=$VENV/bin/xenreconcile
N=${BENCH_GUESTS:-8}
RUNS=${BENCH_RUNS:-3}
CURVE=${BENCH_CURVE:-1 2 4 8}
CURVE_RUNS=${BENCH_CURVE_RUNS:-$RUNS}
REACT=${BENCH_REACT:-1}
GUESTS_DIR=/etc/xen/bench
WORK=/var/lib/xrbench
LOGS=/var/log/xen/bench
SAMPLES=$RESULTS/bench-samples.txt
TABLE=$RESULTS/bench.md
ARM_DEADLINE=300
say "bench scenario: $N guests, $RUNS run(s), curve $CURVE"

# --- measuring --------------------------------------------------------------------------------

# seconds since $1, two decimals
since2() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
guest_names() { seq -f 'bench%02g' 1 "$N"; }
# how many bench guests `xl list` shows running (State without p, s, c or d)
running_guests() {
  xl list 2> /dev/null | awk 'NR > 1 && $1 ~ /^bench[0-9]+$/ && $(NF - 1) !~ /[pscd]/ { n++ } END { print n + 0 }'
}
# until_all_running T0: poll until all N guests run; prints the seconds since T0, 1 at the deadline
until_all_running() {
  while [ "$(running_guests)" -lt "$N" ]; do
    if awk -v a="$1" -v b="$(now)" -v d=$ARM_DEADLINE 'BEGIN { exit !(b - a > d) }'; then return 1; fi
    sleep 0.2
  done
  since2 "$1"
}
# domids of every domain but Domain-0 (a failed create can leave one named "(null)")
guest_domids() { xl list 2> /dev/null | awk 'NR > 1 && $(NF - 4) != 0 { print $(NF - 4) }'; }
# destroy_all: nothing but Domain-0 listed afterwards (paused leftovers included)
destroy_all() {
  for _d in $(guest_domids); do xl destroy "$_d" > /dev/null 2>&1; done
  wait_until 120 only_dom0
}
only_dom0() { [ "$(xl list 2> /dev/null | wc -l)" -le 2 ]; }
# record RUN ARM SECONDS|-: keep one sample (- when the arm did not bring all guests up)
record() {
  echo "$1 $2 $3" >> "$SAMPLES"
  figure "bench.run$1.$2" "$3" s
}
# finish_arm RUN ARM SECONDS: record the sample, check it, clear the host for the next arm
finish_arm() {
  if [ -n "$3" ]; then
    record "$1" "$2" "$3"
  else
    record "$1" "$2" -
    fail "bench.$2.run$1 not all $N guests running after ${ARM_DEADLINE}s: $(domains | tr '\n' ' ')"
    ARM_FAILED=1
  fi
  check "bench.$2.run$1.clear" "all bench guests destroyed after $2" destroy_all
}

# --- the arms ---------------------------------------------------------------------------------

# create_retrying CFG: xl create, tried again at once after a failure (at most 3 tries), as an
# admin's loop would: under load real xl can fail a create ("console tty: timed out")
create_retrying() {
  for _try in 1 2 3; do
    xl create -q "$1" && return 0
    echo "BENCH-RETRY after try $_try"
  done
  return 1
}

arm_bare() {
  _t0=$(now)
  for _g in $(guest_names); do
    create_retrying "$GUESTS_DIR/$_g.cfg" > "$LOGS/bare-$1-$_g.out" 2>&1 &
  done
  _took=$(until_all_running "$_t0")
  wait
  _retries=$(cat "$LOGS"/bare-"$1"-*.out | grep -c '^BENCH-RETRY')
  [ "$_retries" = 0 ] || info "bare run $1: $_retries create(s) failed and were tried again: $(grep -h 'error' "$LOGS"/bare-"$1"-*.out | head -2 | cut -c1-200)"
  finish_arm "$1" bare "$_took"
}

arm_xendomains() {
  if [ ! -x /etc/init.d/xendomains ]; then
    record "$1" xendomains -
    fail "bench.xendomains.run$1 /etc/init.d/xendomains is missing"
    ARM_FAILED=1
    return
  fi
  cat > /etc/default/xendomains <<DEF
XENDOMAINS_MIGRATE=""
XENDOMAINS_SAVE=""
XENDOMAINS_RESTORE=false
XENDOMAINS_AUTO=$GUESTS_DIR
XENDOMAINS_STOP_MAXWAIT=300
DEF
  _t0=$(now)
  /etc/init.d/xendomains start > "$LOGS/xendomains-$1.out" 2>&1 &
  _pid=$!
  _took=$(until_all_running "$_t0")
  wait $_pid
  grep -q 'failed' "$LOGS/xendomains-$1.out" \
    && info "xendomains run $1: $(grep -A2 'failed' "$LOGS/xendomains-$1.out" | head -3 | tr '\n' ' ' | cut -c1-300)"
  finish_arm "$1" xendomains "$_took"
}

# xr_config FILE [CONCURRENCY [XL]]: the daemon's config, defaults except the lab's paths
xr_config() {
  rm -rf "$WORK/state"
  {
    echo "guests_dir: $GUESTS_DIR"
    echo "state_dir: $WORK/state"
    echo "log_file: $LOGS/xenreconcile.log"
    [ -n "${2:-}" ] && echo "concurrency: $2"
    [ -n "${3:-}" ] && echo "xl: $3"
  } > "$1"
}

# start_xr CONFIG: spawn the daemon in the background; its pid in XR_PID
start_xr() {
  "$LOCAL_VENV/bin/python" -m xenreconcile -c "$1" run >> "$LOGS/xenreconcile.stderr" 2>&1 &
  XR_PID=$!
}
stop_xr() {
  kill -TERM "$XR_PID" 2> /dev/null
  wait "$XR_PID"
}

# arm_xr RUN ARM [CONCURRENCY]
arm_xr() {
  xr_config "$WORK/$2.yaml" "${3:-}"
  _t0=$(now)
  start_xr "$WORK/$2.yaml"
  _took=$(until_all_running "$_t0")
  stop_xr
  _failed=$(grep -c 'event=create_failed' "$LOGS/xenreconcile.log" 2> /dev/null)
  [ "${_failed:-0}" = 0 ] || info "$2 run $1: $_failed failed create(s), retried after the backoff: $(grep 'event=create_failed' "$LOGS/xenreconcile.log" | head -1 | cut -c1-300)"
  : > "$LOGS/xenreconcile.log"
  finish_arm "$1" "$2" "$_took"
}

one_run() {
  arm_bare "$1"
  arm_xendomains "$1"
  arm_xr "$1" xr
}

# curve_run RUN: xenreconcile at each concurrency of the curve (the default's is the xr arm)
curve_run() {
  for _c in $CURVE; do
    [ "$_c" = "$DEFAULT_CONCURRENCY" ] || arm_xr "$1" "xr-c$_c" "$_c"
  done
}

# --- where the daemon's time goes ---------------------------------------------------------------

# median_of_3 COMMAND...: the median wall time of three runs of COMMAND, two decimals
median_of_3() {
  for _i in 1 2 3; do
    _t=$(now)
    "$@" > /dev/null 2>&1
    since2 "$_t"
    echo
  done | sort -n | sed -n 2p
}

profile_imports() {
  _pass=$(median_of_3 python3 -c pass)
  _import=$(median_of_3 "$LOCAL_VENV/bin/python" -c 'import xenreconcile.daemon')
  figure bench.python_pass "$_pass" s
  figure bench.import_daemon "$_import" s
  figure bench.import_over_python_pass "$(ratio "$_import" "$_pass")" x
  # the floor: the chosen dependencies the daemon imports at start (structlog, PyYAML) alone
  _deps=$(median_of_3 "$LOCAL_VENV/bin/python" -c 'import structlog, yaml')
  figure bench.import_dependencies "$_deps" s
  figure bench.import_dependencies_over_python_pass "$(ratio "$_deps" "$_pass")" x
  figure bench.import_daemon_from_share "$(median_of_3 "$VENV/bin/python" -c 'import xenreconcile.daemon')" s
  figure bench.xenreconcile_version "$(median_of_3 "$XR" --version)" s
  "$LOCAL_VENV/bin/python" -X importtime -c 'import xenreconcile.daemon' 2> "$RESULTS/bench-importtime.txt"
  # the heaviest packages outside the project (cumulative, nested ones too), as INFO lines
  awk -F'|' '/^import time:/ { gsub(/ /, "", $2); gsub(/^ +/, "", $3); print $2, $3 }' \
    "$RESULTS/bench-importtime.txt" | awk '$2 !~ /[.]/ && $2 != "xenreconcile"' | sort -rn | head -8 \
    | while read -r _us _mod; do info "import $_mod: $(awk -v u="$_us" 'BEGIN { printf "%.2f", u / 1e6 }') s"; done
}

# profile_start: the default daemon under cProfile until its first xl create (startprofile.py);
# writes results/bench-startprofile.txt, then stops that daemon and clears the guests
profile_start() {
  xr_config "$WORK/startprofile.yaml"
  rm -f "$RESULTS/bench-startprofile.txt"
  "$LOCAL_VENV/bin/python" "$E2E_DIR/startprofile.py" "$RESULTS/bench-startprofile.txt" \
    -c "$WORK/startprofile.yaml" run >> "$LOGS/xenreconcile.stderr" 2>&1 &
  XR_PID=$!
  if wait_until 300 test -s "$RESULTS/bench-startprofile.txt"; then
    awk 'NR > 1 && /^$/ { exit } NR > 1' "$RESULTS/bench-startprofile.txt" \
      | while read -r _line; do info "under cProfile, first spawn: $_line"; done
  else
    fail "bench.startprofile no profile of the daemon's start within 300 s"
  fi
  stop_xr
  : > "$LOGS/xenreconcile.log"
  destroy_all
}

# xl_calls_until T0 T1 VERB: calls of xl VERB in the audit log between epoch times T0 and T1
xl_calls_until() {
  awk -v a="$1" -v b="$2" -v v="$3" '$1 >= a && $1 <= b && $2 == v { n++ } END { print n + 0 }' \
    /var/log/xen/xl-audit.log
}

# profile_daemon: the default daemon through the recording xl; leaves it running in XR_PID
profile_daemon() {
  install_xl_audit
  : > /var/log/xen/xl-audit.log
  xr_config "$WORK/profile.yaml" "" /usr/local/sbin/xl-audit
  _t0=$(now)
  start_xr "$WORK/profile.yaml"
  _took=$(until_all_running "$_t0") || { fail "bench.profile not all guests running"; return 1; }
  _t1=$(now)
  figure bench.profile.spawn_to_all_running "$_took" s
  _first=$(awk '$2 == "create" { print $1; exit }' /var/log/xen/xl-audit.log)
  _firstlist=$(awk '$2 == "list" { print $1; exit }' /var/log/xen/xl-audit.log)
  figure bench.profile.spawn_to_first_xl_list "$(awk -v a="$_t0" -v b="$_firstlist" 'BEGIN { printf "%.2f", b - a }')" s
  figure bench.profile.spawn_to_first_create "$(awk -v a="$_t0" -v b="$_first" 'BEGIN { printf "%.2f", b - a }')" s
  figure bench.profile.xl_list_calls "$(xl_calls_until "$_t0" "$_t1" list)" calls
  figure bench.profile.xl_create_calls "$(xl_calls_until "$_t0" "$_t1" create)" calls
  pass "bench.profile the daemon brought up $N guests through the recording xl"
}

# react NAME: xl destroy NAME -> NAME listed running again with a new domid (the daemon runs)
react() {
  _old=$(domid_of "$1")
  _t=$(now)
  xl destroy "$1"
  if wait_until 300 sh -c "xl list 2>/dev/null | awk -v g=$1 -v o=$_old '\$1 == g && \$2 != o && \$(NF - 1) !~ /[pscd]/ { f = 1 } END { exit !f }'"; then
    _took=$(since2 "$_t")
    _create=$(awk -v a="$_t" -v g="cfgname=$1" '$1 >= a && $2 == "create" && $NF == g { print $1; exit }' /var/log/xen/xl-audit.log)
    figure "bench.react.$1.destroy_to_running" "$_took" s
    figure "bench.react.$1.destroy_to_create" "$(awk -v a="$_t" -v b="$_create" 'BEGIN { printf "%.2f", b - a }')" s
    echo "react $1 $_took" >> "$SAMPLES"
    pass "bench.react.$1 recreated after xl destroy in ${_took}s (interval 30 s, missing_grace 5 s)"
  else
    fail "bench.react.$1 not running again within 300 s of xl destroy"
  fi
}

# --- the table --------------------------------------------------------------------------------

# median ARM: the median of ARM's samples (- if any run failed)
median() {
  awk -v a="$1" '$2 == a { print $3 }' "$SAMPLES" | sort -n | awk '
    /^-$/ { bad = 1 } { v[n++] = $1 }
    END { if (bad || n == 0) print "-"; else if (n % 2) print v[(n - 1) / 2]; else printf "%.2f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }'
}
samples_of() { awk -v a="$1" '$2 == a { printf "%s%s", s, $3; s = ", " }' "$SAMPLES"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

write_table() {
  _bare=$(median bare) _xd=$(median xendomains) _xr=$(median xr)
  {
    echo "Real Xen 4.17 (emulated Dom0, QEMU TCG), $N PV guests, median of" \
      "$(awk '$2 == "bare"' "$SAMPLES" | wc -l) run(s) so far (the curve: its own runs)"
    echo
    echo "| arm | median (s) | runs (s) | vs bare | xendomains / arm |"
    echo "|---|---|---|---|---|"
    for _a in bare xendomains xr $(for _c in $CURVE; do [ "$_c" = "$DEFAULT_CONCURRENCY" ] || echo "xr-c$_c"; done); do
      _m=$(median "$_a")
      _label=$_a
      [ "$_a" = xr ] && _label="xenreconcile (default, concurrency $DEFAULT_CONCURRENCY)"
      case $_a in xr-c*) _label="xenreconcile concurrency ${_a#xr-c}" ;; esac
      echo "| $_label | $_m | $(samples_of "$_a") | $(ratio "$_m" "$_bare")x | $(ratio "$_xd" "$_m")x |"
    done
    echo
    _limit=$(awk -v b="$_bare" 'BEGIN { if (b == "-") print "-"; else printf "%.2f", 1.25 * b + 2 }')
    echo "Targets: xenreconcile >= 1.3x faster than xendomains: $(ratio "$_xd" "$_xr")x;" \
      "within 1.25 x bare + 2 s = $_limit s: $_xr s."
  } > "$TABLE"
  sed 's/^/INFO table: /' "$TABLE"
  figure bench.median.bare "$_bare" s
  figure bench.median.xendomains "$_xd" s
  figure bench.median.xr "$_xr" s
  figure bench.xendomains_over_xr "$(ratio "$_xd" "$_xr")" x
}

# --- main -------------------------------------------------------------------------------------

main() {
  echo "EXPECT-BOOTS 1"
  info "xenreconcile --version: $("$XR" --version 2>&1 | tail -1)"
  DEFAULT_CONCURRENCY=$("$VENV/bin/python" -c \
    'from xenreconcile.config import parse_config; print(parse_config("{}", "defaults").concurrency)')
  info "default concurrency: $DEFAULT_CONCURRENCY"
  mkdir -p "$GUESTS_DIR" "$WORK" "$LOGS"
  chmod 755 "$GUESTS_DIR"
  for _g in $(guest_names); do write_guest "$GUESTS_DIR" "$_g"; done
  rm -rf "$LOCAL_VENV" && cp -a "$VENV" "$LOCAL_VENV"
  : > "$SAMPLES"
  ARM_FAILED=0
  # run 1, the profile and the reaction, the other runs, then the curve: on a slow host a
  # lab timeout cuts only what comes last
  say "bench run 1 of $RUNS"
  one_run 1
  write_table
  profile_imports
  if profile_daemon && [ "$REACT" = 1 ]; then
    # a guest that goes away within stable_after (60 s) of its create counts as a failure
    say "waiting out stable_after (60 s) before the reaction test"
    sleep 65
    react bench01
    react bench02
  fi
  stop_xr
  cp "$LOGS/xenreconcile.log" "$RESULTS/bench-profile-xenreconcile.log"
  : > "$LOGS/xenreconcile.log"
  destroy_all
  profile_start
  for _r in $(seq 2 "$RUNS"); do
    say "bench run $_r of $RUNS"
    one_run "$_r"
    write_table
  done
  for _r in $(seq 1 "$CURVE_RUNS"); do
    say "bench curve run $_r of $CURVE_RUNS"
    curve_run "$_r"
  done
  [ "$ARM_FAILED" = 0 ] && pass "bench.arms every arm brought all $N guests up in every run"
  write_table
  cp "$LOGS"/* "$RESULTS/" 2> /dev/null
  save_logs
  echo "SCENARIO-END $BOOT"
}

main
