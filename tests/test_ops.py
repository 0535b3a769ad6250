"""The aggregation core against per-example NumPy loops (tolerance: conftest.ATOL)."""

import keras
import numpy as np
import pytest

import reference
from conftest import ATOL, BACKEND, RTOL, gradients, jit, to_numpy, torch_device_type
from keras_dynconv import layers
from keras_dynconv import ops as dc
from keras_dynconv.ops import taps
from keras_dynconv.ops import tf_depthwise
from keras_dynconv.ops import torch_conv

CONV_CASES = [
    # (batch, H, W, Cin, Cout, kernel, strides, padding, dilation)
    (1, 7, 7, 3, 4, (3, 3), 1, "same", 1),
    (3, 9, 8, 4, 5, (3, 3), 2, "same", 1),
    (2, 9, 9, 2, 3, (3, 2), 1, "valid", 2),
    (4, 8, 8, 5, 6, (1, 1), 2, "same", 1),
    (2, 6, 6, 4, 2, (1, 1), 1, "valid", 1),
]
# TensorFlow's depthwise convolution only takes equal strides, as for
# keras.layers.DepthwiseConv2D, so unequal strides are tested on regular convs only.
UNEQUAL_STRIDES_CASE = (2, 10, 10, 3, 3, (5, 5), (2, 1), "valid", 1)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _random(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def test_combine_experts_matches_weighted_sum(rng):
    routing = _random(rng, 3, 4)
    experts = _random(rng, 4, 2, 5, 6)
    expected = np.einsum("be,eijk->bijk", routing, experts)
    np.testing.assert_allclose(
        to_numpy(dc.combine_experts(routing, experts)), expected, atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("case", CONV_CASES + [UNEQUAL_STRIDES_CASE])
def test_per_example_conv_matches_loop(rng, case):
    batch, h, w, cin, cout, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, cin)
    kernels = _random(rng, batch, *ksize, cin, cout)
    expected = np.stack(
        [reference.conv2d(x, k, strides, padding, dilation) for x, k in zip(inputs, kernels)]
    )
    out = dc.per_example_conv(inputs, kernels, strides, padding, dilation)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_per_example_depthwise_conv_matches_loop(rng, case, multiplier):
    batch, h, w, channels, _, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, channels)
    kernels = _random(rng, batch, *ksize, channels, multiplier)
    expected = np.stack(
        [
            reference.depthwise_conv2d(x, k, strides, padding, dilation)
            for x, k in zip(inputs, kernels)
        ]
    )
    out = dc.per_example_depthwise_conv(inputs, kernels, strides, padding, dilation)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("inner_shape", [(), (5,), (2, 3)])
def test_per_example_dense_matches_loop(rng, inner_shape):
    inputs = _random(rng, 3, *inner_shape, 4)
    kernels = _random(rng, 3, 4, 6)
    expected = np.stack([x @ k for x, k in zip(inputs, kernels)])
    out = dc.per_example_dense(inputs, kernels)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", CONV_CASES + [UNEQUAL_STRIDES_CASE])
@pytest.mark.parametrize("num_experts", [1, 3])
def test_mixture_conv_matches_weighted_expert_outputs(rng, case, num_experts):
    batch, h, w, cin, cout, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, cin)
    experts = _random(rng, num_experts, *ksize, cin, cout)
    routing = _random(rng, batch, num_experts)
    expected = reference.cond_conv2d(
        inputs, experts, routing, strides=strides, padding=padding, dilation=dilation
    )
    out = dc.mixture_conv(inputs, experts, routing, strides, padding, dilation)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", CONV_CASES[:3])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_mixture_depthwise_conv_matches_reference(rng, case, multiplier):
    batch, h, w, channels, _, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, channels)
    experts = _random(rng, 3, *ksize, channels, multiplier)
    routing = _random(rng, batch, 3)
    expected = reference.cond_conv2d(
        inputs, experts, routing, depthwise=True,
        strides=strides, padding=padding, dilation=dilation,
    )
    out = dc.mixture_depthwise_conv(inputs, experts, routing, strides, padding, dilation)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


def test_mixture_dense_matches_reference(rng):
    inputs = _random(rng, 4, 6)
    experts = _random(rng, 3, 6, 5)
    routing = _random(rng, 4, 3)
    expected = reference.cond_dense(inputs, experts, routing)
    out = dc.mixture_dense(inputs, experts, routing)
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("depthwise", [False, True])
def test_per_example_and_mixture_gradients_agree(rng, depthwise):
    inputs = _random(rng, 3, 8, 8, 4)
    experts = _random(rng, 3, 3, 3, 4, 2 if depthwise else 5)
    routing = _random(rng, 3, 3)
    per_example_fn = dc.per_example_depthwise_conv if depthwise else dc.per_example_conv
    mixture_fn = dc.mixture_depthwise_conv if depthwise else dc.mixture_conv
    out_shape = to_numpy(mixture_fn(inputs, experts, routing, 2, "same")).shape
    projection = _random(rng, *out_shape)

    def per_example_loss(x, e, r):
        out = per_example_fn(x, dc.combine_experts(r, e), 2, "same")
        return keras.ops.sum(out * keras.ops.convert_to_tensor(projection))

    def mixture_loss(x, e, r):
        out = mixture_fn(x, e, r, 2, "same")
        return keras.ops.sum(out * keras.ops.convert_to_tensor(projection))

    for got, want in zip(
        gradients(per_example_loss, [inputs, experts, routing]),
        gradients(mixture_loss, [inputs, experts, routing]),
    ):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


TAPS_CASES = CONV_CASES + [
    (2, 7, 7, 6, 6, (5, 5), 2, "same", 1),
    (2, 8, 9, 3, 4, (3, 3), (2, 1), "same", 1),
    (2, 9, 8, 3, 4, (3, 3), 1, "same", (2, 1)),
]


@pytest.mark.parametrize("case", TAPS_CASES)
@pytest.mark.parametrize("depthwise", [False, True])
def test_taps_fast_path_equals_the_generic_path_with_gradients(rng, monkeypatch, case, depthwise):
    """The XLA fast path (`keras_dynconv.ops.taps`) against the grouped-convolution
    path, forced either way on every backend: outputs and gradients."""
    batch, h, w, cin, cout, ksize, strides, padding, dilation = case
    if depthwise and _pair(strides)[0] != _pair(strides)[1]:
        pytest.skip("TensorFlow's depthwise conv takes equal strides only")
    inputs = _random(rng, batch, h, w, cin)
    kernels = _random(rng, batch, *ksize, cin, 2 if depthwise else cout)
    function = dc.per_example_depthwise_conv if depthwise else dc.per_example_conv

    def run(taps_on):
        monkeypatch.setattr(taps, "use_taps", lambda inputs: taps_on)
        output = to_numpy(function(inputs, kernels, strides, padding, dilation))
        projection = keras.ops.convert_to_tensor(_random(np.random.default_rng(1), *output.shape))
        grads = gradients(
            lambda x, k: keras.ops.sum(function(x, k, strides, padding, dilation) * projection),
            [inputs, kernels],
        )
        return output, grads

    (generic, generic_grads), (fast, fast_grads) = run(False), run(True)
    np.testing.assert_allclose(fast, generic, atol=ATOL, rtol=RTOL)
    for got, want in zip(fast_grads, generic_grads):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


def _assert_depthwise_fast_path_equals_generic(monkeypatch, fast_path, case, multiplier, rng):
    """`per_example_depthwise_conv` with `fast_path.available` forced off, then on:
    equal outputs and gradients."""
    batch, h, w, channels, _, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, channels)
    kernels = _random(rng, batch, *ksize, channels, multiplier)
    results = []
    for fast in (False, True):
        monkeypatch.setattr(fast_path, "available", lambda inputs: fast)

        def loss(x, k):
            out = dc.per_example_depthwise_conv(x, k, strides, padding, dilation)
            return keras.ops.sum(out * keras.ops.cos(out))

        output = dc.per_example_depthwise_conv(inputs, kernels, strides, padding, dilation)
        results.append((to_numpy(output), gradients(loss, [inputs, kernels])))
    (generic, generic_grads), (fast, fast_grads) = results
    np.testing.assert_allclose(fast, generic, atol=ATOL, rtol=RTOL)
    for got, want in zip(fast_grads, generic_grads):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch fast path")
@pytest.mark.parametrize("case", TAPS_CASES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_torch_conv_fast_path_equals_the_generic_path_with_gradients(
    rng, monkeypatch, case, multiplier
):
    if _pair(case[6])[0] != _pair(case[6])[1]:
        pytest.skip("TensorFlow's depthwise conv takes equal strides only")
    _assert_depthwise_fast_path_equals_generic(monkeypatch, torch_conv, case, multiplier, rng)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch gradient")
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], TAPS_CASES[-3]])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_torch_correlation_weight_gradient_equals_the_generic_path(
    rng, monkeypatch, case, multiplier
):
    """The folded depthwise convolution's weight gradient as a correlation
    (`torch_conv.correlation_weight_gradient`), forced for every kernel size."""
    calls = []

    def forced(kernel_size, dilation_rate):
        calls.append(kernel_size)
        return True

    monkeypatch.setattr(torch_conv, "correlation_gradient_pays", forced)
    _assert_depthwise_fast_path_equals_generic(monkeypatch, torch_conv, case, multiplier, rng)
    assert calls


@pytest.mark.skipif(BACKEND != "torch", reason="the torch inference path")
@pytest.mark.parametrize("case", [CONV_CASES[1], TAPS_CASES[-3], TAPS_CASES[-1]])
@pytest.mark.parametrize("examples_per_chunk", [1, 2])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_torch_depthwise_inference_chunks_equal_the_generic_path(
    rng, monkeypatch, case, examples_per_chunk, multiplier
):
    """Inference (no gradient wanted) takes the depthwise convolution a chunk of examples
    at a time, the last chunk shorter when the batch does not divide; training folds the
    whole batch. Both equal the generic path (`_assert_depthwise_fast_path_equals_generic`
    computes the outputs without gradients, then the gradients). The compiled kernel,
    which would take the float32 inference call, is off (tests/test_native_depthwise.py)."""
    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
    batch, h, w, channels = case[:4]
    monkeypatch.setattr(
        torch_conv, "DEPTHWISE_CHUNK_BYTES", examples_per_chunk * h * w * channels * 4
    )
    folds = []
    fold = torch_conv._folded_depthwise_conv
    monkeypatch.setattr(
        torch_conv, "_folded_depthwise_conv",
        lambda inputs, *args: folds.append(inputs.shape[0]) or fold(inputs, *args),
    )
    _assert_depthwise_fast_path_equals_generic(monkeypatch, torch_conv, case, multiplier, rng)
    chunks = [min(examples_per_chunk, batch - start) for start in range(0, batch, examples_per_chunk)]
    if torch_device_type() != "cpu":  # the chunks are sized for a CPU's caches
        chunks = [batch]
    # The inference call in chunks, then the whole batch for each of the two gradients.
    assert folds[: len(chunks)] == chunks
    assert folds[len(chunks):] == [batch]


POINTWISE_CASES = [
    # (batch, H, W, Cin, Cout, strides)
    (3, 5, 4, 6, 7, 1),
    (4, 7, 7, 5, 3, 2),
    (1, 3, 3, 4, 4, 1),
]


@pytest.mark.parametrize("case", POINTWISE_CASES)
@pytest.mark.parametrize("examples_per_chunk", [1, 2, 64])
def test_per_example_conv_of_experts_matches_loop(rng, monkeypatch, case, examples_per_chunk):
    """1x1 kernels combined and applied in chunks (torch inference), or combined for the
    whole batch (every other case), against a NumPy loop over examples."""
    batch, h, w, cin, cout, strides = case
    inputs = _random(rng, batch, h, w, cin)
    experts = _random(rng, 4, 1, 1, cin, cout)
    routing = rng.uniform(size=(batch, 4)).astype("float32")
    kernels = np.einsum("be,eijkl->bijkl", routing, experts)
    expected = np.stack(
        [reference.conv2d(x, k, strides, "same") for x, k in zip(inputs, kernels)]
    )
    monkeypatch.setattr(torch_conv, "POINTWISE_CHUNK_BYTES", examples_per_chunk * cin * cout * 4)
    out = dc.per_example_conv_of_experts(inputs, experts, routing, strides, "same")
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch inference path")
def test_torch_pointwise_chunks_only_for_inference_on_a_cpu(rng):
    """The chunked 1x1 path writes into preallocated buffers: never where a gradient is
    wanted, nor for 3x3 kernels or mixed dtypes, nor on a GPU (Keras' device here)."""
    import torch

    device = torch_device_type()
    inputs = torch.tensor(_random(rng, 2, 4, 4, 3), device=device)
    experts = torch.tensor(_random(rng, 4, 1, 1, 3, 5), device=device, requires_grad=True)
    routing = torch.tensor(_random(rng, 2, 4), device=device)
    assert not torch_conv.inference_available(inputs, experts, routing)
    with torch.no_grad():
        assert torch_conv.inference_available(inputs, experts, routing) == (device == "cpu")
        assert not torch_conv.inference_available(inputs, experts.double(), routing)
    out = dc.per_example_conv_of_experts(inputs, experts, routing)
    torch.sum(out).backward()
    assert experts.grad is not None and torch.all(torch.isfinite(experts.grad))


def test_torch_correlation_weight_gradient_is_taken_for_large_undilated_kernels():
    pays = torch_conv.correlation_gradient_pays
    assert pays((5, 5), 1) and pays((3, 5), (1, 1))
    assert not pays((3, 3), 1)
    assert not pays((5, 5), 2)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[2], TAPS_CASES[-3]])
def test_tf_one_conv_per_example_path_equals_the_generic_path_with_gradients(
    rng, monkeypatch, case
):
    """`keras_dynconv.ops.tf_depthwise` (keras.ops, forced here on every backend)."""
    monkeypatch.setattr(taps, "use_taps", lambda inputs: False)
    monkeypatch.setattr(torch_conv, "available", lambda inputs: False)
    _assert_depthwise_fast_path_equals_generic(monkeypatch, tf_depthwise, case, 2, rng)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow gradient")
@pytest.mark.parametrize(
    "case",
    [
        (2, 7, 7, 6, 6, (5, 5), 2, "same", 1),
        (3, 9, 8, 4, 4, (3, 3), 2, "same", 1),
        (2, 8, 8, 3, 3, (3, 2), 2, "valid", 1),
        (2, 9, 9, 5, 5, (5, 5), 1, "valid", 1),
    ],
)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_tf_correlation_kernel_gradient_equals_the_generic_path(rng, monkeypatch, case, multiplier):
    """The kernel gradient as a correlation (`tf_depthwise.conv_with_correlation_gradient`),
    forced for every kernel size, against the folded path's autodiff."""
    monkeypatch.setattr(taps, "use_taps", lambda inputs: False)
    monkeypatch.setattr(
        tf_depthwise, "correlation_gradient_pays", lambda kernel_size, dilation_rate: True
    )
    _assert_depthwise_fast_path_equals_generic(monkeypatch, tf_depthwise, case, multiplier, rng)


def test_tf_correlation_kernel_gradient_is_taken_for_large_undilated_kernels():
    pays = tf_depthwise.correlation_gradient_pays
    on_tensorflow = BACKEND == "tensorflow"
    assert pays((5, 5), 1) is on_tensorflow
    assert pays((3, 5), (1, 1)) is on_tensorflow
    assert not pays((3, 3), 1)
    assert not pays((5, 5), 2)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow path")
def test_tf_one_conv_per_example_path_needs_a_known_small_batch():
    import tensorflow as tf

    assert tf_depthwise.available(keras.ops.ones((2, 5, 5, 3)))
    assert not tf_depthwise.available(keras.ops.ones((tf_depthwise.MAX_BATCH + 1, 1, 1, 1)))
    seen = []
    signature = [tf.TensorSpec((None, 5, 5, 3)), tf.TensorSpec((None, 3, 3, 3, 1))]

    @tf.function(input_signature=signature)
    def unknown_batch(x, k):
        seen.append(tf_depthwise.available(x))
        return dc.per_example_depthwise_conv(x, k, 1, "same")

    unknown_batch(keras.ops.ones((2, 5, 5, 3)), keras.ops.ones((2, 3, 3, 3, 1)))
    assert seen == [False]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow path")
def test_tf_per_example_path_trains_with_an_unknown_image_size(rng):
    """A known batch and unknown height and width (a fully convolutional model): the
    one-conv-per-example path with TensorFlow's own kernel gradient, equal to the
    correlation gradient of the same call with the size known."""
    import tensorflow as tf

    inputs, kernels = _random(rng, 2, 6, 7, 3), _random(rng, 2, 5, 5, 3, 1)

    signature = [tf.TensorSpec((2, None, None, 3)), tf.TensorSpec((2, 5, 5, 3, 1))]

    @tf.function(input_signature=signature)
    def kernel_gradient(x, k):
        with tf.GradientTape() as tape:
            tape.watch(k)
            loss = tf.reduce_sum(dc.per_example_depthwise_conv(x, k, 1, "same") ** 2)
        return tape.gradient(loss, k)

    with tf.GradientTape() as tape:
        known = [tf.constant(inputs), tf.constant(kernels)]
        tape.watch(known[1])
        loss = tf.reduce_sum(dc.per_example_depthwise_conv(*known, 1, "same") ** 2)
    np.testing.assert_allclose(
        kernel_gradient(inputs, kernels).numpy(), tape.gradient(loss, known[1]).numpy(),
        atol=1e-3, rtol=1e-4,
    )


@pytest.mark.parametrize("case", TAPS_CASES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_static_depthwise_conv_equals_keras_with_gradients(rng, case, multiplier):
    """`depthwise_conv` (the zoo's static depthwise layers) against Keras' op: eager
    (taps on JAX, views on torch) and, for two cases, compiled (taps under TF's XLA)."""
    batch, h, w, channels, _, ksize, strides, padding, dilation = case
    if _pair(strides)[0] != _pair(strides)[1]:
        pytest.skip("TensorFlow's depthwise conv takes equal strides only")
    inputs = _random(rng, batch, h, w, channels)
    kernel = _random(rng, *ksize, channels, multiplier)

    def ours(x, k):
        return dc.depthwise_conv(x, k, strides, padding, dilation)

    def keras_op(x, k):
        return keras.ops.depthwise_conv(x, k, strides, padding, dilation_rate=dilation)

    expected = to_numpy(keras_op(inputs, kernel))
    np.testing.assert_allclose(to_numpy(ours(inputs, kernel)), expected, atol=ATOL, rtol=RTOL)
    if case in (CONV_CASES[2], TAPS_CASES[-3]) and multiplier == 1:  # compiling is slow on torch
        np.testing.assert_allclose(
            to_numpy(jit(ours)(inputs, kernel)), expected, atol=ATOL, rtol=RTOL
        )
    projection = keras.ops.convert_to_tensor(_random(rng, *expected.shape))
    for got, want in zip(
        gradients(lambda x, k: keras.ops.sum(ours(x, k) * projection), [inputs, kernel]),
        gradients(lambda x, k: keras.ops.sum(keras_op(x, k) * projection), [inputs, kernel]),
    ):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("case", CONV_CASES + [UNEQUAL_STRIDES_CASE])
@pytest.mark.parametrize("groups", [1, 2])
def test_static_conv_equals_keras_with_gradients(rng, case, groups):
    """`conv` (the zoo's static convolutions: views on torch) against Keras' op."""
    batch, h, w, cin, cout, ksize, strides, padding, dilation = case
    if cin % groups or cout % groups:
        pytest.skip("channels not divisible by groups")
    inputs = _random(rng, batch, h, w, cin)
    kernel = _random(rng, *ksize, cin // groups, cout)

    def ours(x, k):
        return dc.conv(x, k, strides, padding, dilation)

    def keras_op(x, k):
        return keras.ops.conv(x, k, strides, padding, dilation_rate=dilation)

    expected = to_numpy(keras_op(inputs, kernel))
    np.testing.assert_allclose(to_numpy(ours(inputs, kernel)), expected, atol=ATOL, rtol=RTOL)
    projection = _random(rng, *expected.shape)
    projection_tensor = keras.ops.convert_to_tensor(projection)
    input_gradient, kernel_gradient = gradients(
        lambda x, k: keras.ops.sum(ours(x, k) * projection_tensor), [inputs, kernel])
    keras_input_gradient, _ = gradients(
        lambda x, k: keras.ops.sum(keras_op(x, k) * projection_tensor), [inputs, kernel])
    np.testing.assert_allclose(input_gradient, keras_input_gradient, atol=1e-3, rtol=1e-4)
    # The kernel gradient against NumPy, not Keras: on torch 2.13 (CPU) Keras' conv
    # returns a wrong, run-to-run different one for case 3 (1x1 kernel, stride 2): torch's
    # weight gradient of a strided 1x1 conv on channels-last memory is wrong for some
    # shapes. `conv` subsamples first and is right.
    group_in, group_out = cin // groups, cout // groups
    expected_kernel_gradient = np.concatenate([
        reference.conv2d_kernel_gradient(
            inputs[..., g * group_in:(g + 1) * group_in],
            projection[..., g * group_out:(g + 1) * group_out], ksize, strides, padding,
            dilation)
        for g in range(groups)
    ], axis=-1)
    np.testing.assert_allclose(kernel_gradient, expected_kernel_gradient, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[3], TAPS_CASES[-3]])
@pytest.mark.parametrize("depthwise", [False, True])
def test_static_conv_bias_equals_keras_plus_bias_with_gradients(rng, case, depthwise):
    """`conv` and `depthwise_conv` with a bias (on torch added by the convolution)
    against Keras' op plus the bias: outputs, and gradients of inputs, kernel and bias
    (the bias gradient also against NumPy: the projection summed over all but the
    channels)."""
    batch, h, w, cin, cout, ksize, strides, padding, dilation = case
    if depthwise and _pair(strides)[0] != _pair(strides)[1]:
        pytest.skip("TensorFlow's depthwise convolution takes equal strides only")
    inputs = _random(rng, batch, h, w, cin)
    kernel = _random(rng, *ksize, cin, 2 if depthwise else cout)
    bias = _random(rng, kernel.shape[-1] * (cin if depthwise else 1))
    ours_op, keras_op = (
        (dc.depthwise_conv, keras.ops.depthwise_conv) if depthwise else (dc.conv, keras.ops.conv)
    )

    def ours(x, k, b):
        return ours_op(x, k, strides, padding, dilation, bias=b)

    def theirs(x, k, b):
        return keras_op(x, k, strides, padding, dilation_rate=dilation) + b

    expected = to_numpy(theirs(inputs, kernel, bias))
    np.testing.assert_allclose(to_numpy(ours(inputs, kernel, bias)), expected, atol=ATOL, rtol=RTOL)
    projection = _random(rng, *expected.shape)
    projection_tensor = keras.ops.convert_to_tensor(projection)
    got, want = (
        gradients(lambda *a: keras.ops.sum(function(*a) * projection_tensor),
                  [inputs, kernel, bias])
        for function in (ours, theirs)
    )
    for got_gradient, want_gradient in zip(got, want):
        np.testing.assert_allclose(got_gradient, want_gradient, atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(got[2], projection.sum(axis=(0, 1, 2)), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("pool_size, strides, padding, h, w", [
    (3, 2, "valid", 9, 9),     # ResNet's stem pooling
    (3, 2, "same", 9, 9),      # symmetric padding: torch pads
    (3, 2, "same", 8, 8),      # asymmetric: Keras' op
    ((2, 3), (1, 2), "same", 7, 8),
    ((2, 3), (1, 2), "valid", 7, 8),
    ((3, 3), (1, 2), "same", 7, 9),
    (2, None, "valid", 6, 7),
])
def test_max_pool_equals_keras_with_gradients(rng, pool_size, strides, padding, h, w):
    """`max_pool` (the zoo's max pooling) against Keras' op: outputs and input gradients,
    negative inputs included (padding must never win)."""
    inputs = _random(rng, 2, h, w, 5)

    def ours(x):
        return dc.max_pool(x, pool_size, strides, padding)

    def keras_op(x):
        # Keras 3.15's JAX op fails with strides=None and an int pool size.
        return keras.ops.max_pool(x, pool_size, strides or pool_size, padding)

    expected = to_numpy(keras_op(inputs))
    np.testing.assert_allclose(to_numpy(ours(inputs)), expected, atol=ATOL, rtol=RTOL)
    projection = keras.ops.convert_to_tensor(_random(rng, *expected.shape))
    (got,), (want,) = (
        gradients(lambda x: keras.ops.sum(function(x) * projection), [inputs])
        for function in (ours, keras_op)
    )
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("make, keras_class", [
    (lambda: layers.Conv2D(6, 3, strides=2, padding="same", use_bias=True, activation="relu"),
     keras.layers.Conv2D),
    (lambda: layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                                    use_bias=True, activation="relu"),
     keras.layers.DepthwiseConv2D),
    (lambda: layers.MaxPooling2D(3, strides=2, padding="same"), keras.layers.MaxPooling2D),
], ids=["Conv2D", "DepthwiseConv2D", "MaxPooling2D"])
def test_static_layers_are_keras_layers_with_the_fast_paths(rng, make, keras_class):
    ours = make()
    reference_layer = keras_class.from_config(ours.get_config())
    x = _random(rng, 2, 9, 9, 3)
    ours.build(x.shape)
    reference_layer.build(x.shape)
    reference_layer.set_weights([_random(rng, *v.shape) for v in reference_layer.weights])
    ours.set_weights(reference_layer.get_weights())
    assert isinstance(ours, keras_class)
    assert type(type(ours).from_config(ours.get_config())) is type(ours)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(reference_layer(x)), atol=ATOL, rtol=RTOL)


def _standardized_convolution(base):
    """`base` with Keras' hook for a weight-standardised convolution: `convolution_op`."""

    class Standardized(base):
        def convolution_op(self, inputs, kernel):
            mean = keras.ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
            return super().convolution_op(inputs, kernel - mean)

    return Standardized


def test_static_conv_subclass_convolution_op_is_used(rng):
    """A subclass's `convolution_op` runs, as in Keras' layer (also for inference on
    torch, where the prepared calls must not bypass it)."""
    from keras_dynconv.layers import prepared_calls

    ours = _standardized_convolution(layers.Conv2D)(6, 3, padding="same", activation="relu")
    reference_layer = _standardized_convolution(keras.layers.Conv2D)(6, 3, padding="same",
                                                                     activation="relu")
    x = _random(rng, 2, 7, 7, 3)
    ours.build(x.shape)
    reference_layer.build(x.shape)
    reference_layer.set_weights([_random(rng, *v.shape) + 1.0 for v in reference_layer.weights])
    ours.set_weights(reference_layer.get_weights())
    expected = to_numpy(reference_layer(x))
    np.testing.assert_allclose(to_numpy(ours(x)), expected, atol=ATOL, rtol=RTOL)
    plain = layers.Conv2D(6, 3, padding="same", activation="relu")
    plain.build(x.shape)
    plain.set_weights(ours.get_weights())
    assert not np.allclose(expected, to_numpy(plain(x)), atol=1e-2)  # the hook matters
    if BACKEND == "torch":
        import torch

        with torch.no_grad():
            assert prepared_calls.call(ours, keras.ops.convert_to_tensor(x)) is None


@pytest.mark.parametrize("case", [CONV_CASES[1], TAPS_CASES[-3]])
def test_taps_mixture_depthwise_equals_the_generic_path_with_gradients(rng, monkeypatch, case):
    batch, h, w, channels, _, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, channels)
    experts = _random(rng, 3, *ksize, channels, 2)
    routing = _random(rng, batch, 3)
    results = []
    for taps_on in (False, True):
        monkeypatch.setattr(taps, "use_taps", lambda inputs: taps_on)

        def loss(x, e, r):
            out = dc.mixture_depthwise_conv(x, e, r, strides, padding, dilation)
            return keras.ops.sum(out * keras.ops.cos(out))

        output = dc.mixture_depthwise_conv(inputs, experts, routing, strides, padding, dilation)
        results.append((to_numpy(output), gradients(loss, [inputs, experts, routing])))
    (generic, generic_grads), (fast, fast_grads) = results
    np.testing.assert_allclose(fast, generic, atol=ATOL, rtol=RTOL)
    for got, want in zip(fast_grads, generic_grads):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


def test_taps_are_used_exactly_under_xla():
    x = keras.ops.zeros((2, 5, 5, 3))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        seen = {}
        for jit_compile in (True, False):

            def record(tensor, jit_compile=jit_compile):
                seen[jit_compile] = taps.use_taps(tensor)
                return tensor

            tf.function(record, jit_compile=jit_compile, autograph=False)(x)
        assert seen == {True: True, False: False}
        assert not taps.use_taps(x)  # eager
        # XLA with an unknown spatial size: the generic path, which takes it.
        spec = tf.TensorSpec([None, None, None, 3])

        def record_unknown_size(tensor):
            seen["unknown size"] = taps.use_taps(tensor)
            return tensor

        tf.function(record_unknown_size, input_signature=[spec], jit_compile=True,
                    autograph=False).get_concrete_function()
        assert seen["unknown size"] is False
    else:
        assert taps.use_taps(x) == (BACKEND == "jax")


def _all_core_ops(x, kernels, dw_kernels, experts, dw_experts, routing):
    return (
        dc.per_example_conv(x, kernels, 2, "same"),
        dc.per_example_conv(x, kernels[:, :1, :1], 1, "same"),
        dc.per_example_depthwise_conv(x, dw_kernels, 1, "same"),
        dc.mixture_conv(x, experts, routing, 1, "same"),
        dc.mixture_depthwise_conv(x, dw_experts, routing, 2, "same"),
    )


def test_core_ops_compile_with_jit(rng):
    compiled_ops = jit(_all_core_ops)
    # Two batch sizes: torch compiles with a dynamic batch, JAX and XLA retrace.
    for batch in (2, 3):
        args = [
            _random(rng, batch, 8, 8, 3),
            _random(rng, batch, 3, 3, 3, 4),
            _random(rng, batch, 3, 3, 3, 1),
            _random(rng, 4, 3, 3, 3, 4),
            _random(rng, 4, 3, 3, 3, 1),
            _random(rng, batch, 4),
        ]
        for got, want in zip(compiled_ops(*args), _all_core_ops(*args)):
            np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF graphs carry an unknown batch")
def test_unknown_batch_size_in_tf_function(rng):
    import tensorflow as tf

    x = _random(rng, 3, 8, 8, 3)
    kernels = _random(rng, 3, 3, 3, 3, 4)
    experts = _random(rng, 2, 3, 3, 3, 4)
    routing = _random(rng, 3, 2)
    specs = [
        tf.TensorSpec([None, None, None, 3]),
        tf.TensorSpec([None, 3, 3, 3, 4]),
        tf.TensorSpec([2, 3, 3, 3, 4]),
        tf.TensorSpec([None, 2]),
    ]

    def both(x, k, e, r):
        return dc.per_example_conv(x, k, 2, "same"), dc.mixture_conv(x, e, r, 1, "same")

    for jit_compile in (False, True):
        fn = tf.function(both, input_signature=specs, jit_compile=jit_compile)
        traced = fn.get_concrete_function()
        assert traced.structured_outputs[0].shape.as_list() == [None, None, None, 4]
        for got, want in zip(fn(x, kernels, experts, routing), both(x, kernels, experts, routing)):
            np.testing.assert_allclose(got.numpy(), to_numpy(want), atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.export symbolic shapes")
def test_symbolic_batch_in_jax_export(rng):
    # XLA needs a static feature_group_count, so the grouped per-example conv
    # retraces per batch size under JAX; the mixture and 1x1 paths export with a
    # symbolic batch dimension.
    import jax
    from jax import export

    (batch,) = export.symbolic_shape("b")
    x = _random(rng, 3, 8, 8, 3)
    experts = _random(rng, 2, 3, 3, 3, 4)
    pointwise = _random(rng, 3, 1, 1, 3, 4)
    routing = _random(rng, 3, 2)

    def both(x, pw, r):
        return dc.mixture_conv(x, experts, r, 1, "same"), dc.per_example_conv(x, pw, 2)

    exported = export.export(jax.jit(both))(
        jax.ShapeDtypeStruct((batch, 8, 8, 3), "float32"),
        jax.ShapeDtypeStruct((batch, 1, 1, 3, 4), "float32"),
        jax.ShapeDtypeStruct((batch, 2), "float32"),
    )
    assert str(exported.out_avals[0].shape[0]) == "b"
    for got, want in zip(exported.call(x, pointwise, routing), both(x, pointwise, routing)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_stable_top_k_matches_a_stable_sort(rng, k):
    """Largest first, ties (including -0.0 and 0.0) in index order, against NumPy's
    stable sort; on torch this is the integer-key `topk` path."""
    values = rng.choice(np.array([-2.5, -0.0, 0.0, 0.5, 0.5, 1e-30, 3.0], "float32"), (4, 6))
    values[0] = 0.5  # a dead selector: every score equal
    values[1] = rng.standard_normal(6)
    values[2] = [-1.0, -0.0, 0.0, -0.0, -1.0, 0.0]
    indices, top = dc.stable_top_k(values, k)
    expected = np.argsort(-values, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(to_numpy(indices), expected)
    np.testing.assert_array_equal(to_numpy(top), np.take_along_axis(values, expected, -1))


def test_channel_gather_and_add_match_numpy_with_gradients(rng):
    """`take_channels` and `add_to_leading_channels` (the MoD blocks' gather and
    scatter; on torch a `gather` and an add into a copy) against NumPy, and their
    gradients against the generic ops."""
    inputs = _random(rng, 3, 4, 5, 7)
    channels = np.array([[6, 0], [2, 2], [1, 5]], "int32")
    update = _random(rng, 3, 4, 5, 2)
    expected = np.take_along_axis(inputs, channels[:, None, None, :], axis=-1)
    np.testing.assert_array_equal(to_numpy(dc.take_channels(inputs, channels)), expected)
    added = inputs.copy()
    added[..., :2] += update
    np.testing.assert_allclose(
        to_numpy(dc.add_to_leading_channels(inputs, update)), added, atol=ATOL, rtol=RTOL
    )
    projection = keras.ops.convert_to_tensor(_random(rng, 3, 4, 5, 7))

    def ours(x, u):
        return keras.ops.sum(dc.add_to_leading_channels(x, dc.take_channels(x, channels) * u)
                             * projection)

    def generic(x, u):
        picked = keras.ops.take_along_axis(x, channels[:, None, None, :], axis=-1)
        both = keras.ops.concatenate([x[..., :2] + picked * u, x[..., 2:]], axis=-1)
        return keras.ops.sum(both * projection)

    for got, want in zip(gradients(ours, [inputs, update]), gradients(generic, [inputs, update])):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


def test_channels_first_is_refused(rng):
    with pytest.raises(NotImplementedError, match="channels_last"):
        dc.per_example_conv(
            _random(rng, 1, 3, 4, 4), _random(rng, 1, 3, 3, 3, 2), data_format="channels_first"
        )


@pytest.mark.skipif(BACKEND != "torch", reason="torch's conversion")
def test_torch_tensor_equals_keras_conversion():
    """`torch_conv.torch_tensor` against `keras.ops.convert_to_tensor`: a tensor is
    itself, a variable its value (cast inside an autocast scope), anything else
    converted."""
    import torch
    from keras.src.backend import AutocastScope

    tensor = torch.arange(6.0).reshape(2, 3)
    variable = keras.Variable(np.ones((2, 3), "float32"))
    assert torch_conv.torch_tensor(tensor) is tensor
    assert torch_conv.torch_tensor(variable) is variable.value
    for value in (np.arange(4, dtype="float64"), [1.0, 2.0], 3, variable):
        ours, theirs = torch_conv.torch_tensor(value), keras.ops.convert_to_tensor(value)
        assert ours.dtype == theirs.dtype and ours.device == theirs.device
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    with AutocastScope("float16"):
        assert torch_conv.torch_tensor(variable).dtype == torch.float16
