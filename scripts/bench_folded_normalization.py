"""Zoo models on eager torch with their batch normalisations folded into the convolutions
before them (`keras_dynconv.layers.folded_normalization`) and without, in one process.

    python scripts/bench_folded_normalization.py [--models efficientnet_b0,condconv_efficientnet_b0]
        [--batch 32] [--rounds 10]

Inference under `torch.no_grad()`, as `keras-dynconv bench` runs it. Each model is
called with the folding on and off (`graph_plan.run` without its `fold`) in turns,
`--rounds` times after two untimed calls each; prints each median, and for two models
the ratio of the second to the first both ways. One process and calls in turns keep the
comparison out of the drift between processes on a shared machine. Set
`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483648`, as for the model
benchmarks (zoo/benchmarks/README.md).
"""

import argparse
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_dynconv import zoo  # noqa: E402
from keras_dynconv.zoo import graph_plan  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_b0,condconv_efficientnet_b0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    names = args.models.split(",")
    images = torch.from_numpy(
        np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    )
    run = graph_plan.run

    def unfolded(model, inputs, operation_fn, fold=None):
        return run(model, inputs, operation_fn)

    variants = {}
    for name in names:
        model = zoo.get_model(name, weights=None)
        for folded in (False, True):
            variants[(name, folded)] = model
    times = {key: [] for key in variants}
    try:
        with torch.no_grad():
            for (_, folded), model in variants.items():
                graph_plan.run = run if folded else unfolded
                for _ in range(2):
                    model(images, training=False)
            for _ in range(args.rounds):
                for (name, folded), model in variants.items():
                    graph_plan.run = run if folded else unfolded
                    start = time.perf_counter()
                    model(images, training=False)
                    times[(name, folded)].append(time.perf_counter() - start)
    finally:
        graph_plan.run = run
    medians = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    print(f"batch {args.batch}, median of {args.rounds} rounds")
    for (name, folded), median in medians.items():
        print(f"{name}, {'folded' if folded else 'not folded'}: {median:.1f} ms")
    if len(names) == 2:
        for folded in (False, True):
            ratio = medians[(names[1], folded)] / medians[(names[0], folded)]
            print(f"{names[1]} / {names[0]}, {'folded' if folded else 'not folded'}: {ratio:.3f}")


if __name__ == "__main__":
    main()
