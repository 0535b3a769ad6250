"""torch inference of per-example convolutions: the whole batch at once or in chunks.

    python scripts/bench_torch_chunks.py [--batch 32] [--repeats 9]

For the dynamic layer shapes of CondConv-EfficientNet-B0 (8 experts), median ms of
`--repeats` calls under `torch.no_grad()`, as `keras_dynconv.ops.torch_conv` runs them:

- depthwise: `per_example_depthwise_conv` with the batch folded into the channels of one
  image (the path before chunks, and still the training path) and in chunks of
  `DEPTHWISE_CHUNK_BYTES` of input (the default, then half and twice that);
- 1x1: `combine_experts` for the whole batch then `per_example_conv`, against
  `per_example_conv_of_experts`, which combines and applies a chunk of
  `POINTWISE_CHUNK_BYTES` of kernels at a time (the default, half and twice);
- the static layer of the same shape (`depthwise_conv`, `conv`) for scale.

The chunk sizes are set by patching the module's constants; outputs are checked equal.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv import ops as dynconv_ops  # noqa: E402
from keras_dynconv.ops import torch_conv  # noqa: E402

WHOLE_BATCH = 2**62
# (height = width, channels, kernel size, stride) of the depthwise layers
DEPTHWISE_SHAPES = [(14, 480, 5, 1), (14, 672, 5, 1), (14, 672, 5, 2), (7, 1152, 5, 1),
                    (7, 1152, 3, 1)]
# (height = width, input channels, output channels) of the 1x1 layers
POINTWISE_SHAPES = [(14, 80, 480), (14, 480, 112), (14, 112, 672), (14, 672, 112),
                    (7, 672, 192), (7, 192, 1152), (7, 1152, 192), (7, 1152, 320)]


def timed_variants(function, attribute, default, repeats):
    """`{label: ms}` of `function()` with `torch_conv.<attribute>` set to each chunk size,
    checking every variant's output equal to the whole batch's."""
    results, reference = {}, None
    sizes = {"whole batch": WHOLE_BATCH, "default": default, "default / 2": default // 2,
             "default x 2": default * 2}
    for label, size in sizes.items():
        setattr(torch_conv, attribute, size)
        output = function()
        if reference is None:
            reference = output
        torch.testing.assert_close(output, reference, atol=1e-4, rtol=1e-4)
        results[label] = median_ms(function, repeats)
    setattr(torch_conv, attribute, default)
    return results


def print_table(title, rows):
    labels = list(rows[0][2])
    print(f"\n| {title} | static ms | " + " | ".join(f"{label} ms" for label in labels) + " |")
    print("| --- | ---: |" + " ---: |" * len(labels))
    for name, static, variants in rows:
        cells = " | ".join(f"{variants[label]:.1f}" for label in labels)
        print(f"| {name} | {static:.1f} | {cells} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--num-experts", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    def tensor(*shape):
        return torch.from_numpy(rng.standard_normal(shape).astype("float32"))

    routing = torch.from_numpy(rng.uniform(size=(args.batch, args.num_experts)).astype("float32"))
    depthwise_rows, pointwise_rows = [], []
    with torch.no_grad():
        for size, channels, kernel, stride in DEPTHWISE_SHAPES:
            inputs = tensor(args.batch, size, size, channels)
            kernels = tensor(args.batch, kernel, kernel, channels, 1)
            static_kernel = tensor(kernel, kernel, channels, 1)
            static = median_ms(lambda: dynconv_ops.depthwise_conv(
                inputs, static_kernel, stride, "same"), args.repeats)
            variants = timed_variants(
                lambda: dynconv_ops.per_example_depthwise_conv(inputs, kernels, stride, "same"),
                "DEPTHWISE_CHUNK_BYTES", torch_conv.DEPTHWISE_CHUNK_BYTES, args.repeats,
            )
            name = f"{size}x{size}x{channels}, {kernel}x{kernel}, stride {stride}"
            depthwise_rows.append((name, static, variants))
        for size, in_channels, out_channels in POINTWISE_SHAPES:
            inputs = tensor(args.batch, size, size, in_channels)
            experts = tensor(args.num_experts, 1, 1, in_channels, out_channels)
            static_kernel = tensor(1, 1, in_channels, out_channels)
            static = median_ms(lambda: dynconv_ops.conv(inputs, static_kernel), args.repeats)
            variants = timed_variants(
                lambda: dynconv_ops.per_example_conv_of_experts(inputs, experts, routing),
                "POINTWISE_CHUNK_BYTES", torch_conv.POINTWISE_CHUNK_BYTES, args.repeats,
            )
            pointwise_rows.append((f"{size}x{size}, {in_channels} -> {out_channels}", static,
                                   variants))
    print(f"batch {args.batch}, {args.num_experts} experts, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; chunk sizes: depthwise "
          f"{torch_conv.DEPTHWISE_CHUNK_BYTES / 2**20:g} MiB of input, 1x1 "
          f"{torch_conv.POINTWISE_CHUNK_BYTES / 2**20:g} MiB of kernels")
    print_table("depthwise layer", depthwise_rows)
    print_table("1x1 layer", pointwise_rows)


if __name__ == "__main__":
    main()
