"""CondConv-EfficientNet-B0 / EfficientNet-B0 on eager torch with the compiled 1x1 kernel
of combined experts (`keras_dynconv.ops.native_pointwise`) on and off, in one process.

    python scripts/bench_native_pointwise_ab.py [--batch 32] [--rounds 15] [--switch routing]

Inference under `torch.no_grad()`, as `keras-dynconv bench` runs it. B0, CondConv-B0
with the kernel and CondConv-B0 without it (`native_pointwise.applies` answering no, so
its 1x1 layers take torch's batched product; the depthwise kernel stays on) are called
in turns, `--rounds` times after two untimed calls each; prints each median and both
ratios. `--switch routing` turns the routing layers' prepared functions
(`Routing.prepared_inference`) on and off instead. One process and calls in turns keep the comparison out of the drift between
processes on a shared machine. Set `MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=2147483648`, as for the model benchmarks (zoo/benchmarks/README.md).
"""

import argparse
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_dynconv import zoo  # noqa: E402
from keras_dynconv.layers import Routing  # noqa: E402
from keras_dynconv.ops import native_pointwise  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--switch", choices=["pointwise", "routing"], default="pointwise")
    args = parser.parse_args()
    static = zoo.efficientnet_b0(weights=None)
    dynamic = zoo.condconv_efficientnet_b0(weights=None)
    images = torch.from_numpy(
        np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    )
    applies, prepared_variables = native_pointwise.applies, Routing.prepared_variables

    def kernel(on):
        def switch():
            if args.switch == "pointwise":
                native_pointwise.applies = applies if on else (lambda *arguments: False)
            else:
                # Variables that are not torch tensors: `prepared_calls` runs `call`.
                Routing.prepared_variables = prepared_variables if on else (lambda self: [None])
        return switch

    variants = {
        "efficientnet_b0": (static, kernel(True)),
        f"condconv_efficientnet_b0, {args.switch} on": (dynamic, kernel(True)),
        f"condconv_efficientnet_b0, {args.switch} off": (dynamic, kernel(False)),
    }
    times = {name: [] for name in variants}
    try:
        with torch.no_grad():
            for model, switch in variants.values():
                switch()
                for _ in range(2):
                    model(images, training=False)
            for _ in range(args.rounds):
                for name, (model, switch) in variants.items():
                    switch()
                    start = time.perf_counter()
                    model(images, training=False)
                    times[name].append(time.perf_counter() - start)
    finally:
        native_pointwise.applies, Routing.prepared_variables = applies, prepared_variables
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    base = medians["efficientnet_b0"]
    print(f"batch {args.batch}, median of {args.rounds} rounds")
    for name, median in medians.items():
        print(f"{name}: {median:.1f} ms, ratio {median / base:.3f}")


if __name__ == "__main__":
    main()
