"""Expert aggregation in `keras.ops`: the one numerical core of every dynamic layer.

Two mathematically equivalent formulations (CondConv paper, Sec. 3 and Fig. 1):

* per-example: combine the expert kernels into one kernel per example, then run one
  convolution. Cheap in multiply-adds; the batch is folded into the channel axis so the
  whole batch is still ONE (grouped or depthwise) convolution, or an einsum for 1x1
  kernels and dense layers.
* mixture: run the experts as one convolution whose output channels are the experts
  side by side, then weight the E outputs by the routing weights. E times the
  multiply-adds, but large-batch convolutions, which accelerators like for small E.

All functions take channels_last tensors and accept a batch size unknown at trace time.
"""

import keras
from keras import ops

from keras_dynconv.ops import native_tensorflow
from keras_dynconv.ops import taps
from keras_dynconv.ops.convolution import conv
from keras_dynconv.ops import tf_depthwise
from keras_dynconv.ops import torch_conv


def combine_experts(routing_weights, experts):
    """Mixes expert tensors with per-example routing weights.

    Args:
        routing_weights: `[B, E]` tensor.
        experts: `[E, ...]` tensor (expert kernels or biases).

    Returns:
        `[B, ...]` tensor: `sum_e routing_weights[b, e] * experts[e]`.

    Example:
    >>> r = keras.ops.ones((2, 3))
    >>> w = keras.ops.ones((3, 5, 4))
    >>> tuple(combine_experts(r, w).shape)
    (2, 5, 4)
    """
    expert_shape = tuple(experts.shape[1:])
    flat_experts = ops.reshape(experts, (experts.shape[0], -1))
    combined = ops.matmul(routing_weights, flat_experts)
    return ops.reshape(combined, (-1,) + expert_shape)


def _check_channels_last(data_format):
    data_format = data_format or keras.config.image_data_format()
    if data_format != "channels_last":
        raise NotImplementedError(
            "keras_dynconv's per-example and mixture convolutions support only "
            f"data_format='channels_last'. Received data_format={data_format!r}."
        )


def _dim(tensor, axis):
    """Static size of `axis` when known, else its dynamic size (TF graphs)."""
    size = tensor.shape[axis]
    return ops.shape(tensor)[axis] if size is None else size


def _fold_batch_into_channels(inputs):
    """`[B, H, W, C]` -> `[1, H, W, B*C]`, batch-major channel groups."""
    height, width, channels = _dim(inputs, 1), _dim(inputs, 2), inputs.shape[3]
    folded = ops.transpose(inputs, (1, 2, 0, 3))
    return ops.reshape(folded, (1, height, width, -1)), channels


def _unfold_batch_from_channels(outputs, channels_per_example):
    """`[1, H, W, B*C]` -> `[B, H, W, C]` (inverse of the fold)."""
    height, width = _dim(outputs, 1), _dim(outputs, 2)
    unfolded = ops.reshape(outputs, (height, width, -1, channels_per_example))
    return ops.transpose(unfolded, (2, 0, 1, 3))


def _strided_pointwise_input(inputs, strides):
    stride_h, stride_w = taps.pair(strides)
    if stride_h == 1 and stride_w == 1:
        return inputs
    return inputs[:, ::stride_h, ::stride_w, :]


def _side_by_side(kernels):
    """`[N, kh, kw, I, O]` -> `[kh, kw, I, N*O]`: N kernels along the output axis, N-major."""
    _, kernel_h, kernel_w, in_channels, _ = kernels.shape
    return ops.reshape(
        ops.transpose(kernels, (1, 2, 3, 0, 4)), (kernel_h, kernel_w, in_channels, -1)
    )


def _convolve(conv_op, inputs, kernel, strides, padding, dilation_rate):
    return conv_op(
        inputs,
        kernel,
        strides=strides,
        padding=padding,
        data_format="channels_last",
        dilation_rate=dilation_rate,
    )


def per_example_conv(
    inputs,
    kernels,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format=None,
):
    """2D convolution with a different kernel for every example, as one convolution.

    Args:
        inputs: `[B, H, W, Cin]`.
        kernels: `[B, kh, kw, Cin, Cout]`, one kernel per example.
        strides, padding, dilation_rate: as in `keras.ops.conv`.
        data_format: only `"channels_last"` (or `None` with that global setting).

    Returns:
        `[B, H', W', Cout]`, equal to convolving each example with its own kernel.

    A 1x1 kernel is an einsum over channels. Larger kernels fold the batch into the
    channel axis and run one grouped convolution with `groups = B`; under XLA (JAX,
    TensorFlow with `jit_compile`) they are one einsum per kernel tap instead
    (`keras_dynconv.ops.taps`: XLA's grouped convolutions are slow on CPUs and their
    gradient does not fit in memory).

    Example:
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> kernels = keras.ops.ones((2, 3, 3, 3, 5))  # one [3, 3, 3, 5] kernel per example
    >>> tuple(per_example_conv(x, kernels, padding="same").shape)
    (2, 8, 8, 5)
    """
    _check_channels_last(data_format)
    kernel_h, kernel_w, _, out_channels = kernels.shape[1:]
    if kernel_h == 1 and kernel_w == 1:
        strided = _strided_pointwise_input(inputs, strides)
        return ops.einsum("bhwi,bio->bhwo", strided, kernels[:, 0, 0])
    if taps.use_taps(inputs):
        return taps.per_example_conv_taps(inputs, kernels, strides, padding, dilation_rate)
    folded_inputs, _ = _fold_batch_into_channels(inputs)
    # Kernels side by side, [kh, kw, Cin, B*Cout]: as a grouped conv (groups = B),
    # group b reads input channels b*Cin:(b+1)*Cin and writes b*Cout:(b+1)*Cout.
    outputs = _convolve(
        conv, folded_inputs, _side_by_side(kernels), strides, padding, dilation_rate
    )
    return _unfold_batch_from_channels(outputs, out_channels)


def per_example_conv_of_experts(
    inputs,
    experts,
    routing_weights,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format=None,
):
    """`per_example_conv` with the kernels `combine_experts(routing_weights, experts)`.

    Args:
        inputs: `[B, H, W, Cin]`.
        experts: `[E, kh, kw, Cin, Cout]`.
        routing_weights: `[B, E]`.
        strides, padding, dilation_rate, data_format: as in `per_example_conv`.

    Returns:
        `[B, H', W', Cout]`.

    For inference on torch (CPU), 1x1 kernels are combined and applied a chunk of
    examples at a time, in a buffer that stays in the cache
    (`keras_dynconv.ops.torch_conv.pointwise_conv_of_experts`), and on TensorFlow
    without XLA on CPUs by a compiled op that never writes them
    (`keras_dynconv.ops.native_tensorflow`); everywhere else the kernels are combined
    for the whole batch, then `per_example_conv`.

    Example:
    >>> experts, routing = keras.ops.ones((4, 1, 1, 3, 5)), keras.ops.ones((2, 4))
    >>> tuple(per_example_conv_of_experts(keras.ops.ones((2, 8, 8, 3)), experts, routing).shape)
    (2, 8, 8, 5)
    """
    _check_channels_last(data_format)
    if tuple(experts.shape[1:3]) == (1, 1) and torch_conv.inference_available(
        inputs, experts, routing_weights
    ):
        return torch_conv.pointwise_conv_of_experts(
            _strided_pointwise_input(inputs, strides), experts, routing_weights
        )
    if tuple(experts.shape[1:3]) == (1, 1) and native_tensorflow.available(inputs):
        strided = _strided_pointwise_input(inputs, strides)
        if native_tensorflow.pointwise_applies(strided, experts, routing_weights):
            return native_tensorflow.pointwise_conv_of_experts(strided, experts, routing_weights)
    return per_example_conv(
        inputs,
        combine_experts(routing_weights, experts),
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        data_format=data_format,
    )


def per_example_depthwise_conv(
    inputs,
    kernels,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format=None,
):
    """Depthwise convolution with a different kernel for every example.

    Args:
        inputs: `[B, H, W, C]`.
        kernels: `[B, kh, kw, C, depth_multiplier]`.

    Returns:
        `[B, H', W', C * depth_multiplier]`, one depthwise convolution over the
        batch folded into channels; under XLA a sum over kernel taps (see
        `per_example_conv`), on torch the same convolution on views of the input
        (`keras_dynconv.ops.torch_conv`: two copies instead of five), on TensorFlow
        without XLA on CPUs a compiled op (`keras_dynconv.ops.native_tensorflow`),
        else one convolution per example when the batch size is known
        (`keras_dynconv.ops.tf_depthwise`).

    Example:
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> tuple(per_example_depthwise_conv(x, keras.ops.ones((2, 5, 5, 3, 1)), strides=2,
    ...                                  padding="same").shape)
    (2, 4, 4, 3)
    """
    _check_channels_last(data_format)
    if taps.use_taps(inputs):
        return taps.per_example_depthwise_conv_taps(
            inputs, kernels, strides, padding, dilation_rate
        )
    if torch_conv.available(inputs):
        return torch_conv.per_example_depthwise_conv(
            inputs, kernels, strides, padding, dilation_rate
        )
    if native_tensorflow.depthwise_applies(inputs, kernels, dilation_rate):
        return native_tensorflow.per_example_depthwise_conv(
            inputs, kernels, strides, padding, dilation_rate
        )
    if tf_depthwise.available(inputs):
        return tf_depthwise.per_example_depthwise_conv(
            inputs, kernels, strides, padding, dilation_rate
        )
    kernel_h, kernel_w, channels, multiplier = kernels.shape[1:]
    folded_inputs, _ = _fold_batch_into_channels(inputs)
    folded_kernel = ops.reshape(
        ops.transpose(kernels, (1, 2, 0, 3, 4)),
        (kernel_h, kernel_w, -1, multiplier),
    )
    outputs = _convolve(
        ops.depthwise_conv, folded_inputs, folded_kernel, strides, padding, dilation_rate
    )
    return _unfold_batch_from_channels(outputs, channels * multiplier)


def per_example_depthwise_conv_of_experts(
    inputs,
    experts,
    routing_weights,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format=None,
):
    """`per_example_depthwise_conv` with the kernels `combine_experts(routing_weights,
    experts)`.

    Args:
        inputs: `[B, H, W, C]`.
        experts: `[E, kh, kw, C, depth_multiplier]`.
        routing_weights: `[B, E]`.
        strides, padding, dilation_rate, data_format: as in `per_example_depthwise_conv`.

    Returns:
        `[B, H', W', C * depth_multiplier]`.

    On TensorFlow without XLA on CPUs a compiled op combines and convolves
    (`keras_dynconv.ops.native_tensorflow`: TensorFlow's matrix product with E rows
    took longer than the convolution); everywhere else the kernels are combined, then
    `per_example_depthwise_conv`.

    Example:
    >>> experts, routing = keras.ops.ones((4, 3, 3, 3, 1)), keras.ops.ones((2, 4))
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> tuple(per_example_depthwise_conv_of_experts(x, experts, routing, padding="same").shape)
    (2, 8, 8, 3)
    """
    _check_channels_last(data_format)
    if native_tensorflow.depthwise_of_experts_applies(
        inputs, experts, routing_weights, dilation_rate
    ):
        return native_tensorflow.depthwise_conv_of_experts(
            inputs, experts, routing_weights, strides, padding, dilation_rate
        )
    return per_example_depthwise_conv(
        inputs,
        combine_experts(routing_weights, experts),
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        data_format=data_format,
    )


def _flatten_inner_axes(inputs):
    """`[B, ..., I]` -> `[B, N, I]` so dense einsums need one fixed rank."""
    return ops.reshape(inputs, (ops.shape(inputs)[0], -1, inputs.shape[-1]))


def _restore_inner_axes(outputs, inputs):
    if len(inputs.shape) == 2:
        return outputs[:, 0, :]
    target = tuple(ops.shape(inputs)[:-1]) + (outputs.shape[-1],)
    return ops.reshape(outputs, target)


def per_example_dense(inputs, kernels):
    """Dense layer with a different `[I, O]` kernel per example.

    Args:
        inputs: `[B, ..., I]`.
        kernels: `[B, I, O]`.

    Returns:
        `[B, ..., O]`.

    Example:
    >>> tuple(per_example_dense(keras.ops.ones((2, 7, 4)), keras.ops.ones((2, 4, 6))).shape)
    (2, 7, 6)
    """
    outputs = ops.einsum("bni,bio->bno", _flatten_inner_axes(inputs), kernels)
    return _restore_inner_axes(outputs, inputs)


def mixture_conv(
    inputs,
    experts,
    routing_weights,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format=None,
):
    """Linear mixture of E expert convolutions, computed as one convolution.

    Args:
        inputs: `[B, H, W, Cin]`.
        experts: `[E, kh, kw, Cin, Cout]`.
        routing_weights: `[B, E]`.

    Returns:
        `[B, H', W', Cout]`: `sum_e routing_weights[:, e] * conv(inputs, experts[e])`.

    Example:
    >>> experts, routing = keras.ops.ones((4, 3, 3, 3, 5)), keras.ops.ones((2, 4))
    >>> tuple(mixture_conv(keras.ops.ones((2, 8, 8, 3)), experts, routing).shape)
    (2, 6, 6, 5)
    """
    _check_channels_last(data_format)
    num_experts, out_channels = experts.shape[0], experts.shape[-1]
    outputs = _convolve(
        conv, inputs, _side_by_side(experts), strides, padding, dilation_rate
    )
    out_h, out_w = _dim(outputs, 1), _dim(outputs, 2)
    outputs = ops.reshape(outputs, (-1, out_h, out_w, num_experts, out_channels))
    return ops.einsum("bhweo,be->bhwo", outputs, routing_weights)


def mixture_depthwise_conv(
    inputs,
    experts,
    routing_weights,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format=None,
):
    """Linear mixture of E expert depthwise convolutions, as one depthwise conv.

    Args:
        inputs: `[B, H, W, C]`.
        experts: `[E, kh, kw, C, depth_multiplier]`.
        routing_weights: `[B, E]`.

    Returns:
        `[B, H', W', C * depth_multiplier]`.

    Under XLA the sum is taken over kernel taps with the combined kernels
    (`keras_dynconv.ops.taps`): the same linear map without forming E outputs, since
    XLA's depthwise convolution with `E * depth_multiplier` outputs per channel is
    slow on CPUs (a CondConv-EfficientNet-B0 training step took 70x longer).

    Example:
    >>> experts, routing = keras.ops.ones((4, 3, 3, 3, 2)), keras.ops.ones((2, 4))
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> tuple(mixture_depthwise_conv(x, experts, routing, padding="same").shape)
    (2, 8, 8, 6)
    """
    _check_channels_last(data_format)
    if taps.use_taps(inputs):
        return taps.per_example_depthwise_conv_taps(
            inputs, combine_experts(routing_weights, experts), strides, padding, dilation_rate
        )
    num_experts, channels, multiplier = experts.shape[0], experts.shape[3], experts.shape[4]
    # Depthwise output channel c*M' + m reads input channel c; with M' = E*M and the
    # expert index major inside each channel, the output splits as [C, E, M].
    outputs = _convolve(
        ops.depthwise_conv, inputs, _side_by_side(experts), strides, padding, dilation_rate
    )
    out_h, out_w = _dim(outputs, 1), _dim(outputs, 2)
    outputs = ops.reshape(
        outputs, (-1, out_h, out_w, channels, num_experts, multiplier)
    )
    outputs = ops.einsum("bhwcem,be->bhwcm", outputs, routing_weights)
    return ops.reshape(outputs, (-1, out_h, out_w, channels * multiplier))


def mixture_dense(inputs, experts, routing_weights):
    """Linear mixture of E expert dense layers.

    Args:
        inputs: `[B, ..., I]`.
        experts: `[E, I, O]`.
        routing_weights: `[B, E]`.

    Returns:
        `[B, ..., O]`.

    Example:
    >>> experts, routing = keras.ops.ones((4, 5, 6)), keras.ops.ones((2, 4))
    >>> tuple(mixture_dense(keras.ops.ones((2, 5)), experts, routing).shape)
    (2, 6)
    """
    outputs = ops.einsum(
        "bni,eio,be->bno", _flatten_inner_axes(inputs), experts, routing_weights
    )
    return _restore_inner_axes(outputs, inputs)
