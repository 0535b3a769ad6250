#!/usr/bin/env bash
# Issue 9's GPU rows and CUDA checks in one short run on a lent device machine:
#
#     OUT=/where/results/go bash scripts/gpu_rows.sh
#
# Steps (STEPS="variants inference train tests" by default; name fewer to run fewer):
# - variants: `scripts/gpu_jax_variants.py` at the largest batch, float32: which of
#   CondConv's JAX formulations carries the float32 excess seen on the H100.
# - inference: `keras-dynconv bench` of CondConv-EfficientNet-B0 (8 experts) against
#   B0 at batches 32 and 256 in float32 and mixed bfloat16: torch eager (with timm's
#   tf_efficientnet_cc_b0_8e beside them when timm is installed), then JAX.
# - train: the training step at batch 64 (the memory target's batch), each backend on
#   its own invocation (a cuDNN failure leaves the process's CUDA context broken,
#   which would fail every later row).
# - tests: in the time left, the torch fast paths against the generic ones on CUDA
#   (the prepared-call, direct-call, ops, normalisation and weight tests), if pytest
#   is installed.
#
# It runs on the device's own Python (torch and JAX are installed there, Keras is not).
# Wheels in .whl/ are installed to /tmp/site first: fetch them here with
#     echo /.whl/ >> .git/info/exclude
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#         --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
# and name .whl in the call's `carry`. This checkout is on PYTHONPATH. A preflight
# imports Keras on each backend and stops the run at once if that fails. Every step has
# its own time limit and logs to $OUT (rows are printed as they are measured, so a step
# stopped at its limit keeps the rows it finished): about 9.5 minutes in all
# (TOTAL_SECONDS), so the call can be given `timeout_s=600`. BATCHES, TRAIN_BATCHES,
# IMAGE_SIZE, REPEATS and STEP_SECONDS (every step's limit) override the plan (a dry
# run on a CPU: BATCHES=2 TRAIN_BATCHES=2 IMAGE_SIZE=64 REPEATS=1 STEP_SECONDS=100
# PYTHON=python). Each bench step sets KERAS_BACKEND: Keras' default, TensorFlow, is
# not installed there.
set -u
cd "$(dirname "$0")/.."
# The device returns at most 8 files from $OUT: everything is written to a work folder
# and packed into $OUT/gpu-rows.tar.gz at the end (plus the summary, gpu.txt).
final=${OUT:-gpu-rows}
out=$(mktemp -d)
mkdir -p "$final"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
batches=${BATCHES:-32,256}
train_batches=${TRAIN_BATCHES:-64}
common=(--models "efficientnet_b0;condconv_efficientnet_b0:num_experts=8"
        --image-size "${IMAGE_SIZE:-224}" --repeats "${REPEATS:-10}" --warmup 3)

# Steps are cut short so that the whole run ends by TOTAL_SECONDS (default 560) and
# the results are still packed inside a 600-second call.
deadline=$((SECONDS + ${TOTAL_SECONDS:-560}))
steps=" ${STEPS:-variants inference train tests} "
step() {  # step NAME SECONDS COMMAND...: COMMAND with a time limit, output to $out/NAME.log
  local name=$1 seconds=${STEP_SECONDS:-$2}
  shift 2
  local kind=${name#*-}
  kind=${kind%%-*}
  if [[ "$steps" != *" $kind "* ]]; then return; fi
  local left=$((deadline - SECONDS - 10))
  if [ "$left" -lt "$seconds" ]; then seconds=$left; fi
  if [ "$seconds" -lt 15 ]; then echo "=== $name: skipped, no time left"; return; fi
  echo "=== $name (limit ${seconds} s): $*"
  timeout "$seconds" "$@" > "$out/$name.log" 2>&1
  echo "=== $name: exit $?"
  grep -E "ms|^\| |error|Error|passed|failed" "$out/$name.log" | tail -n 24
}

pack() {
  cp "$out/gpu.txt" "$final/" 2>/dev/null
  tar czf "$final/gpu-rows.tar.gz" -C "$out" .
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) > "$out/gpu.txt" 2>&1
backends=()
for backend in torch jax; do
  if KERAS_BACKEND=$backend "$python" -c "
import sys, keras, $backend, keras_dynconv
x = keras.ops.ones((2, 3))
print(sys.version.split()[0], 'keras', keras.__version__, '$backend', $backend.__version__,
      'device of a tensor:', getattr(keras.ops.matmul(x, keras.ops.transpose(x)), 'device', '?'))
" >> "$out/gpu.txt" 2>&1; then
    backends+=("$backend")
  else
    echo "=== $backend: Keras does not run on it here"
  fi
done
cat "$out/gpu.txt"
if [ ${#backends[@]} -eq 0 ]; then pack; exit 3; fi

# The JAX formulations first: JAX float32 at batch 256 is the GPU row above target.
if [[ " ${backends[*]} " == *" jax "* ]]; then
  step jax-variants 150 env KERAS_BACKEND=jax "$python" scripts/gpu_jax_variants.py \
    --batch "${batches##*,}" --image-size "${IMAGE_SIZE:-224}" --repeats 20 \
    --output "$out/jax-variants.md"
fi
# Then inference: it holds the target (<= 1.10 at batch 256).
for backend in "${backends[@]}"; do
  extra=()
  if [ "$backend" = torch ] && "$python" -c "import timm" 2>/dev/null; then
    extra=(--timm tf_efficientnet_cc_b0_8e)
  fi
  for dtype in float32 mixed_bfloat16; do
    step "$backend-inference-$dtype" "$([ "$backend" = jax ] && echo 110 || echo 70)" \
      env KERAS_BACKEND="$backend" "$python" -m keras_dynconv.bench "${common[@]}" \
      "${extra[@]}" --backends "$backend" --batch-sizes "$batches" --modes inference \
      --dtypes "$dtype" --output-dir "$out/$backend-inference-$dtype"
  done
done
for backend in "${backends[@]}"; do
  step "$backend-train" "$([ "$backend" = jax ] && echo 120 || echo 50)" \
    env KERAS_BACKEND="$backend" "$python" -m keras_dynconv.bench "${common[@]}" --backends "$backend" \
    --batch-sizes "$train_batches" --modes train --dtypes float32 \
    --output-dir "$out/$backend-train"
done
# The CUDA tests last, in the time left; pytest stops at the sixth failure, so the
# tracebacks reach the log before the step's limit.
if [[ " ${backends[*]} " == *" torch "* ]] && "$python" -c "import pytest" 2>/dev/null; then
  step torch-tests 150 env KERAS_BACKEND=torch "$python" -m pytest -q -p no:cacheprovider \
    --maxfail=6 --tb=short tests/test_prepared_calls.py tests/test_direct_calls.py tests/test_ops.py \
    tests/test_normalization.py tests/test_torch_weights.py
fi
pack
