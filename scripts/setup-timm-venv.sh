#!/usr/bin/env bash
# Creates .venv-timm: an optional environment with timm, used only to (re)generate the
# golden files under tests/golden/timm/ (scripts/timm_golden.py). The default test
# suite does not need it.
#
# torchvision has no CPU build on this machine's registry, so this environment takes the
# CUDA builds of torch 2.14.1 / torchvision 0.29.1 (several GB; they run on the CPU).
# Do not import tensorflow or keras in this environment (importing tensorflow before
# torch segfaults); the golden script uses only numpy, torch and timm.
#
# Re-running is cheap: it reinstalls only when the pinned requirement list changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-timm}
REQS="torch==2.14.1 torchvision==0.29.1 timm==1.0.29 numpy"
stamp="$VENV/.installed-$(printf '%s' "$REQS" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet $REQS
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
