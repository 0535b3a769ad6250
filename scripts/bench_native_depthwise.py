"""The per-example depthwise convolution of CondConv-EfficientNet-B0's layers on torch:
the compiled kernel against the folded path and the static layer's convolution.

    python scripts/bench_native_depthwise.py [--batch 32] [--rounds 30] [--threads 2]
    python scripts/bench_native_depthwise.py --static [--batch-sizes 1,2,4,8,16]
    python scripts/bench_native_depthwise.py --pointwise [--batch-sizes 1,32]

Inference (no gradient), float32, on a CPU. For each layer shape, the three
convolutions are called in turns, `--rounds` times, after three untimed rounds; prints
the median ms of each:

- `static`: the static layer's depthwise convolution (`torch_conv.depthwise_conv`, oneDNN);
- `folded`: the per-example path without the kernel (`KERAS_DYNCONV_NATIVE=0`: oneDNN
  on chunks of examples folded into channels);
- `native`: `keras_dynconv.ops.native_depthwise`.

`--static` times EfficientNet-B0's static depthwise layers instead, oneDNN's convolution
(`torch_conv.depthwise_conv` with the kernel off) against the compiled kernel with one
shared kernel, per batch size: where `native_depthwise.STATIC_MAX_BATCH` comes from.

`--pointwise` times CondConv-EfficientNet-B0's dynamic 1x1 layers (8 experts) per batch
size: the static layer's product (one kernel: `static`), torch's batched product of the
combined kernels (`torch_conv.pointwise_conv_of_experts` with the kernel off: `torch`)
and `keras_dynconv.ops.native_pointwise` (`native`, called directly, also where its
`applies` would leave the layer to torch): where `native_pointwise.MAX_PIXELS` and
`MAX_INPUT_BYTES` come from.

Set `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483648`, as for the
model benchmarks (zoo/benchmarks/README.md).
"""

import argparse
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

import torch  # noqa: E402

from keras_dynconv.ops import native_depthwise  # noqa: E402
from keras_dynconv.ops import native_pointwise  # noqa: E402
from keras_dynconv.ops import torch_conv  # noqa: E402

# CondConv-EfficientNet-B0's dynamic depthwise layers (blocks 8-15), at 224x224:
# (input side, channels, kernel, stride).
LAYERS = [
    (14, 480, 5, 1),
    (14, 672, 5, 1),
    (14, 672, 5, 2),
    (7, 1152, 5, 1),
    (7, 1152, 3, 1),
]

# EfficientNet-B0's depthwise layers, one per distinct shape: (input side, channels,
# kernel, stride). The stride-2 ones pad unevenly ("same" on an even side).
STATIC_LAYERS = [
    (112, 32, 3, 1),
    (112, 96, 3, 2),
    (56, 144, 3, 1),
    (56, 144, 5, 2),
    (28, 240, 5, 1),
    (28, 240, 3, 2),
    (14, 480, 3, 1),
    (14, 672, 5, 1),
    (7, 1152, 5, 1),
]

# CondConv-EfficientNet-B0's dynamic 1x1 layers (blocks 8-15), one per distinct shape:
# (input side, input channels, output channels).
POINTWISE_LAYERS = [
    (14, 80, 480),
    (14, 480, 112),
    (14, 112, 672),
    (14, 672, 112),
    (7, 672, 192),
    (7, 192, 1152),
    (7, 1152, 192),
    (7, 1152, 320),
]


def median_ms(variants, rounds):
    """`{name: median ms}`, the variants called in turns."""
    for _ in range(3):
        for function in variants.values():
            function()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, function in variants.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def static_table(batch_sizes, rounds):
    print("| layer | " + " | ".join(f"batch {batch}" for batch in batch_sizes) + " |")
    print("| --- |" + " ---: |" * len(batch_sizes))
    generator = torch.Generator().manual_seed(0)
    os.environ["KERAS_DYNCONV_NATIVE"] = "0"
    with torch.no_grad():
        for side, channels, kernel_size, stride in STATIC_LAYERS:
            cells = []
            kernel = torch.randn(kernel_size, kernel_size, channels, 1, generator=generator)
            for batch in batch_sizes:
                inputs = torch.randn(batch, side, side, channels, generator=generator)
                times = median_ms(
                    {
                        "onednn": lambda: torch_conv.depthwise_conv(
                            inputs, kernel, stride, "same", 1
                        ),
                        "native": lambda: native_depthwise.depthwise_conv(
                            inputs, kernel, stride, "same", 1
                        ),
                    },
                    rounds,
                )
                cells.append(
                    f"{times['onednn']:.2f} / {times['native']:.2f} "
                    f"({times['native'] / times['onednn']:.2f})"
                )
            print(f"| {side}x{side}x{channels}, {kernel_size}x{kernel_size}, stride {stride} | "
                  + " | ".join(cells) + " |")


def pointwise_table(batch_sizes, rounds, num_experts=8):
    print("| layer | " + " | ".join(f"batch {batch}" for batch in batch_sizes) + " |")
    print("| --- |" + " ---: |" * len(batch_sizes))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for side, in_channels, out_channels in POINTWISE_LAYERS:
            cells = []
            # A parameter, as a layer's weights are: the kernel reads its packed copy.
            experts = torch.nn.Parameter(
                torch.randn(num_experts, 1, 1, in_channels, out_channels, generator=generator),
                requires_grad=False,
            )
            for batch in batch_sizes:
                inputs = torch.randn(batch, side, side, in_channels, generator=generator)
                routing = torch.rand(batch, num_experts, generator=generator)

                def batched():
                    os.environ["KERAS_DYNCONV_NATIVE"] = "0"
                    torch_conv.pointwise_conv_of_experts(inputs, experts, routing)

                times = median_ms(
                    {
                        "static": lambda: torch_conv.conv(inputs, experts[0], 1, "same", 1),
                        "torch": batched,
                        "native": lambda: native_pointwise.pointwise_conv_of_experts(
                            inputs, experts, routing
                        ),
                    },
                    rounds,
                )
                cells.append(
                    f"{times['static']:.2f} / {times['torch']:.2f} / {times['native']:.2f}"
                )
            print(f"| {side}x{side}, {in_channels} -> {out_channels} | " + " | ".join(cells) + " |")


def per_example(inputs, kernels, stride, native):
    def call():
        os.environ["KERAS_DYNCONV_NATIVE"] = "1" if native else "0"
        torch_conv.per_example_depthwise_conv(inputs, kernels, stride, "same", 1)

    return call


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--static", action="store_true",
                        help="B0's static layers: oneDNN / native ms (ratio) per batch size")
    parser.add_argument("--pointwise", action="store_true",
                        help="B0's dynamic 1x1 layers: static / torch / native ms per batch size")
    parser.add_argument("--batch-sizes", default=None,
                        help="for --static (default 1,2,4,8,16) and --pointwise (default 1,32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if native_depthwise.kernel_function() is None:
        raise SystemExit("the native kernel is not available here (see native_depthwise's docstring)")
    if args.pointwise:
        batch_sizes = [int(size) for size in (args.batch_sizes or "1,32").split(",")]
        print(f"{args.threads} threads, median ms of {args.rounds} rounds: static / torch / native")
        pointwise_table(batch_sizes, args.rounds)
        return
    if args.static:
        batch_sizes = [int(size) for size in (args.batch_sizes or "1,2,4,8,16").split(",")]
        print(f"{args.threads} threads, median ms of {args.rounds} rounds: oneDNN / native (native / oneDNN)")
        static_table(batch_sizes, args.rounds)
        return
    print(f"batch {args.batch}, {args.threads} threads, median ms of {args.rounds} rounds")
    print("| layer | static | folded | native | native / static |")
    print("| --- | ---: | ---: | ---: | ---: |")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for side, channels, kernel, stride in LAYERS:
            inputs = torch.randn(args.batch, side, side, channels, generator=generator)
            kernels = torch.randn(args.batch, kernel, kernel, channels, 1, generator=generator)
            static_kernel = kernels[0]
            times = median_ms(
                {
                    "static": lambda: torch_conv.depthwise_conv(
                        inputs, static_kernel, stride, "same", 1
                    ),
                    "folded": per_example(inputs, kernels, stride, native=False),
                    "native": per_example(inputs, kernels, stride, native=True),
                },
                args.rounds,
            )
            print(
                f"| {side}x{side}x{channels}, {kernel}x{kernel}, stride {stride} "
                f"| {times['static']:.2f} | {times['folded']:.2f} | {times['native']:.2f} "
                f"| {times['native'] / times['static']:.2f} |"
            )


if __name__ == "__main__":
    main()
