#!/usr/bin/env bash
# The README's "Linux quickstart", run as written on a Debian 12 machine (as root),
# then checked: `systemd-analyze verify` on the installed unit, the program the
# unit's ExecStart names runs `check` against the installed configuration, and
# so does the command-line wrapper; logrotate accepts the installed entry.
#
#   tests/linux_install.sh          install, check, then remove what it installed
#   tests/linux_install.sh --keep   install and check; leave the installation in place
#   tests/linux_install.sh --print  print the README's commands, one a line; run nothing
#
# The commands come from the README's code block itself, so this cannot drift
# from the documentation. `systemctl enable --now` is skipped, and said so, where
# systemd is not PID 1 (a container): nothing could be started there. The script
# refuses to run where any file of the quickstart exists already, so it never
# overwrites or removes an administrator's installation.
set -euo pipefail
cd "$(dirname "$0")/.."

README=README.md
UNIT=/etc/systemd/system/xenreconcile.service
# What the quickstart installs, removed afterwards unless --keep.
INSTALLED=(/opt/xenreconcile /usr/local/sbin/xenreconcile /etc/xenreconcile.yaml "$UNIT"
  /etc/systemd/system/xenreconcile-guests.service
  /etc/logrotate.d/xenreconcile /usr/local/share/man/man8/xenreconcile.8
  /usr/local/share/man/man5/xenreconcile.yaml.5)
# Directories the quickstart (or `check`) may create; removed only if this run did.
DIRECTORIES=(/var/lib/xenreconcile /etc/xen/guests /etc/xen
  /usr/local/share/man/man8 /usr/local/share/man/man5)

fail() {
  echo "linux_install: FAIL: $*" >&2
  exit 1
}

# Print the commands of the first code block under "## Linux quickstart", one a line.
quickstart_commands() {
  awk '
    /^## / { inside = ($0 ~ /^## Linux quickstart/); if (block) exit; next }
    inside && /^    / { sub(/^    /, ""); print; block = 1; next }
    inside && block && NF { exit }
  ' "$README"
}

systemd_is_pid1() {
  [ -d /run/systemd/system ]
}

preflight() {
  [ "$(id -u)" -eq 0 ] || fail "run as root: the quickstart installs under /opt, /etc and /usr/local"
  # shellcheck source=/dev/null
  . /etc/os-release
  if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
    fail "the quickstart is for Debian 12; this is ${PRETTY_NAME:-an unknown system}"
  fi
  local path
  for path in "${INSTALLED[@]}"; do
    [ ! -e "$path" ] || fail "$path exists: not a fresh machine, and this script removes what it installs"
  done
}

# Remember which of DIRECTORIES exist now, so that clean_up removes only new ones.
PREEXISTING=()
note_directories() {
  local dir
  for dir in "${DIRECTORIES[@]}"; do
    [ ! -e "$dir" ] || PREEXISTING+=("$dir")
  done
}

ENABLED=no
clean_up() {
  echo "== removing what the quickstart installed"
  if [ "$ENABLED" = yes ]; then
    systemctl disable --now xenreconcile || true
    # Not --now: stopping the guests unit would drain this host (it refuses a
    # manual stop anyway).
    systemctl disable xenreconcile-guests || true
  fi
  rm -rf "${INSTALLED[@]}"
  local dir
  for dir in "${DIRECTORIES[@]}"; do
    case " ${PREEXISTING[*]} " in *" $dir "*) continue ;; esac
    if [ "$dir" = /var/lib/xenreconcile ]; then
      rm -rf "$dir"  # state the installed program made; nothing else writes there
    elif [ -d "$dir" ]; then
      rmdir "$dir" 2>/dev/null || echo "linux_install: kept $dir: not empty" >&2
    fi
  done
}

run_quickstart() {
  local line count=0
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    count=$((count + 1))
    case $line in
    "systemctl enable --now "*)
      if ! systemd_is_pid1; then
        echo "SKIPPED (systemd is not PID 1 on this machine, so no service can run): $line"
        continue
      fi
      ENABLED=yes
      ;;
    esac
    echo "+ $line"
    bash -c "$line" || fail "README step failed: $line"
  done < <(quickstart_commands)
  [ "$count" -gt 0 ] || fail "no code block found under '## Linux quickstart' in $README"
}

verify_unit() {
  local out unit
  for unit in "$UNIT" /etc/systemd/system/xenreconcile-guests.service; do
    echo "+ systemd-analyze verify $unit"
    out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || echo "$out"
    case $out in *"${unit##*/}"*) fail "systemd-analyze verify complains about $unit" ;; esac
  done
}

# Run `check` with a program and its leading arguments; exit 0 ("... OK") and
# exit 1 (problems listed) are both an answer; anything else is a failure.
expect_check_answers() {
  local out status=0
  echo "+ $* check"
  out=$("$@" check 2>&1) || status=$?
  echo "$out"
  case $status in
  0) case $out in *"guest file(s) OK"*) ;; *) fail "'$* check' exited 0 without saying OK" ;; esac ;;
  1) case $out in *"problem(s) found"*) ;; *) fail "'$* check' exited 1 without naming problems" ;; esac ;;
  *) fail "'$* check' exited $status" ;;
  esac
}

check_exec_start() {
  local exec_start
  exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
  local -a argv
  read -r -a argv <<<"$exec_start"
  if [ "${#argv[@]}" -lt 2 ] || [ "${argv[-1]}" != run ]; then
    fail "ExecStart is not 'PROGRAM ... run': $exec_start"
  fi
  [ -x "${argv[0]}" ] || fail "ExecStart names ${argv[0]}, which is not an installed program"
  expect_check_answers "${argv[@]:0:${#argv[@]}-1}"
  check_wrapper "${argv[@]:0:${#argv[@]}-1}"
}

# The command-line wrapper, without -c, answers as the unit's program with -c
# does (with FreeBSD's defaults it would report /usr/local/etc/xen/guests missing).
check_wrapper() {
  local wrapper=(env -u XENRECONCILE_CONFIG /usr/local/sbin/xenreconcile)
  expect_check_answers "${wrapper[@]}"
  if [ "$("$@" check 2>&1)" != "$("${wrapper[@]}" check 2>&1)" ]; then
    fail "/usr/local/sbin/xenreconcile check answers otherwise than the unit's program"
  fi
}

check_logrotate() {
  local out
  echo "+ logrotate -d /etc/logrotate.d/xenreconcile"
  out=$(logrotate -d /etc/logrotate.d/xenreconcile 2>&1) || fail "logrotate: $out"
  case $out in *error*) fail "logrotate: $out" ;; esac
}

main() {
  local keep=no
  case ${1:-} in
  --print) quickstart_commands; return ;;
  --keep) keep=yes ;;
  "") ;;
  *) fail "usage: $0 [--keep | --print]" ;;
  esac
  preflight
  note_directories
  [ "$keep" = yes ] || trap clean_up EXIT
  export DEBIAN_FRONTEND=noninteractive
  echo "== tools for the checks (systemd-analyze; man for the unit's Documentation=)"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd man-db >/dev/null
  echo "== the README's Linux quickstart, as written"
  run_quickstart
  echo "== checks"
  verify_unit
  check_exec_start
  check_logrotate
  echo "linux_install: OK"
}

main "$@"
