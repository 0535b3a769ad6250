#!/usr/bin/env bash
# Live parity tests against timm (tests/timm_live): zoo models loaded with real timm
# state_dicts must give timm's logits within 1e-4, on every backend.
#
# Creates .venv-timm (scripts/setup-timm-venv.sh, several GB on first use) and .venv
# (scripts/setup-venv.sh) if needed, then runs the `timm_live` tests once per backend in
# ${BACKENDS:-tensorflow jax torch}, one after the other (the timm reference and the
# three backends would fight over the CPU cores); fails if any backend fails or runs no
# test. timm's references are made once, by the first backend's session, in a temporary
# folder shared with the others. Extra arguments go to pytest (e.g. -k cc_b0).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-timm-venv.sh || exit 1
bash scripts/setup-venv.sh || exit 1
export PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2
# Missing timm or safetensors fails the tests here instead of skipping them.
export TIMM_LIVE_REQUIRED=1
TIMM_REFERENCE_DIR=$(mktemp -d)
export TIMM_REFERENCE_DIR
trap 'rm -rf "$TIMM_REFERENCE_DIR"' EXIT
backends=(${BACKENDS:-tensorflow jax torch})

status=0
summary=""
for backend in "${backends[@]}"; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  # The last -m wins: this overrides addopts' -m 'not large'.
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -p no:cacheprovider tests/timm_live \
    -m timm_live "$@"
  rc=$?  # pytest exits 5 when no test ran: a failure here too
  [ "$rc" -eq 0 ] || status=1
  summary="$summary\n  $backend: exit $rc in $(( $(date +%s) - start ))s"
done
printf "=== per backend:%b\n" "$summary"
exit $status
