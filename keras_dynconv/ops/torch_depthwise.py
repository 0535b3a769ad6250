"""The per-example depthwise convolution on torch without Keras' layout copies.

`keras.ops.depthwise_conv` on torch copies its channels-last input to channels-first
and then to torch's channels-last memory format; with the batch folded into the
channels on top, the generic path makes five full copies of the activations around
one convolution. On this project's 2-core CPU that is 35 ms for a 5x5 layer of
CondConv-EfficientNet-B0 at batch 32 against 12 ms for the static layer. A permuted
view of a channels-last tensor already is torch's channels-last memory format, so
this path calls `torch.nn.functional.conv2d` on views and copies twice: to fold the
batch into the channels and back. Equal to the generic path (tests/test_ops.py).
"""

import keras


def available(inputs):
    """Whether `per_example_depthwise_conv` can take this path."""
    return keras.backend.backend() == "torch"


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _same_padding(size, kernel, stride, dilation):
    """TensorFlow's "same" padding, `(before, after)`: the extra pixel goes after."""
    extent = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate):
    import torch
    import torch.nn.functional as functional

    inputs, kernels = keras.ops.convert_to_tensor(inputs), keras.ops.convert_to_tensor(kernels)
    batch, height, width, channels = inputs.shape
    kernel_h, kernel_w, _, multiplier = kernels.shape[1:]
    strides, dilation_rate = _pair(strides), _pair(dilation_rate)
    # [1, B*C, H, W] as a view of channels-last memory, channel b*C + c.
    folded = inputs.permute(1, 2, 0, 3).reshape(1, height, width, batch * channels)
    folded = folded.permute(0, 3, 1, 2)
    # Group b*C + c writes outputs (b*C + c)*M + m with kernels[b, :, :, c, m].
    weight = kernels.permute(0, 3, 4, 1, 2).reshape(batch * channels * multiplier, 1, kernel_h, kernel_w)
    torch_padding = 0
    if padding.lower() == "same":
        pads = [
            _same_padding(size, kernel, stride, dilation)
            for size, kernel, stride, dilation in zip(
                (height, width), (kernel_h, kernel_w), strides, dilation_rate
            )
        ]
        if all(before == after for before, after in pads):
            torch_padding = [before for before, _ in pads]
        else:
            (top, bottom), (left, right) = pads
            folded = functional.pad(folded, (left, right, top, bottom))
            folded = folded.contiguous(memory_format=torch.channels_last)
    outputs = functional.conv2d(
        folded,
        weight.to(folded.dtype),
        stride=strides,
        padding=torch_padding,
        dilation=dilation_rate,
        groups=batch * channels,
    )
    out_h, out_w = outputs.shape[2], outputs.shape[3]
    outputs = outputs.permute(0, 2, 3, 1).reshape(out_h, out_w, batch, channels * multiplier)
    return outputs.permute(2, 0, 1, 3).contiguous()
