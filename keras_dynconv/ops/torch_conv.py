"""Convolutions on torch without Keras' layout copies.

`keras.ops.depthwise_conv` on torch copies its channels-last input to channels-first
and then to torch's channels-last memory format; with the batch folded into the
channels on top, the generic path makes five full copies of the activations around
one convolution. On this project's 2-core CPU that is 35 ms for a 5x5 layer of
CondConv-EfficientNet-B0 at batch 32 against 12 ms for the static layer. A permuted
view of a channels-last tensor already is torch's channels-last memory format, so
this path calls `torch.nn.functional.conv2d` on views and copies twice: to fold the
batch into the channels and back. The shared-kernel convolutions of the zoo's static
layers (`conv`, `depthwise_conv`) copy nothing, where `keras.ops.conv` copies the
activations three times per layer. Equal to the generic paths (tests/test_ops.py).
"""

import keras

from keras_dynconv.ops import portability
from keras_dynconv.ops.taps import output_size_and_padding
from keras_dynconv.ops.taps import pair


def available(inputs):
    """Whether the convolutions can take this path (torch, not exporting)."""
    return keras.backend.backend() == "torch" and not portability.active()


def _conv2d_on_views(nchw, weight, groups, strides, padding, dilation_rate):
    """`conv2d` of an NCHW view of channels-last memory; returns NCHW, channels-last memory."""
    import torch
    import torch.nn.functional as functional

    strides, dilation_rate = pair(strides), pair(dilation_rate)
    torch_padding = 0
    if padding.lower() == "same":
        pads = [
            output_size_and_padding(size, kernel, stride, dilation, "same")[1]
            for size, kernel, stride, dilation in zip(
                nchw.shape[2:], weight.shape[2:], strides, dilation_rate
            )
        ]
        if all(before == after for before, after in pads):
            torch_padding = [before for before, _ in pads]
        else:
            (top, bottom), (left, right) = pads
            nchw = functional.pad(nchw, (left, right, top, bottom))
            nchw = nchw.contiguous(memory_format=torch.channels_last)
    return functional.conv2d(
        nchw,
        weight.to(nchw.dtype),
        stride=strides,
        padding=torch_padding,
        dilation=dilation_rate,
        groups=groups,
    )


def conv(inputs, kernel, strides, padding, dilation_rate):
    """`keras.ops.conv` (2D, channels_last, kernel `[kh, kw, I, O]`) with no copy of
    the activations."""
    inputs, kernel = keras.ops.convert_to_tensor(inputs), keras.ops.convert_to_tensor(kernel)
    groups = inputs.shape[-1] // kernel.shape[2]
    if tuple(kernel.shape[:2]) == (1, 1) and pair(strides) != (1, 1):
        # A 1x1 kernel reads every stride-th pixel and pads nothing ("same" included).
        # Subsampled first, because torch 2.13's CPU weight gradient of a strided 1x1
        # convolution of channels-last memory is wrong for some shapes (tests/test_ops.py;
        # keras.ops.conv has the same error).
        stride_h, stride_w = pair(strides)
        inputs, strides = inputs[:, ::stride_h, ::stride_w, :], 1
    outputs = _conv2d_on_views(
        inputs.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1), groups, strides, padding,
        dilation_rate,
    )
    return outputs.permute(0, 2, 3, 1)


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate):
    """`keras.ops.depthwise_conv` (channels_last) with no copy of the activations."""
    inputs, kernel = keras.ops.convert_to_tensor(inputs), keras.ops.convert_to_tensor(kernel)
    kernel_h, kernel_w, channels, multiplier = kernel.shape
    weight = kernel.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kernel_h, kernel_w)
    outputs = _conv2d_on_views(
        inputs.permute(0, 3, 1, 2), weight, channels, strides, padding, dilation_rate
    )
    return outputs.permute(0, 2, 3, 1)


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate):
    inputs, kernels = keras.ops.convert_to_tensor(inputs), keras.ops.convert_to_tensor(kernels)
    batch, height, width, channels = inputs.shape
    kernel_h, kernel_w, _, multiplier = kernels.shape[1:]
    # [1, B*C, H, W] as a view of channels-last memory, channel b*C + c.
    folded = inputs.permute(1, 2, 0, 3).reshape(1, height, width, batch * channels)
    # Group b*C + c writes outputs (b*C + c)*M + m with kernels[b, :, :, c, m].
    weight = kernels.permute(0, 3, 4, 1, 2).reshape(
        batch * channels * multiplier, 1, kernel_h, kernel_w
    )
    outputs = _conv2d_on_views(
        folded.permute(0, 3, 1, 2), weight, batch * channels, strides, padding, dilation_rate
    )
    out_h, out_w = outputs.shape[2], outputs.shape[3]
    outputs = outputs.permute(0, 2, 3, 1).reshape(out_h, out_w, batch, channels * multiplier)
    return outputs.permute(2, 0, 1, 3).contiguous()
