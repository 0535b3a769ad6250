#!/usr/bin/env bash
# The main job: trains a small CondConv network on real offline images (Fashion-MNIST
# when Debian's dataset-fashion-mnist is installed, scikit-learn's digits otherwise).
# Extra arguments go to `python -m keras_dynconv.demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export KERAS_BACKEND=${KERAS_BACKEND:-torch}
exec .venv/bin/python -m keras_dynconv.demo "$@"
