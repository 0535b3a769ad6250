"""torch convolutions of Keras kernels: the permuted view against the kept layout.

    python scripts/bench_torch_weights.py [--repeats 41] [--models resnet50,efficientnet_b0]

For convolutions of ResNet-50's shapes at batch 1 and 32, median ms of `--repeats`
calls of `torch.nn.functional.conv2d` on channels-last inputs with the kernel as
`keras_dynconv.ops.torch_conv` used to pass it (a permuted view of the Keras kernel,
which torch copies on every call) and as `keras_dynconv.ops.torch_weights` keeps it
for inference (channels-last memory). With `--models`, each zoo model at batch 1 and
32 under `torch.no_grad()`, both ways in turns in one process, outputs checked equal.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as functional  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv import zoo  # noqa: E402
from keras_dynconv.ops import torch_weights  # noqa: E402

# (batch, height = width, input channels, output channels, kernel size)
SHAPES = [(1, 14, 256, 256, 3), (1, 56, 64, 64, 3), (1, 7, 512, 2048, 1),
          (1, 14, 1024, 256, 1), (32, 14, 256, 256, 3), (32, 7, 512, 2048, 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--models", default="", help="comma-separated zoo models")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{torch.get_num_threads()} threads")
    print("| batch, input | kernel | view ms | kept layout ms |")
    print("| --- | --- | ---: | ---: |")
    for batch, size, cin, cout, kernel_size in SHAPES:
        inputs = torch.from_numpy(
            rng.standard_normal((batch, size, size, cin)).astype("float32")).permute(0, 3, 1, 2)
        kernel = torch.from_numpy(
            rng.standard_normal((kernel_size, kernel_size, cin, cout)).astype("float32"))
        view = kernel.permute(3, 2, 0, 1)
        kept = view.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            times = [median_ms(lambda weight=weight: functional.conv2d(
                inputs, weight, padding=kernel_size // 2), args.repeats) for weight in (view, kept)]
        print(f"| {batch}, {size}x{size}x{cin} | {kernel_size}x{kernel_size}, {cin} -> {cout} | "
              f"{times[0]:.2f} | {times[1]:.2f} |")
    for name in filter(None, args.models.split(",")):
        time_model(name, max(5, args.repeats // 4), rng)


def time_model(name, repeats, rng):
    model = zoo.get_model(name, weights=None)
    keeps = torch_weights._keeps
    ways = {"view": lambda kernel, cacheable: False, "kept layout": keeps}
    try:
        for batch in (1, 32):
            images = torch.from_numpy(rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32"))
            times, outputs = {way: [] for way in ways}, {}
            with torch.no_grad():
                for way, rule in ways.items():
                    torch_weights._keeps = rule
                    outputs[way] = keras.ops.convert_to_numpy(model(images, training=False))
                np.testing.assert_allclose(outputs["kept layout"], outputs["view"],
                                           atol=1e-4, rtol=1e-4)
                for _ in range(repeats):
                    for way, rule in ways.items():
                        torch_weights._keeps = rule
                        start = time.perf_counter()
                        model(images, training=False)
                        times[way].append(1e3 * (time.perf_counter() - start))
            cells = ", ".join(
                f"{way} {np.median(samples):.0f} ms" for way, samples in times.items())
            print(f"{name}, batch {batch}, called in turns, median of {repeats}: {cells}")
    finally:
        torch_weights._keeps = keeps


if __name__ == "__main__":
    main()
