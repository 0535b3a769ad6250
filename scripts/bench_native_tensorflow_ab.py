"""CondConv-EfficientNet-B0 / EfficientNet-B0 on TensorFlow without XLA with the native
ops (`keras_dynconv.ops.native_tensorflow`) on and off, in one process.

    python scripts/bench_native_tensorflow_ab.py [--batch 32] [--rounds 15]

Inference as `keras-dynconv bench --tf-xla off` runs it: `model(x, training=False)` in a
plain `tf.function`. B0, CondConv-B0 traced with the ops and CondConv-B0 traced with
`KERAS_DYNCONV_NATIVE=0` (its per-example depthwise layers one TensorFlow convolution
per example, its 1x1 layers the combined kernels and a batched product) are called in
turns, `--rounds` times after two untimed calls each; prints each median and both
ratios. One process and calls in turns keep the comparison out of the drift between
processes on a shared machine. Set `MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=2147483648`, as for the model benchmarks (zoo/benchmarks/README.md).
"""

import argparse
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_dynconv import zoo  # noqa: E402


def traced(model, images, native):
    """`model`'s forward pass as a plain `tf.function`, traced with the native ops on or
    off (the choice is made as the graph is traced)."""
    forward = tf.function(lambda t: model(t, training=False), jit_compile=False)
    previous = os.environ.get("KERAS_DYNCONV_NATIVE")
    os.environ["KERAS_DYNCONV_NATIVE"] = "1" if native else "0"
    try:
        forward.get_concrete_function(images)
    finally:
        if previous is None:
            del os.environ["KERAS_DYNCONV_NATIVE"]
        else:
            os.environ["KERAS_DYNCONV_NATIVE"] = previous
    return forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    images = tf.constant(
        np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    )
    static = zoo.efficientnet_b0(weights=None)
    dynamic = zoo.condconv_efficientnet_b0(weights=None)
    calls = {
        "b0": traced(static, images, native=True),
        "condconv_native": traced(dynamic, images, native=True),
        "condconv_tensorflow": traced(dynamic, images, native=False),
    }
    difference = np.abs(
        calls["condconv_native"](images).numpy() - calls["condconv_tensorflow"](images).numpy()
    ).max()
    times = {name: [] for name in calls}
    for name, call in calls.items():
        for _ in range(2):
            call(images).numpy()
    for _ in range(args.rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call(images).numpy()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(f"batch {args.batch}, {args.rounds} rounds; largest output difference {difference:.2e}")
    for name, value in medians.items():
        print(f"  {name:22s} {value:9.2f} ms")
    for name in ("condconv_native", "condconv_tensorflow"):
        print(f"  ratio {name:16s} {medians[name] / medians['b0']:.3f}")


if __name__ == "__main__":
    main()
