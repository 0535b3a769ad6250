"""The compiled per-example depthwise convolution (`keras_dynconv.ops.native_depthwise`)
against per-example NumPy loops in float64 and against the folded path it replaces.

Tolerance: conftest's ATOL/RTOL (1e-4): float32 sums of up to 25 products, summed in a
different order than NumPy's.
"""

import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import reference
from conftest import ATOL, BACKEND, RTOL, compiler_here, to_numpy
from keras_dynconv import layers
from keras_dynconv import ops as dc
from keras_dynconv.ops import native_depthwise

pytestmark = [
    pytest.mark.skipif(BACKEND != "torch", reason="a torch inference path"),
]

# (batch, H, W, C, kernel, strides, padding, dilation). The channel counts cover the
# blocks of two vectors, one vector and single channels left over (vectors hold 4, 8 or
# 16 floats); the widths cover rows narrower than, equal to and past a 7-pixel block.
# Kernels 3 or 5 wide with a column stride of 1 or 2 and no column dilation run in
# sliding blocks, the others in the general block.
CASES = [
    (2, 14, 14, 64, (5, 5), 1, "same", 1),
    (3, 9, 8, 37, (3, 3), 2, "same", 1),
    (2, 10, 10, 48, (5, 5), 2, "same", 1),
    (1, 7, 7, 8, (3, 3), 1, "same", 1),
    (2, 5, 3, 19, (3, 2), 1, "valid", 1),
    (2, 11, 15, 40, (3, 3), 1, "same", 2),
    (4, 6, 6, 33, (1, 1), 1, "same", 1),
    (1, 4, 4, 16, (5, 5), 1, "same", 1),
    (2, 8, 9, 24, (2, 4), (2, 3), "same", 1),
    (2, 11, 17, 40, (3, 5), (2, 1), "same", (2, 1)),
    (3, 9, 16, 21, (5, 3), (1, 2), "valid", 1),
    (2, 5, 30, 48, (3, 3), 2, "same", 1),
]


def _random(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _torch(array):
    return keras.ops.convert_to_tensor(array)


@pytest.fixture
def native_kernel(cpu_only):
    if native_depthwise.kernel_function() is None:
        pytest.skip("no native kernel on this machine")


def _count_calls(monkeypatch, name):
    """The list that grows by one at each call of `native_depthwise.<name>`."""
    calls = []
    function = getattr(native_depthwise, name)
    monkeypatch.setattr(
        native_depthwise, name,
        lambda *args, **kwargs: calls.append(1) or function(*args, **kwargs),
    )
    return calls


@pytest.mark.skipif(not compiler_here(), reason="needs Linux and a C compiler")
def test_the_kernel_builds_and_loads_here(cpu_only):
    """Where the suite runs (Linux with a C compiler) the fast path must be live, or the
    other tests here would only exercise the fallback."""
    assert native_depthwise.kernel_function() is not None


@pytest.mark.parametrize("case", CASES)
def test_native_kernel_matches_loop_and_folded_path(rng, monkeypatch, native_kernel, case):
    import torch

    batch, h, w, channels, ksize, strides, padding, dilation = case
    inputs = _random(rng, batch, h, w, channels)
    kernels = _random(rng, batch, *ksize, channels, 1)
    expected = np.stack(
        [reference.depthwise_conv2d(x, k, strides, padding, dilation) for x, k in zip(inputs, kernels)]
    )
    calls = _count_calls(monkeypatch, "per_example_depthwise_conv")
    with torch.no_grad():
        fast = to_numpy(dc.per_example_depthwise_conv(_torch(inputs), _torch(kernels), strides, padding, dilation))
        monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
        folded = to_numpy(dc.per_example_depthwise_conv(_torch(inputs), _torch(kernels), strides, padding, dilation))
    assert calls == [1]
    assert fast.shape == expected.shape
    np.testing.assert_allclose(fast, expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(fast, folded, atol=ATOL, rtol=RTOL)


def test_native_kernel_same_result_on_any_number_of_threads(rng, native_kernel):
    import torch

    inputs, kernels = _torch(_random(rng, 3, 9, 9, 40)), _torch(_random(rng, 3, 5, 5, 40, 1))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            with torch.no_grad():
                results.append(to_numpy(dc.per_example_depthwise_conv(inputs, kernels, 1, "same")))
    finally:
        torch.set_num_threads(threads)
    # Each output is summed by one thread in a fixed order: bit for bit equal.
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_empty_output_and_bad_padding(rng, native_kernel):
    inputs, kernels = _torch(_random(rng, 2, 3, 3, 16)), _torch(_random(rng, 2, 5, 5, 16, 1))
    assert tuple(native_depthwise.per_example_depthwise_conv(inputs, kernels, 1, "valid", 1).shape) == (2, 0, 0, 16)
    with pytest.raises(ValueError, match="padding"):
        native_depthwise.per_example_depthwise_conv(inputs, kernels, 1, "full", 1)


def test_the_c_function_returns_at_once_without_outputs(native_kernel):
    """No examples, rows, columns or channels: nothing read or written (TensorFlow's op
    calls the C function without the torch wrapper's check for an empty output)."""
    kernel = native_depthwise.kernel_function()
    for batch, out_h, out_w, channels in ((0, 4, 4, 8), (2, 0, 4, 8), (2, 4, 0, 8), (2, 4, 4, 0)):
        assert kernel(None, None, 0, None, None, batch, 4, 4, channels, 3, 3, 1, 1, 1, 1, 1, 1,
                      out_h, out_w, 2) == 0


def test_native_path_only_for_float32_inference_with_multiplier_one(rng, monkeypatch, native_kernel):
    """Gradients, other dtypes, depth multipliers and `KERAS_DYNCONV_NATIVE=0` take the
    folded path."""
    import torch

    calls = _count_calls(monkeypatch, "per_example_depthwise_conv")
    inputs, kernels = _random(rng, 2, 6, 6, 16), _random(rng, 2, 3, 3, 16, 1)

    def run(x=inputs, k=kernels, grad=False):
        x, k = _torch(x), _torch(k)
        if grad:
            k.requires_grad_(True)
            return dc.per_example_depthwise_conv(x, k, 1, "same")
        with torch.no_grad():
            return dc.per_example_depthwise_conv(x, k, 1, "same")

    run()
    assert len(calls) == 1
    run(grad=True)
    run(inputs.astype("float64"), kernels.astype("float64"))
    run(k=_random(rng, 2, 3, 3, 16, 2))
    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
    run()
    assert len(calls) == 1


def test_cond_depthwise_layer_equals_the_folded_path(rng, monkeypatch, native_kernel):
    """The layer end to end (routing, combined kernels, the convolution), inference as
    `predict` runs it (no gradient recorded)."""
    import torch

    calls = _count_calls(monkeypatch, "per_example_depthwise_conv")
    layer = layers.CondDepthwiseConv2D(
        5, num_experts=4, strides=2, padding="same", strategy="per_example"
    )
    inputs = _random(rng, 3, 12, 12, 48)
    layer.build(inputs.shape)
    with torch.no_grad():
        fast = to_numpy(layer(inputs, training=False))
        assert calls == [1]
        monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
        folded = to_numpy(layer(inputs, training=False))
    np.testing.assert_allclose(fast, folded, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(not compiler_here(), reason="needs Linux and a C compiler")
def test_the_build_is_cached_by_source_and_machine(fresh_build, monkeypatch, cpu_only):
    compiles = []
    run = subprocess.run

    def recording(command, *args, **kwargs):
        if "-o" in command:
            compiles.append(command)
        return run(command, *args, **kwargs)

    monkeypatch.setattr(native_depthwise.subprocess, "run", recording)
    assert native_depthwise.kernel_function() is not None
    built = list(fresh_build.glob("native_kernels-*.so"))
    assert len(built) == 1 and len(compiles) == 1
    assert "-march=native" in compiles[0] and "-fopenmp" in compiles[0]
    # Nothing but the library is left in the cache (the build's scratch file is renamed).
    assert [path.name for path in fresh_build.iterdir()] == [built[0].name]
    native_depthwise.library.cache_clear()
    assert native_depthwise.kernel_function() is not None
    assert len(compiles) == 1


@pytest.mark.skipif(not compiler_here(), reason="needs Linux and a C compiler")
@pytest.mark.parametrize("march", ["haswell", "x86-64"])
def test_narrower_vectors_give_the_same_results(rng, fresh_build, monkeypatch, cpu_only, march):
    """The kernel built for CPUs with 8-float (AVX2) and 4-float (SSE2) vectors, which
    this machine also runs: the blocks of two vectors, one vector and single channels
    then split the channels differently."""
    import torch

    flags = tuple(f"-march={march}" if flag == "-march=native" else flag for flag in native_depthwise.FLAGS)
    monkeypatch.setattr(native_depthwise, "FLAGS", flags)
    assert native_depthwise.kernel_function() is not None
    for batch, h, w, channels, ksize, strides, padding, dilation in (CASES[1], CASES[3], CASES[5], CASES[-3]):
        inputs = _random(rng, batch, h, w, channels)
        kernels = _random(rng, batch, *ksize, channels, 1)
        expected = np.stack(
            [reference.depthwise_conv2d(x, k, strides, padding, dilation) for x, k in zip(inputs, kernels)]
        )
        with torch.no_grad():
            out = native_depthwise.per_example_depthwise_conv(
                _torch(inputs), _torch(kernels), strides, padding, dilation
            )
        np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel is built on Linux only")
def test_a_failed_build_warns_and_falls_back(rng, fresh_build, monkeypatch, tmp_path, cpu_only):
    import torch

    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc: no such luck' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.warns(RuntimeWarning, match="no such luck"):
        assert native_depthwise.kernel_function() is None
    inputs, kernels = _random(rng, 2, 6, 6, 16), _random(rng, 2, 3, 3, 16, 1)
    expected = np.stack([reference.depthwise_conv2d(x, k, 1, "same") for x, k in zip(inputs, kernels)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, at the lookup above
        with torch.no_grad():
            out = dc.per_example_depthwise_conv(_torch(inputs), _torch(kernels), 1, "same")
    np.testing.assert_allclose(to_numpy(out), expected, atol=ATOL, rtol=RTOL)
    assert not list(fresh_build.glob("*.so"))


STATIC_CASES = [
    # (batch, H, W, C, kernel, strides, padding, use_bias): at most STATIC_MAX_BATCH
    # examples, or kernels in sliding blocks, or uneven "same" padding (an even side,
    # stride 2) at any batch.
    (1, 9, 9, 40, 3, 1, "same", False),
    (2, 8, 8, 37, 5, 2, "same", True),
    (4, 7, 6, 16, 3, 1, "valid", True),
    (6, 10, 10, 24, 3, 2, "same", False),
    (6, 9, 11, 24, 5, 1, "same", True),
]


@pytest.mark.parametrize("case", STATIC_CASES)
def test_static_depthwise_layer_on_the_kernel_equals_keras(rng, monkeypatch, native_kernel, case):
    """The zoo's `DepthwiseConv2D` (through its call, and prepared as a `ZooModel` runs
    it) against Keras' own layer with the same weights, for inference."""
    import torch

    from keras_dynconv.layers import prepared_calls

    batch, h, w, channels, kernel, strides, padding, use_bias = case
    arguments = dict(kernel_size=kernel, strides=strides, padding=padding, use_bias=use_bias)
    ours, theirs = layers.DepthwiseConv2D(**arguments), keras.layers.DepthwiseConv2D(**arguments)
    for layer in (ours, theirs):
        layer.build((batch, h, w, channels))
    weights = [rng.standard_normal(v.shape).astype("float32") for v in theirs.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    x = _torch(_random(rng, batch, h, w, channels))
    calls = _count_calls(monkeypatch, "depthwise_conv")
    with torch.no_grad():
        expected = to_numpy(theirs(x))
        called = to_numpy(ours(x))
        prepared = to_numpy(prepared_calls.call(ours, x))
    assert len(calls) == 2
    np.testing.assert_allclose(called, expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(prepared, expected, atol=ATOL, rtol=RTOL)


def test_static_kernel_not_where_the_bias_wants_a_gradient(rng, monkeypatch, native_kernel):
    """A trainable bias beside a frozen kernel keeps its gradient: oneDNN's path."""
    import torch

    from keras_dynconv.ops import torch_conv

    calls = _count_calls(monkeypatch, "depthwise_conv")
    x, kernel = _torch(_random(rng, 1, 6, 6, 16)), _torch(_random(rng, 3, 3, 16, 1))
    bias = _torch(_random(rng, 16)).requires_grad_(True)
    torch.sum(torch_conv.depthwise_conv(x, kernel, 1, "same", 1, bias=bias)).backward()
    assert calls == []
    np.testing.assert_allclose(to_numpy(bias.grad), np.full(16, 36.0), rtol=1e-6)
    with torch.no_grad():
        torch_conv.depthwise_conv(x, kernel, 1, "same", 1, bias=bias)
    assert calls == [1]


def test_static_kernel_only_where_it_is_faster(rng, native_kernel):
    """`static_applies`: small batches, kernels that run in sliding blocks, or uneven
    padding; float32, multiplier 1."""
    limit = native_depthwise.STATIC_MAX_BATCH

    def applies(batch, side=8, size=(3, 3), strides=1, padding="same", dilation=1,
                multiplier=1, dtype="float32"):
        x = _torch(_random(rng, batch, side, side, 16).astype(dtype))
        kernel = _torch(_random(rng, *size, 16, multiplier).astype(dtype))
        return native_depthwise.static_applies(x, kernel, strides, padding, dilation)

    assert applies(1) and applies(limit)
    # Sliding blocks: 3 or 5 wide, column stride 1 or 2, no column dilation.
    assert applies(limit + 1) and applies(limit + 1, size=(1, 5), strides=(3, 2), dilation=(2, 1))
    assert not applies(limit + 1, size=(7, 7))
    assert not applies(limit + 1, dilation=(1, 2))
    assert not applies(limit + 1, side=9, strides=3)
    # The general block, where torch could only pad by copying the input.
    assert applies(limit + 1, size=(7, 7), strides=2)  # 8 -> 4: pads 2 before, 3 after
    assert not applies(limit + 1, size=(7, 7), side=9, strides=2)  # pads 3 and 3
    assert not applies(limit + 1, size=(7, 7), strides=2, padding="valid")
    assert not applies(1, multiplier=2)
    assert not applies(1, dtype="float64")


def test_openmp_runtimes_read_from_maps():
    maps = "\n".join([
        "7f00-7f01 r-xp 00000000 08:01 1 /site-packages/torch/lib/libgomp.so.1",
        "7f01-7f02 r--p 00001000 08:01 1 /site-packages/torch/lib/libgomp.so.1",
        "7f02-7f03 r-xp 00000000 08:01 2 /site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0",
        "7f03-7f04 r-xp 00000000 08:01 3 /usr/lib/libm.so.6",
        "7f04-7f05 rw-p 00000000 00:00 0",
        "7f05-7f06 r-xp 00000000 08:01 4 /opt/intel/libiomp5.so",
    ])
    assert native_depthwise.openmp_runtimes(maps) == {
        "/site-packages/torch/lib/libgomp.so.1",
        "/site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0",
        "/opt/intel/libiomp5.so",
    }
