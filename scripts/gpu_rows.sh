#!/usr/bin/env bash
# Issue 9's GPU rows and CUDA checks in one short run on a lent device machine:
#
#     OUT=/where/results/go bash scripts/gpu_rows.sh
#
# 1. The torch fast paths against the generic ones on CUDA (tests/test_ops.py, the
#    normalisation and direct-call tests), if pytest is installed: the correlation
#    weight gradient of the folded depthwise convolution and the zoo models' direct
#    calls have only run on CPUs so far.
# 2. `keras-dynconv bench` of CondConv-EfficientNet-B0 (8 experts) against B0, on torch
#    and on JAX (whichever imports): inference at batches 32 and 256 in float32 and
#    mixed bfloat16, then the training step on its own invocation (a cuDNN failure
#    leaves the process's CUDA context broken, which would fail every later row).
#
# It runs on the device's own Python (torch, JAX and Keras are installed there, not
# TensorFlow; this checkout is on PYTHONPATH). Every step has its own time limit
# (STEP_SECONDS, default 120) and logs to $OUT: at most 10 minutes in all, so the call
# can be given `timeout_s=600`. BATCHES, TRAIN_BATCHES, IMAGE_SIZE and REPEATS
# override the plan (e.g. a dry run on a CPU: BATCHES=2 TRAIN_BATCHES=2 IMAGE_SIZE=64
# REPEATS=1 STEP_SECONDS=300).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu-rows}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
limit=${STEP_SECONDS:-120}
batches=${BATCHES:-32,256}
train_batches=${TRAIN_BATCHES:-32,128}
common=(--models "efficientnet_b0;condconv_efficientnet_b0:num_experts=8"
        --image-size "${IMAGE_SIZE:-224}" --repeats "${REPEATS:-10}" --warmup 3)

step() {  # step NAME COMMAND...: runs COMMAND with the time limit, output to $out/NAME.log
  local name=$1
  shift
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "=== $name: exit $?"
  tail -n 5 "$out/$name.log"
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) > "$out/gpu.txt" 2>&1
python -c "import keras, sys; print(sys.version); print('keras', keras.__version__)" >> "$out/gpu.txt" 2>&1

if python -c "import pytest, torch" 2>/dev/null; then
  step tests-torch env KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider \
    tests/test_ops.py tests/test_normalization.py tests/test_torch_weights.py \
    tests/test_direct_calls.py
fi
backends=()
for backend in torch jax; do
  if python -c "import $backend" 2>/dev/null; then backends+=("$backend"); else echo "=== $backend: not installed"; fi
done
# Inference rows of both backends first: they are the targets (<= 1.10 at batch 256).
for backend in "${backends[@]}"; do
  step "$backend-inference" python -m keras_dynconv.bench "${common[@]}" --backends "$backend" \
    --batch-sizes "$batches" --modes inference --dtypes float32,mixed_bfloat16 \
    --output-dir "$out/$backend-inference"
done
for backend in "${backends[@]}"; do
  step "$backend-train" python -m keras_dynconv.bench "${common[@]}" --backends "$backend" \
    --batch-sizes "$train_batches" --modes train --dtypes float32 \
    --output-dir "$out/$backend-train"
done
