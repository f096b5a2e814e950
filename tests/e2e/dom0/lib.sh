# shellcheck shell=sh disable=SC2034
# Helpers for the e2e scenarios in Dom0 (sourced). Output lines the host parses:
#   PASS <id> <text>      a check that held
#   FAIL <id> <text>      a check that did not
#   FIGURE <name> <value> <unit>   a measured figure
#   INFO <text>           context
#   EXPECT-BOOTS <n>      (boot 1) how many Dom0 boots the scenario needs
#   SCENARIO-END <boot>   the scenario's part of this boot finished (the host requires one per boot)
E2E_DIR=$XENLAB_SHARE/e2e
RESULTS=$XENLAB_SHARE/results
BOOT=$XENLAB_BOOT
# the knobs given to run.sh with --env
# shellcheck disable=SC1091
if [ -r "$E2E_DIR/scenario.env" ]; then . "$E2E_DIR/scenario.env"; fi

now() { date +%s.%N; }
# seconds since $1, one decimal
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "[e2e $(cut -d' ' -f1 /proc/uptime)] $*"; }
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; }
info() { printf 'INFO %s\n' "$*"; }
figure() { echo "FIGURE $*"; }

# check ID TEXT COMMAND...: PASS or FAIL by the command's exit status
check() {
  _id=$1 _text=$2
  shift 2
  if "$@"; then pass "$_id $_text"; else fail "$_id $_text"; fi
}

# wait_until SECONDS COMMAND...: poll every 0.3 s until COMMAND succeeds; 1 if the deadline passed
wait_until() {
  _deadline=$(awk -v t="$1" -v n="$(now)" 'BEGIN { printf "%.1f", n + t }')
  shift
  while ! "$@"; do
    if awk -v d="$_deadline" -v n="$(now)" 'BEGIN { exit !(n > d) }'; then return 1; fi
    sleep 0.3
  done
}

# names of the listed domains, one a line (Domain-0 included)
domains() { xl list 2>/dev/null | awk 'NR > 1 { print $1 }'; }
listed() { domains | grep -qx "$1"; }
not_listed() { ! listed "$1"; }
all_listed() {
  for _g in "$@"; do listed "$_g" || return 1; done
}
# how many listed domains carry exactly this name
count_listed() { domains | grep -cx "$1"; }
domid_of() { xl domid "$1" 2>/dev/null; }
console_has_hello() { grep -q 'GUEST-HELLO' "/var/log/xen/console/guest-$1.log" 2>/dev/null; }

# write_guest DIR NAME [KERNEL]: a PV guest cfg for the lab's guest payload
write_guest() {
  cat > "$1/$2.cfg" <<CFG
# e2e guest $2
name = "$2"
type = "pv"
kernel = "${3:-/xenlab/guest/vmlinux}"
ramdisk = "/xenlab/guest/initrd.cpio.gz"
memory = 128
vcpus = 1
extra = "console=hvc0 quiet sysrq_always_enabled"
on_crash = "destroy"
CFG
}

# an `xl` that records every call (time, arguments) before running the real one; for a
# create it adds `cfgname=NAME`, the cfg's own name: the daemon hands xl the checked bytes
# on its standard input (/proc/self/fd/0), not the file's path
install_xl_audit() {
  cat > /usr/local/sbin/xl-audit <<'XL'
#!/bin/sh
extra=
if [ "$1" = create ] && [ -r "$2" ]; then
  extra=" cfgname=$(sed -n 's/^name *= *"\(.*\)".*/\1/p' "$2" | head -n 1)"
fi
echo "$(date +%s.%N) $*$extra" >> /var/log/xen/xl-audit.log
exec /usr/sbin/xl "$@"
XL
  chmod 755 /usr/local/sbin/xl-audit
}
# times of the creates of guest $1 (its cfg's name, which is also its file name without
# .cfg) in the xl audit log, one a line
create_times() { awk -v g="cfgname=$1" '$2 == "create" && $NF == g { print $1 }' /var/log/xen/xl-audit.log 2>/dev/null; }
# creates of guest $1 recorded since epoch time $2
creates_since() { create_times "$1" | awk -v t="$2" '$1 >= t { n++ } END { print n + 0 }'; }

# save_logs: copy Dom0 logs of this boot to the share for the host to keep
save_logs() {
  for _f in /var/log/xen/xenreconcile.log /var/log/xen/xenreconcile.stderr /var/log/xen/xl-audit.log; do
    [ -f "$_f" ] && cp "$_f" "$RESULTS/boot$BOOT-$(basename "$_f")"
  done
  mkdir -p "$RESULTS/boot$BOOT-console"
  cp /var/log/xen/console/*.log "$RESULTS/boot$BOOT-console/" 2>/dev/null
  return 0
}
