"""Zoo models on torch: layers called through Keras' `__call__` against direct calls.

    python scripts/bench_direct_calls.py
        [--models resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0]
        [--batch-sizes 1,32] [--repeats 21]

Each zoo model, inference under `torch.no_grad()`, with
`keras_dynconv.layers.direct_calls` taking its direct calls (the `ZooModel`'s layers
and the MoD blocks' inner layers) and with them turned off (every layer called through
`Layer.__call__`, as a plain functional model calls them), in turns in one process (so
that process-to-process noise does not enter the comparison); outputs checked equal
first. Median ms of `--repeats` calls.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_dynconv import zoo  # noqa: E402
from keras_dynconv.layers import direct_calls  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0"
    )
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{keras.backend.backend()}, {torch.get_num_threads()} threads")
    print("| model | batch | through __call__ ms | direct calls ms | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        model = zoo.get_model(name, weights=None)
        for batch in (int(size) for size in args.batch_sizes.split(",")):
            images = keras.ops.convert_to_tensor(
                rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
            )
            through_call, direct = time_both_ways(model, images, args.repeats)
            print(f"| {name} | {batch} | {through_call:.1f} | {direct:.1f} | "
                  f"{through_call / direct:.2f}x |")


def time_both_ways(model, images, repeats):
    """Median ms of `model(images)` with the direct calls off, and on."""
    decide = direct_calls.applies
    ways = {(lambda *args: False): [], decide: []}
    outputs = []
    try:
        with torch.no_grad():
            for way in ways:
                direct_calls.applies = way
                outputs.append(keras.ops.convert_to_numpy(model(images, training=False)))
            np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
            for _ in range(repeats):
                for way, times in ways.items():
                    direct_calls.applies = way
                    start = time.perf_counter()
                    model(images, training=False)
                    times.append(1e3 * (time.perf_counter() - start))
    finally:
        direct_calls.applies = decide
    return [float(np.median(times)) for times in ways.values()]


if __name__ == "__main__":
    main()
