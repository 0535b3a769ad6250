"""The native kernels as TensorFlow ops, for TensorFlow without XLA on CPUs.

Without XLA (what Keras' `predict` and `fit` run on a CPU unless the model is compiled
with `jit_compile=True`), CondConv-EfficientNet-B0 took 1.18x EfficientNet-B0's time at
batch 32, against the 1.10 the paper's multiply-adds promise. Inside the traced model
(`scripts/profile_tf_graph_ops.py`) the excess was the per-example depthwise
convolutions (one TensorFlow convolution per example, their kernels combined by a
matrix product with E rows that took longer than the convolution) and the 1x1
convolutions of combined experts (the combined kernels written and read back). The
torch backend's compiled kernels (`native_depthwise`, `native_pointwise`) do both
without that cost, so `native/tensorflow_ops.c` registers them as three TensorFlow CPU
ops (a depthwise convolution of given kernels, one of experts and a 1x1 convolution of
experts) through TensorFlow's C API for kernels (no C++ build against TensorFlow's
headers). At batch 32 the ratio is now 1.10 (zoo/benchmarks/README.md).

Built on first use like the torch kernels (`native_depthwise.built_library`: the same
compiler rule, cache and `KERAS_DYNCONV_NATIVE` switch), with TensorFlow's headers and
`libtensorflow_framework`, and loaded with `tf.load_op_library`. The ops run on
TensorFlow's CPU device with OpenMP threads of their own, as many as TensorFlow's
intra-op threads. TensorFlow computes with no OpenMP runtime, so unlike on torch no
other OpenMP pool competes with them (one may be loaded and idle: Keras imports
scikit-learn where it is installed, which maps its own).

Used (`available`) on TensorFlow for float32 on a machine without GPUs, when the batch
size and the spatial size are known as the graph is traced, outside XLA
(`jit_compile=True` compiles the taps path), `keras_dynconv.ops.portable()` and
`tf.saved_model.save` (which `model.export` runs too): exported graphs hold none of the
ops, which other programs (TensorFlow Serving, converters) could not run. The 1x1 op
from `POINTWISE_MIN_BATCH` examples, the depthwise ops without dilation. Gradients are
registered for the three ops as TensorFlow's own operations, the same ones the other
paths' gradients run, so training and `tf.GradientTape` work through them. Equal to the
other paths (tests/test_native_tensorflow.py).
"""

import functools
import os
import subprocess
import warnings

import keras

from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import native_pointwise
from keras_dynconv.ops import portability
from keras_dynconv.ops import taps
from keras_dynconv.ops import tf_depthwise
from keras_dynconv.ops.taps import pair

SOURCE = native_depthwise.SOURCES[0].with_name("tensorflow_ops.c")
# TensorFlow's combination and product of small batches beat the 1x1 op, which reads
# the experts in place: CondConv-B0 / B0 at batch 1 took 1.32 with the op against 1.19
# without it, at batch 32 1.12 against 1.16 (depthwise ops on in both; batch 8 was
# within the noise; `scripts/bench_native_tensorflow_ab.py`).
POINTWISE_MIN_BATCH = 16
DEPTHWISE_OP = "KerasDynconvPerExampleDepthwise"
DEPTHWISE_OF_EXPERTS_OP = "KerasDynconvDepthwiseOfExperts"
POINTWISE_OP = "KerasDynconvPointwiseOfExperts"


def available(inputs):
    """Whether the ops may run for these inputs here: TensorFlow without GPUs, float32,
    the batch and spatial sizes known, not under XLA, `portable()` or a SavedModel
    save, and the library built and loaded."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return (
        inputs.dtype == tf.float32
        and len(inputs.shape) == 4
        and None not in tuple(inputs.shape)
        and not portability.active()
        and not taps.xla_context()
        and not _saving()
        and not _gpus_visible()
        and native_depthwise.enabled()
        and library() is not None
    )


def depthwise_applies(inputs, kernels, dilation_rate=1):
    """Whether `per_example_depthwise_conv` takes these tensors: `available`, float32
    kernels of a known size, a depth multiplier of 1 and no dilation (TensorFlow's
    depthwise input gradient takes no dilation: the ops' gradient could not be
    TensorFlow's own)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return (
        kernels.dtype == tf.float32
        and None not in tuple(kernels.shape[1:])
        and kernels.shape[-1] == 1
        and pair(dilation_rate) == (1, 1)
        and available(inputs)
    )


def pointwise_applies(inputs, experts, routing_weights):
    """Whether `pointwise_conv_of_experts` takes these tensors: `available`, float32
    experts and routing, at least `POINTWISE_MIN_BATCH` examples, and the shapes the
    kernel is used for (`native_pointwise.shape_applies`)."""
    return (
        available(inputs)
        and inputs.shape[0] >= POINTWISE_MIN_BATCH
        and experts.dtype == inputs.dtype
        and routing_weights.dtype == inputs.dtype
        and None not in tuple(experts.shape)
        and tuple(experts.shape[1:3]) == (1, 1)
        and native_pointwise.shape_applies(tuple(inputs.shape), experts.shape[-1])
    )


def depthwise_of_experts_applies(inputs, experts, routing_weights, dilation_rate=1):
    """Whether `depthwise_conv_of_experts` takes these tensors: as
    `depthwise_applies`, with float32 routing."""
    return (
        depthwise_applies(inputs, experts, dilation_rate)
        and routing_weights.dtype == experts.dtype
    )


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate):
    """`[B, H', W', C]`: example b of `inputs` `[B, H, W, C]` convolved with `kernels[b]`
    (`[B, kh, kw, C, 1]`), as `aggregation.per_example_depthwise_conv`."""
    output_size, attributes = _depthwise_arguments(inputs, kernels, strides, padding, dilation_rate)
    return library().keras_dynconv_per_example_depthwise(
        inputs, kernels, output_size, **attributes
    )


def depthwise_conv_of_experts(inputs, experts, routing_weights, strides, padding, dilation_rate):
    """`[B, H', W', C]`: example b of `inputs` `[B, H, W, C]` convolved with
    `sum_e routing_weights[b, e] * experts[e]` (`experts` `[E, kh, kw, C, 1]`), as
    `aggregation.per_example_depthwise_conv_of_experts`."""
    output_size, attributes = _depthwise_arguments(inputs, experts, strides, padding, dilation_rate)
    return library().keras_dynconv_depthwise_of_experts(
        inputs, experts, routing_weights, output_size, **attributes
    )


def _depthwise_arguments(inputs, kernels, strides, padding, dilation_rate):
    """The depthwise ops' `output_size` input and attributes."""
    import tensorflow as tf

    attributes = native_depthwise.geometry(
        tuple(inputs.shape[1:3]), tuple(kernels.shape[1:3]), strides, padding, dilation_rate
    )
    # Empty: its shape gives the op's shape function the output's size.
    output_size = tf.zeros((0, attributes.pop("out_h"), attributes.pop("out_w")))
    attributes.update(threads=threads(), padding=padding.upper())
    return output_size, attributes


def pointwise_conv_of_experts(inputs, experts, routing_weights):
    """`[B, H, W, O]`: each example of `inputs` `[B, H, W, I]` times its kernel
    `sum_e routing_weights[b, e] * experts[e]` (`experts` `[E, 1, 1, I, O]`), as
    `aggregation.per_example_conv_of_experts` for a 1x1 kernel and stride 1."""
    return library().keras_dynconv_pointwise_of_experts(
        inputs, experts, routing_weights, threads=threads()
    )


def threads():
    """OpenMP threads per op call: TensorFlow's intra-op threads, by default the CPUs
    this process may run on."""
    import tensorflow as tf

    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return configured or len(os.sched_getaffinity(0))


@functools.cache
def library():
    """The loaded op library (a module of op wrappers), or None where it cannot be
    built or must not run."""
    compiler = native_depthwise.compiler_path()
    if not compiler:
        return None
    import tensorflow as tf

    include = tf.sysconfig.get_include()
    if not os.path.exists(os.path.join(include, "tensorflow", "c", "kernels.h")):
        return None
    try:
        path = native_depthwise.built_library(
            compiler,
            "tensorflow_kernels",
            native_depthwise.SOURCES + (SOURCE,),
            native_depthwise.FLAGS + (f"-I{include}",),
            link_flags=tuple(tf.sysconfig.get_link_flags()),
            key_parts=(tf.__version__, include),
        )
        loaded = tf.load_op_library(str(path))
    except (OSError, subprocess.SubprocessError, tf.errors.OpError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        warnings.warn(
            f"keras_dynconv: the native TensorFlow ops (per-example depthwise and 1x1 "
            f"convolutions) could not be built or loaded with {compiler} "
            f"({detail.strip()[-500:]}); dynamic layers take TensorFlow's slower paths. "
            "Set KERAS_DYNCONV_NATIVE=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    _register_gradients()
    return loaded


def _register_gradients():
    import tensorflow as tf

    tf.RegisterGradient(DEPTHWISE_OP)(_depthwise_gradient)
    tf.RegisterGradient(DEPTHWISE_OF_EXPERTS_OP)(_depthwise_of_experts_gradient)
    tf.RegisterGradient(POINTWISE_OP)(_pointwise_gradient)


def _depthwise_gradient(op, output_gradient):
    """The gradients of `KerasDynconvPerExampleDepthwise` (`_depthwise_gradients`)."""
    inputs, kernels, _ = op.inputs
    return (*_depthwise_gradients(op, inputs, kernels, output_gradient), None)


def _depthwise_of_experts_gradient(op, output_gradient):
    """The gradients of `KerasDynconvDepthwiseOfExperts`: those of the combined
    kernels (`_depthwise_gradients`), then through the combination."""
    import tensorflow as tf

    inputs, experts, routing_weights, _ = op.inputs
    kernels = tf.einsum("be,ehwcm->bhwcm", routing_weights, experts)
    input_gradient, kernel_gradient = _depthwise_gradients(op, inputs, kernels, output_gradient)
    expert_gradient = tf.einsum("be,bhwcm->ehwcm", routing_weights, kernel_gradient)
    routing_gradient = tf.einsum("bhwcm,ehwcm->be", kernel_gradient, experts)
    return input_gradient, expert_gradient, routing_gradient, None


def _depthwise_gradients(op, inputs, kernels, output_gradient):
    """The gradients of an undilated per-example depthwise convolution with respect to
    its inputs and its kernels `[B, kh, kw, C, 1]` (`depthwise_applies`): per example,
    TensorFlow's input gradient, and its kernel gradient or the correlation where that
    is faster (`tf_depthwise`), as the path without the ops computes them."""
    import tensorflow as tf

    strides = (op.get_attr("stride_h"), op.get_attr("stride_w"))
    padding = op.get_attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    batch = inputs.shape[0]
    tf_strides = [1, *strides, 1]
    example_shape = [1, *inputs.shape[1:]]
    input_gradient = tf.concat(
        [
            tf.nn.depthwise_conv2d_backprop_input(
                example_shape, kernel, gradient, tf_strides, padding
            )
            for kernel, gradient in zip(
                tf.unstack(kernels, batch), tf.split(output_gradient, batch)
            )
        ],
        axis=0,
    )
    if tf_depthwise.correlation_gradient_pays(kernels.shape[1:3], 1):
        kernel_gradient = tf_depthwise.correlation_kernel_gradient(
            inputs, output_gradient, kernels.shape[1:3], strides, padding
        )
    else:
        kernel_gradient = tf.stack(
            [
                tf.nn.depthwise_conv2d_backprop_filter(
                    example, kernels.shape[1:], gradient, tf_strides, padding
                )
                for example, gradient in zip(
                    tf.split(inputs, batch), tf.split(output_gradient, batch)
                )
            ]
        )
    return input_gradient, kernel_gradient


def _pointwise_gradient(op, output_gradient):
    """The gradients of `KerasDynconvPointwiseOfExperts`, from the combined kernels
    and every example's outer product of inputs and output gradients."""
    import tensorflow as tf

    inputs, experts, routing_weights = op.inputs
    expert_matrices = experts[:, 0, 0]
    kernels = tf.einsum("be,eio->bio", routing_weights, expert_matrices)
    input_gradient = tf.einsum("bhwo,bio->bhwi", output_gradient, kernels)
    per_example = tf.einsum("bhwi,bhwo->bio", inputs, output_gradient)
    expert_gradient = tf.einsum("be,bio->eio", routing_weights, per_example)[:, None, None]
    routing_gradient = tf.einsum("bio,eio->be", per_example, expert_matrices)
    return input_gradient, expert_gradient, routing_gradient


def _saving():
    """True while `tf.saved_model.save` traces functions."""
    try:
        from tensorflow.python.saved_model import save_context
    except ImportError:  # pragma: no cover - a TensorFlow without the private module
        return False
    return save_context.in_save_context()


@functools.cache
def _gpus_visible():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
