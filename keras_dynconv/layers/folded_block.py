"""A `keras.Sequential` of convolutions, batch normalisations and ReLUs as one torch
function for inference, each normalisation folded into the convolution before it.

A MoD block's inner bottleneck runs on k = C/64 channels: its three convolutions and
three normalisations are a few µs of arithmetic each and tens of µs of per-call work at
batch 1. With its moving statistics, a normalisation after a convolution is that
convolution with its kernel scaled per output channel and a bias:
`gamma * (conv(x, W) + b - mean) / sqrt(variance + eps) + beta` is `conv(x, W * g) +
(b - mean) * g + beta` with `g = gamma / sqrt(variance + eps)`. The folded kernels differ
from the unfolded path by float32 rounding only (tests/test_mod_block_prepared.py).
"""

import keras

from keras_dynconv.layers import conv2d
from keras_dynconv.layers import normalization
from keras_dynconv.ops import torch_conv
from keras_dynconv.ops import torch_folded
from keras_dynconv.ops.torch_prepared import prepared_conv

_CONV_CALLS = (conv2d.Conv2D.call, keras.layers.Conv2D.call)
_CONV_OPS = (conv2d.Conv2D.convolution_op, keras.layers.Conv2D.convolution_op)
_NORMALIZATION_CALLS = (normalization.BatchNormalization.call, keras.layers.BatchNormalization.call)


def prepared_sequential(block, inputs):
    """`block(x, training=False)` for float32 channels-last torch inputs like `inputs`,
    prepared once from the current weights; None where `block` is not a
    `keras.Sequential` of only Keras' (or this package's) `Conv2D` (channels last),
    `BatchNormalization` (last axis) and ReLU layers, or where it holds other dtypes."""
    import torch

    inputs = torch_conv.torch_tensor(inputs)
    if (
        type(block) is not keras.Sequential
        or inputs.dtype != torch.float32
        or any(layer.dtype_policy.name != "float32" for layer in block.layers)
    ):
        return None
    steps = _steps(block.layers)
    if steps is None:
        return None
    functions = []
    shape = tuple(inputs.shape)
    for conv, normalization_layer, relu in steps:
        kernel, bias = _folded(conv, normalization_layer)
        example = inputs.new_empty(shape)
        convolve = prepared_conv(
            example, kernel, conv.strides, conv.padding, conv.dilation_rate, bias=bias
        )
        functions.append((convolve, relu))
        shape = tuple(conv.compute_output_shape(shape))

    def run(x):
        for convolve, relu in functions:
            x = convolve(x)
            if relu:
                x = torch.relu_(x)
        return x

    return run


def _steps(layers):
    """`[(conv, batch normalization or None, relu)]` covering `layers` in order, or None."""
    steps = []
    for layer in layers:
        if _is_conv(layer):
            steps.append([layer, None, _is_relu(layer.activation)])
        elif _is_batch_norm(layer) and steps and steps[-1][1] is None and not steps[-1][2]:
            steps[-1][1] = layer
        elif _is_relu_layer(layer) and steps and not steps[-1][2]:
            steps[-1][2] = True
        else:
            return None
    return [tuple(step) for step in steps] or None


def _is_conv(layer):
    return (
        isinstance(layer, keras.layers.Conv2D)
        and type(layer).call in _CONV_CALLS
        and type(layer).convolution_op in _CONV_OPS
        and layer.data_format == "channels_last"
        and (_is_linear(layer.activation) or _is_relu(layer.activation))
    )


def _is_batch_norm(layer):
    return (
        isinstance(layer, keras.layers.BatchNormalization)
        and type(layer).call in _NORMALIZATION_CALLS
        and layer.axis in (-1, 3)
    )


def _is_relu_layer(layer):
    if isinstance(layer, keras.layers.ReLU):
        return (
            layer.max_value is None and not layer.negative_slope and not layer.threshold
            and type(layer).call is keras.layers.ReLU.call
        )
    return (
        isinstance(layer, keras.layers.Activation)
        and type(layer).call is keras.layers.Activation.call
        and _is_relu(layer.activation)
    )


def _is_linear(activation):
    return activation is None or activation is keras.activations.linear


def _is_relu(activation):
    return activation is keras.activations.relu


def _folded(conv, normalization_layer):
    """`(kernel, bias)` of `conv` with `normalization_layer` (or None) folded in,
    detached torch tensors (bias None where there is neither)."""
    kernel = torch_conv.torch_tensor(conv.kernel).detach()
    bias = torch_conv.torch_tensor(conv.bias).detach() if conv.use_bias else None
    if normalization_layer is None:
        return kernel, bias
    gain, shift = torch_folded.layer_gain_and_shift(normalization_layer)
    return torch_folded.folded_kernel_and_bias(kernel, bias, gain, shift)
