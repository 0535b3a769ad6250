"""The folded per-example depthwise convolution's gradients on torch, two ways.

    python scripts/bench_torch_depthwise_gradient.py [--batch 32] [--repeats 5]

For depthwise layer shapes of CondConv-EfficientNet-B0 (and one 3x3 layer of B0), with
the batch folded into the channels (`[1, B*C, H, W]`, channels-last memory, as
`keras_dynconv.ops.torch_conv` runs it), median ms of `--repeats` calls of: torch's
`convolution_backward` for both gradients, for the input gradient alone, for the weight
gradient alone, and the weight gradient as the correlation the library computes for
kernels larger than 3x3 (`torch_conv.correlation_weight_gradient`, checked equal here).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402
import torch.nn.functional as functional  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv.ops import torch_conv  # noqa: E402

# (height = width, channels, kernel size, stride)
SHAPES = [(7, 1152, 5, 1), (14, 672, 5, 1), (14, 672, 5, 2), (14, 480, 5, 1),
          (28, 240, 5, 1), (56, 144, 3, 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = ["torch, both", "torch, input only", "torch, weight only", "correlation weight"]
    print("| layer | " + " | ".join(f"{name} ms" for name in names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for size, channels, kernel, stride in SHAPES:
        groups, padding = args.batch * channels, kernel // 2
        inputs = torch.randn(1, size, size, groups).permute(0, 3, 1, 2)
        weight = torch.randn(groups, 1, kernel, kernel)
        output = functional.conv2d(inputs, weight, stride=stride, padding=padding, groups=groups)
        output_gradient = torch.randn_like(output)

        def native(mask):
            return lambda: torch.ops.aten.convolution_backward(
                output_gradient, inputs, weight, None, [stride] * 2, [padding] * 2, [1, 1],
                False, [0, 0], groups, mask)

        def correlation():
            return torch_conv.correlation_weight_gradient(
                inputs, output_gradient, (kernel, kernel), (stride, stride), (padding, padding))

        torch.testing.assert_close(
            correlation(), native([False, True, False])()[1], atol=1e-2, rtol=1e-3)
        functions = [native([True, True, False]), native([True, False, False]),
                     native([False, True, False]), correlation]
        times = [median_ms(function, args.repeats) for function in functions]
        print(f"| {size}x{size}x{channels}, {kernel}x{kernel}, stride {stride} | "
              + " | ".join(f"{value:.1f}" for value in times) + " |", flush=True)


if __name__ == "__main__":
    main()
