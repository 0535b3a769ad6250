#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend; fails if any backend fails or
# runs no test. Extra arguments go to pytest (e.g. -m large, -k routing).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh || exit 1
export PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2
status=0
summary=""
for backend in ${BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -p no:cacheprovider "$@"
  rc=$?
  seconds=$(( $(date +%s) - start ))
  # pytest exits 5 when no test ran: that is a failure here too.
  [ "$rc" -eq 0 ] || status=1
  summary="$summary\n  $backend: exit $rc in ${seconds}s"
done
printf "=== per backend:%b\n" "$summary"
exit $status
