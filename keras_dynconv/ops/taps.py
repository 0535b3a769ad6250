"""Per-example convolutions as a sum over kernel taps, for XLA.

XLA (JAX, and TensorFlow under `jit_compile`) runs the grouped convolution of the
generic per-example path badly on CPUs: a 5x5 depthwise layer of CondConv-EfficientNet-B0
(batch 32, 7x7, 1152 channels) takes 357 ms forward against 9 ms here, and its
gradient asks for 250+ GB (`feature_group_count = batch * channels`). Written as
`sum over (i, j) of shifted input * kernel[:, i, j]`, the same convolution is
elementwise products and batched matmuls that XLA fuses, and its gradient is the same
kind of ops. Equal to the generic path (tests/test_ops.py); used only where
`use_taps` says so.
"""

import keras
from keras import ops

from keras_dynconv.ops import portability


def xla_context():
    """True under JAX, and inside a TensorFlow function compiled with XLA."""
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a TensorFlow without the private module
        return False
    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def use_taps(inputs):
    """Whether the per-example paths should use taps: static spatial sizes, and XLA
    or `keras_dynconv.ops.portable()` (exporting)."""
    static = inputs.shape[1] is not None and inputs.shape[2] is not None
    return static and (portability.active() or xla_context())


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def output_size_and_padding(size, kernel, stride, dilation, padding):
    """Output length and `(before, after)` padding, as TensorFlow's "same"/"valid"."""
    extent = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - extent) // stride + 1, (0, 0)
    output = -(-size // stride)
    total = max((output - 1) * stride + extent - size, 0)
    return output, (total // 2, total - total // 2)


def _windows(inputs, kernel_size, strides, padding, dilation_rate):
    """Yields `((i, j), window)`: the input each kernel tap multiplies, output-sized."""
    padding = padding.lower()
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid'. Received padding={padding!r}")
    (kernel_h, kernel_w), (stride_h, stride_w) = kernel_size, pair(strides)
    dilation_h, dilation_w = pair(dilation_rate)
    out_h, pad_h = output_size_and_padding(inputs.shape[1], kernel_h, stride_h, dilation_h, padding)
    out_w, pad_w = output_size_and_padding(inputs.shape[2], kernel_w, stride_w, dilation_w, padding)
    if pad_h != (0, 0) or pad_w != (0, 0):
        inputs = ops.pad(inputs, ((0, 0), pad_h, pad_w, (0, 0)))
    for i in range(kernel_h):
        for j in range(kernel_w):
            top, left = i * dilation_h, j * dilation_w
            window = inputs[
                :,
                top : top + (out_h - 1) * stride_h + 1 : stride_h,
                left : left + (out_w - 1) * stride_w + 1 : stride_w,
                :,
            ]
            yield (i, j), window


def per_example_conv_taps(inputs, kernels, strides, padding, dilation_rate):
    """`per_example_conv` as one batched matmul per kernel tap, summed."""
    inputs, kernels = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernels)
    outputs = None
    for (i, j), window in _windows(inputs, kernels.shape[1:3], strides, padding, dilation_rate):
        term = ops.einsum("bhwi,bio->bhwo", window, kernels[:, i, j])
        outputs = term if outputs is None else outputs + term
    return outputs


def per_example_depthwise_conv_taps(inputs, kernels, strides, padding, dilation_rate):
    """`per_example_depthwise_conv` as one broadcast product per kernel tap, summed."""
    # Tensors before the products: a NumPy operand would pull a GPU tensor to NumPy.
    inputs, kernels = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernels)
    channels, multiplier = kernels.shape[3], kernels.shape[4]
    outputs = None
    for (i, j), window in _windows(inputs, kernels.shape[1:3], strides, padding, dilation_rate):
        if multiplier == 1:
            term = window * kernels[:, i : i + 1, j : j + 1, :, 0]
        else:
            # Output channel c * M + m reads input channel c, as in a depthwise conv.
            term = window[..., None] * kernels[:, i : i + 1, j : j + 1]
        outputs = term if outputs is None else outputs + term
    if multiplier == 1:
        return outputs
    out_h, out_w = outputs.shape[1], outputs.shape[2]
    return ops.reshape(outputs, (-1, out_h, out_w, channels * multiplier))
