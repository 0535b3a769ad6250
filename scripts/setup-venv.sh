#!/usr/bin/env bash
# Creates .venv with every backend and the test tools, from the project's own files.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch is pinned to 2.13.0 in pyproject.toml: the CPU wheel, never a CUDA build.
  "$VENV/bin/python" -m pip install --quiet -e ".[all]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
