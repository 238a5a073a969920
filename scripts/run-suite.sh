#!/usr/bin/env bash
# The whole suite as `make test` runs it: the nested lab (tests/integration/test_nested_kvm.py: one L1 under
# TCG, ~30 min of one core, touching nothing of this machine but its own QEMU) in a second pytest beside
# everything else, so the wall time is the longer of the two, not their sum. Its output follows the rest's.
# Usage: scripts/run-suite.sh PYTHON [pytest args...]; exit status: the first failing run's.
set -uo pipefail
py=${1:?usage: scripts/run-suite.sh PYTHON [pytest args...]}
shift
nested=tests/integration/test_nested_kvm.py
base=${TMPDIR:-/tmp}/tsalign-nested-pytest
log=$base.log
mkdir -p "$(dirname "$base")"
# a full disk shows up as failures deep inside tests (an unarchive's ENOSPC): refuse to start instead
need_gb=${TSALIGN_SUITE_MIN_FREE_GB:-12}
for d in "${TMPDIR:-/tmp}" .; do
  free_kb=$(df -Pk "$d" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "run-suite: $d has $((free_kb / 1024 / 1024)) GB free; the suite needs $need_gb GB (the fleet test's 48" \
         "alignments ~9 GB, VM images, the lab's L1): free some space, or set TSALIGN_SUITE_MIN_FREE_GB" >&2
    exit 28
  fi
done
# a killed earlier run's SSH targets (namespaces, mounts of this machine's tracefs) would be seen by the tests
"$py" -m tests.infra.netns reap || exit
# job control for the background run only: without it, it would ignore SIGINT (a non-interactive shell's
# background jobs do) and an interrupted `make test` would leave it and its L1 running
set -m
"$py" -m pytest "$nested" -p no:cacheprovider --basetemp="$base" "$@" >"$log" 2>&1 &
pid=$!
set +m
trap 'kill -INT "$pid" 2>/dev/null; wait "$pid"; exit 130' INT TERM
"$py" -m pytest tests --ignore="$nested" "$@"
rest=$?
echo "== waiting for the nested lab's run ($nested, log $log)"
wait "$pid"
lab=$?
trap - INT TERM
cat "$log"
echo "== the rest: exit $rest; the nested lab: exit $lab"
[ "$rest" -ne 0 ] && exit "$rest"
exit "$lab"
