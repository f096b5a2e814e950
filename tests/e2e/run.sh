#!/bin/bash
# Run the end-to-end tests: xenreconcile inside a real Xen 4.17 Dom0 under QEMU.
#
#   tests/e2e/run.sh --install-deps     install the host packages (apt-get), then exit
#   tests/e2e/run.sh [--scenario NAME] [--env NAME=VALUE]... [--rebuild] [--timeout SECS]
#
# --env passes a knob to the scenario in Dom0 (e.g. --env BENCH_GUESTS=3): run.sh writes it to
# e2e/scenario.env in the share, which dom0/lib.sh reads; VALUE may hold letters, digits, spaces
# and . , _ / : -
# Builds the Dom0 image when missing or when its inputs changed (cached under $XENLAB_WORK,
# default <repo>/.xenlab), builds the project's venv, boots the lab once with the scenario
# (default: daemon; `smoke` proves the lab with a stand-in reconciler), then reads the results.
# Exits 0 only when every boot the scenario expects finished and no check failed.
# Results: $XENLAB_WORK/share/results/ (boot<n>.log, logs of each boot, summary.txt), and a
# copy in $E2E_RESULTS_COPY when that is set (for runs that share one XENLAB_WORK).
set -euo pipefail

E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E/../.." && pwd)
export XENLAB_WORK=${XENLAB_WORK:-$REPO/.xenlab}
RESULTS=$XENLAB_WORK/share/results
LAB=$E2E/lab.sh

usage() { sed -n '2,15p' "$0"; exit 2; }

scenario=daemon rebuild="" timeout=900 envs=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --install-deps) exec "$LAB" deps ;;
    --scenario) scenario=$2; shift 2 ;;
    --smoke) scenario=smoke; shift ;;
    --env)
      [[ ${2:-} =~ ^[A-Z][A-Z0-9_]*=[A-Za-z0-9\ .,_/:-]*$ ]] || { echo "--env NAME=VALUE: bad ${2:-}" >&2; exit 2; }
      envs+=("$2"); shift 2 ;;
    --rebuild) rebuild=--force; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done

# summarize: given the results dir, print the checks and figures; 0 when all passed
summarize() {
  local dir=$1 expected done_boots fails passes b
  expected=$(awk '$1=="EXPECT-BOOTS"{print $2; exit}' "$dir"/boot1.log 2>/dev/null)
  expected=${expected:-1}
  cat "$dir"/boot*.log 2>/dev/null | grep -E '^(PASS|FAIL|FIGURE) ' || true
  fails=$(cat "$dir"/boot*.log 2>/dev/null | grep -c '^FAIL ' || true)
  passes=$(cat "$dir"/boot*.log 2>/dev/null | grep -c '^PASS ' || true)
  done_boots=0
  for ((b = 1; b <= expected; b++)); do
    if grep -q "^SCENARIO-END $b\$" "$dir/boot$b.log" 2>/dev/null; then
      done_boots=$((done_boots + 1))
    else
      echo "FAIL boot $b of $expected never finished its scenario"
      fails=$((fails + 1))
    fi
  done
  echo "e2e $scenario: $passes passed, $fails failed, $done_boots/$expected boots finished," \
    "QEMU $(cat "$dir/qemu-seconds" 2>/dev/null || echo '?')s"
  [[ $fails == 0 && $passes -gt 0 ]]
}

# write_env: the --env knobs as shell assignments the scenario sources
write_env() {
  local kv
  for kv in ${envs[@]+"${envs[@]}"}; do printf "export %s='%s'\n" "${kv%%=*}" "${kv#*=}"; done
}

main() {
  local t0 rc=0
  t0=$(date +%s)
  mkdir -p "$XENLAB_WORK"
  # one lab at a time per work dir (the share and the results are shared)
  exec 9> "$XENLAB_WORK/lock"
  flock 9
  "$LAB" build $rebuild
  "$LAB" venv
  "$LAB" share "$scenario"
  write_env > "$XENLAB_WORK/share/e2e/scenario.env"
  "$LAB" boot -t "$timeout" || rc=$?
  [[ $rc == 0 ]] || echo "== e2e: Dom0 did not power off cleanly (see $XENLAB_WORK/logs/serial-last.log)"
  summarize "$RESULTS" | tee "$RESULTS/summary.txt" || rc=1
  # several runs may share one work dir (XENLAB_WORK): keep this run's results before the
  # lock is released and the next run overwrites them
  if [[ -n ${E2E_RESULTS_COPY:-} ]]; then
    rm -rf "$E2E_RESULTS_COPY" && mkdir -p "$E2E_RESULTS_COPY" && cp -a "$RESULTS/." "$E2E_RESULTS_COPY/"
  fi
  echo "== e2e: total $(($(date +%s) - t0))s, results in $RESULTS"
  if [[ $rc != 0 ]]; then
    echo "== e2e: last lines of the serial log:"
    tail -40 "$XENLAB_WORK/logs/serial-last.log" || true
  fi
  return $rc
}

main
