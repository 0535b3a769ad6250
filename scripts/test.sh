#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend; fails if any backend fails or
# runs no test. Extra arguments go to pytest (e.g. -m large, -k routing).
#
# Backends run side by side, TEST_JOBS at a time (default: the number of CPU cores):
# much of each run is single-threaded compilation (XLA, TensorFlow graphs), so two
# backends on two cores take far less time than one after the other. Each backend's
# output is printed in full when it finishes. TEST_JOBS=1 streams it instead.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh || exit 1
export PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2
backends=(${BACKENDS:-tensorflow jax torch})
jobs_at_once=${TEST_JOBS:-$(nproc)}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_backend() {
  local backend=$1 start rc
  start=$(date +%s)
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -p no:cacheprovider "${@:2}"
  rc=$?
  echo "$rc $(( $(date +%s) - start ))" > "$logs/$backend.result"
}

if [ "$jobs_at_once" -le 1 ]; then
  for backend in "${backends[@]}"; do
    echo "=== KERAS_BACKEND=$backend ==="
    run_backend "$backend" "$@"
  done
else
  echo "=== running ${backends[*]}, $jobs_at_once at a time ==="
  for backend in "${backends[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_at_once" ]; do wait -n; done
    (
      run_backend "$backend" "$@" > "$logs/$backend.log" 2>&1
      echo "=== KERAS_BACKEND=$backend ==="
      cat "$logs/$backend.log"
    ) &
  done
  wait
fi

status=0
summary=""
for backend in "${backends[@]}"; do
  read -r rc seconds < "$logs/$backend.result" || { rc=1; seconds=0; }
  # pytest exits 5 when no test ran: that is a failure here too.
  [ "$rc" -eq 0 ] || status=1
  summary="$summary\n  $backend: exit $rc in ${seconds}s"
done
printf "=== per backend:%b\n" "$summary"
exit $status
