"""CondConv-EfficientNet-B0's per-example formulations under JAX, timed in turns.

On the H100 (2026-11-27) CondConv-B0 / B0 at batch 256 took 1.29 in float32 and 1.09
in mixed bfloat16 under `jax.jit`. This script tells which formulation carries the
float32 excess, in one process on one device:

    KERAS_BACKEND=jax python scripts/gpu_jax_variants.py --batch 256

Variants (each jitted separately; the models of a row's dtype are timed in turns):
- B0, and B0 with `jax.default_matmul_precision("highest")` (no TF32);
- CondConv-B0 as `strategy="auto"` runs it (per-example kernels; XLA takes the
  per-example depthwise and k>1 convolutions as sums over kernel taps);
- the same without the taps (one grouped convolution, the batch folded into channels);
- `strategy="mixture"` (E convolutions, then the routing weights the outputs);
- the default CondConv-B0 at the highest precision.
Prints a Markdown table (median and IQR of `--repeats` calls, ratio to B0) and writes
it with `--output`. A CPU dry run: `--batch 2 --image-size 64 --repeats 2`.
"""

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dynconv import zoo  # noqa: E402
from keras_dynconv.bench.measure import _inference  # noqa: E402
from keras_dynconv.ops import taps  # noqa: E402

CONDCONV = "condconv_efficientnet_b0"


def variants():
    """`(label, model name, builder arguments, taps allowed, matmul precision)`."""
    highest = "highest"
    return [
        ("B0", "efficientnet_b0", {}, True, None),
        ("B0, highest precision", "efficientnet_b0", {}, True, highest),
        ("CondConv-B0 (auto: per-example, taps)", CONDCONV, {}, True, None),
        ("CondConv-B0, per-example, grouped convolutions", CONDCONV, {}, False, None),
        ("CondConv-B0, mixture", CONDCONV, {"strategy": "mixture"}, True, None),
        ("CondConv-B0, highest precision", CONDCONV, {}, True, highest),
    ]


@contextlib.contextmanager
def taps_allowed(allowed):
    """While tracing: the per-example paths take taps as usual, or never."""
    original = taps.use_taps
    if not allowed:
        taps.use_taps = lambda inputs: False
    try:
        yield
    finally:
        taps.use_taps = original


def compiled_call(model, images, allowed, precision):
    """`(run, compile seconds)`: `run()` is the benchmark's jitted inference call
    (`keras_dynconv.bench.measure`), traced with or without taps, in `precision`."""

    def precision_scope():
        # Part of the jit cache key: every call, not only the tracing one, runs in it.
        return jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()

    with taps_allowed(allowed), precision_scope():
        run, _, _, compile_seconds = _inference(model, images, torch_compile=False)

    def run_in_scope():
        with precision_scope():
            run()

    return run_in_scope, compile_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-experts", type=int, default=8)
    parser.add_argument("--dtype", default="float32", help="a Keras dtype policy")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", help="also write the table to this Markdown file")
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        parser.error("run with KERAS_BACKEND=jax")
    keras.config.set_dtype_policy(args.dtype)
    images = jax.numpy.asarray(
        np.random.default_rng(0).uniform(0, 255, (args.batch, args.image_size,
                                                   args.image_size, 3)).astype("float32")
    )
    runs, compile_seconds = {}, {}
    for label, name, arguments, allowed, precision in variants():
        if name == CONDCONV:
            arguments = {"num_experts": args.num_experts, **arguments}
        model = zoo.get_model(name, weights=None,
                              input_shape=(args.image_size, args.image_size, 3), **arguments)
        runs[label], compile_seconds[label] = compiled_call(model, images, allowed, precision)
        print(f"compiled {label} in {compile_seconds[label]:.1f} s", flush=True)
    for run in runs.values():
        for _ in range(args.warmup):
            run()
    times = {label: [] for label in runs}
    for _ in range(args.repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            times[label].append(1e3 * (time.perf_counter() - start))
    baseline = statistics.median(times["B0"])
    lines = [
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}, keras {keras.__version__}, "
        f"{args.dtype}, batch {args.batch}, {args.image_size}x{args.image_size}, "
        f"{args.num_experts} experts, median of {args.repeats} calls in turns",
        "",
        "| variant | median ms | IQR ms | / B0 | compile s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, samples in times.items():
        quartiles = np.percentile(samples, [25, 75])
        median = statistics.median(samples)
        lines.append(f"| {label} | {median:.2f} | {quartiles[1] - quartiles[0]:.2f} | "
                     f"{median / baseline:.3f} | {compile_seconds[label]:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        with open(args.output, "w") as file:
            file.write(table + "\n")


if __name__ == "__main__":
    main()
