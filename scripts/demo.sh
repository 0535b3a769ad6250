#!/usr/bin/env bash
# The main job: fine-tunes real ImageNet EfficientNet-Lite0 weights and their upcycled
# CondConv twin on real offline images (Fashion-MNIST when Debian's
# dataset-fashion-mnist is installed, scikit-learn's digits otherwise), prints both
# test accuracies and writes demo-output/routing.png.
# Extra arguments go to `python -m keras_dynconv.demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export KERAS_BACKEND=${KERAS_BACKEND:-torch}
exec .venv/bin/python -m keras_dynconv.demo "$@"
