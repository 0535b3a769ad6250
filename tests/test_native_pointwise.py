"""The compiled 1x1 convolution of combined experts (`keras_dynconv.ops.native_pointwise`)
against a per-example NumPy loop in float64 and against torch's batched product, which
it replaces where it applies.

Tolerance: conftest's ATOL/RTOL (1e-4): float32 sums of up to 1152 products (combined
kernels of 8 products each), summed in another order than NumPy's.
"""

import keras
import numpy as np
import pytest

from conftest import ATOL, BACKEND, RTOL, compiler_here, to_numpy
from keras_dynconv import layers
from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import native_pointwise
from keras_dynconv.ops import torch_conv

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="a torch inference path")

# (batch, H, W, I, O, E). O covers blocks of two vectors, a last block of one vector
# (vectors of 16, 8 or 4 floats) and a single block; H * W covers whole and partial
# groups of 8 pixels; I covers one, two and three slices of 128 input channels. The
# last case has enough blocks for every example of a batch to be one task's, so
# experts read in place are packed a slice at a time; (9, ..., 48, ...) splits its
# few blocks' examples across tasks.
CASES = [
    (2, 7, 7, 192, 64, 8),
    (3, 5, 3, 40, 48, 4),
    (1, 2, 2, 300, 16, 2),
    (2, 8, 8, 129, 112, 3),
    (4, 1, 1, 16, 32, 1),
    (9, 3, 3, 40, 48, 4),
    (6, 3, 3, 40, 512, 3),
]


def _random(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _expected(inputs, experts, routing, bias=None):
    kernels = np.einsum("be,eio->bio", routing.astype("float64"), experts[:, 0, 0].astype("float64"))
    outputs = np.einsum("bhwi,bio->bhwo", inputs.astype("float64"), kernels)
    return outputs if bias is None else outputs + bias


@pytest.fixture
def native_kernel(cpu_only):
    if native_depthwise.library() is None:
        pytest.skip("no native kernel on this machine")


def _case_tensors(rng, case):
    batch, h, w, in_channels, out_channels, num_experts = case
    return (
        _random(rng, batch, h, w, in_channels),
        _random(rng, num_experts, 1, 1, in_channels, out_channels),
        rng.uniform(0, 1, (batch, num_experts)).astype("float32"),
    )


@pytest.mark.parametrize("case", CASES)
def test_native_pointwise_matches_a_loop_and_the_batched_product(rng, native_kernel, case):
    import torch

    inputs, experts, routing = _case_tensors(rng, case)
    tensors = [keras.ops.convert_to_tensor(t) for t in (inputs, experts, routing)]
    assert native_pointwise.applies(*tensors)
    with torch.no_grad():
        got = to_numpy(native_pointwise.pointwise_conv_of_experts(*tensors))
        kernels = (tensors[2] @ tensors[1].reshape(case[-1], -1)).view(case[0], case[3], case[4])
        batched = torch.bmm(tensors[0].reshape(case[0], -1, case[3]), kernels).view(got.shape)
    np.testing.assert_allclose(got, _expected(inputs, experts, routing), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(got, to_numpy(batched), atol=ATOL, rtol=RTOL)


def test_native_pointwise_adds_a_bias(rng, native_kernel):
    inputs, experts, routing = _case_tensors(rng, CASES[1])
    bias = _random(rng, CASES[1][4])
    got = native_pointwise.pointwise_conv_of_experts(
        *(keras.ops.convert_to_tensor(t) for t in (inputs, experts, routing, bias))
    )
    np.testing.assert_allclose(
        to_numpy(got), _expected(inputs, experts, routing, bias), atol=ATOL, rtol=RTOL
    )


def test_a_layers_experts_are_packed_once_and_again_when_they_change(rng, native_kernel):
    """Experts that are a layer's weights (torch parameters) are read from a packed copy
    (`torch_weights.packed_experts`), made again after an in-place write (as `assign`
    and optimizer steps make)."""
    import torch

    from keras_dynconv.ops import torch_weights

    inputs, experts, routing = _case_tensors(rng, CASES[3])
    parameter = torch.nn.Parameter(torch.from_numpy(experts.copy()))
    x, r = (keras.ops.convert_to_tensor(t) for t in (inputs, routing))
    with torch.no_grad():
        got = native_pointwise.pointwise_conv_of_experts(x, parameter, r)
        packed = torch_weights.packed_experts(parameter, native_depthwise.library().pointwise_block_columns())
        assert packed is torch_weights.packed_experts(parameter, native_depthwise.library().pointwise_block_columns())
        np.testing.assert_allclose(to_numpy(got), _expected(inputs, experts, routing), atol=ATOL, rtol=RTOL)
        parameter.mul_(-2.0)
        got = native_pointwise.pointwise_conv_of_experts(x, parameter, r)
    np.testing.assert_allclose(to_numpy(got), _expected(inputs, -2.0 * experts, routing), atol=ATOL, rtol=RTOL)


def test_native_pointwise_same_result_on_any_number_of_threads(rng, native_kernel):
    """Each output is summed by one thread in a fixed order: bit for bit equal."""
    import torch

    tensors = [keras.ops.convert_to_tensor(t) for t in _case_tensors(rng, CASES[3])]
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(to_numpy(native_pointwise.pointwise_conv_of_experts(*tensors)))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_native_pointwise_only_where_it_applies(rng, monkeypatch, native_kernel):
    """Output channels not in whole vectors of 16, other dtypes, many pixels of large
    inputs (torch's product is as fast there), and `KERAS_DYNCONV_NATIVE=0` take
    torch's batched product; gradients never reach it (`inference_available`)."""
    import torch

    def applies(batch, h, w, in_channels, out_channels, dtype="float32"):
        inputs = torch.empty(batch, h, w, in_channels, dtype=getattr(torch, dtype))
        experts = torch.empty(4, 1, 1, in_channels, out_channels, dtype=getattr(torch, dtype))
        return native_pointwise.applies(inputs, experts, torch.empty(batch, 4, dtype=inputs.dtype))

    assert applies(32, 7, 7, 1152, 192)  # 7.2 MB of inputs, few pixels
    assert applies(64, 7, 7, 1152, 192)  # more than 8 MB, still few pixels
    assert applies(32, 14, 14, 112, 672)  # many pixels, small inputs
    assert not applies(32, 14, 14, 672, 112)  # many pixels of 17 MB
    assert not applies(2, 7, 7, 64, 40)
    assert not applies(2, 7, 7, 64, 64, "float64")
    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
    assert not applies(2, 7, 7, 64, 64)


@pytest.mark.parametrize("native", ["1", "0"])
def test_cond_conv_layer_equals_the_batched_product(rng, monkeypatch, native_kernel, native):
    """A 1x1 `CondConv2D` end to end (routing, combination, product) for inference, as
    `predict` runs it, with the kernel and without it."""
    import torch

    calls = []
    kernel = native_pointwise.pointwise_conv_of_experts
    monkeypatch.setattr(
        native_pointwise, "pointwise_conv_of_experts",
        lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs),
    )
    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", native)
    layer = layers.CondConv2D(48, 1, num_experts=4, strategy="per_example", use_bias=False)
    inputs = _random(rng, 3, 7, 7, 32)
    routing = rng.uniform(0, 1, (3, 4)).astype("float32")
    layer.build(inputs.shape)
    with torch.no_grad():
        got = to_numpy(layer(inputs, routing_weights=routing, training=False))
    assert len(calls) == (native == "1")
    expected = _expected(inputs, to_numpy(layer.kernel), routing)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(not compiler_here(), reason="needs Linux and a C compiler")
@pytest.mark.parametrize("march", ["haswell", "x86-64"])
def test_narrower_vectors_give_the_same_results(rng, fresh_build, monkeypatch, cpu_only, march):
    """The kernel built for 8-float (AVX2) and 4-float (SSE2) vectors, which this
    machine also runs: the channel blocks then split the output channels differently."""
    flags = tuple(
        f"-march={march}" if flag == "-march=native" else flag for flag in native_depthwise.FLAGS
    )
    monkeypatch.setattr(native_depthwise, "FLAGS", flags)
    assert native_depthwise.library() is not None
    import torch

    for case in (CASES[0], CASES[3]):
        inputs, experts, routing = _case_tensors(rng, case)
        x, r = (keras.ops.convert_to_tensor(t) for t in (inputs, routing))
        # Experts as a plain tensor and as a layer's parameter (packed for these vectors).
        for weights in (keras.ops.convert_to_tensor(experts), torch.nn.Parameter(torch.from_numpy(experts))):
            with torch.no_grad():
                got = native_pointwise.pointwise_conv_of_experts(x, weights, r)
            np.testing.assert_allclose(
                to_numpy(got), _expected(inputs, experts, routing), atol=ATOL, rtol=RTOL
            )


def test_torch_path_reaches_the_kernel(rng, monkeypatch, native_kernel):
    """`torch_conv.pointwise_conv_of_experts` (the CondConv layers' inference path)
    hands over where the kernel applies."""
    calls = []
    kernel = native_pointwise.pointwise_conv_of_experts
    monkeypatch.setattr(
        native_pointwise, "pointwise_conv_of_experts",
        lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs),
    )
    tensors = [keras.ops.convert_to_tensor(t) for t in _case_tensors(rng, CASES[0])]
    torch_conv.pointwise_conv_of_experts(*tensors)
    assert calls == [1]
