"""`keras_dynconv.layers.prepared_calls`: the static layers' kept torch functions equal
their `call` (tolerance 1e-6 on a CPU, where both run the same torch kernels on the
same weights; 1e-5 on a GPU, where cuDNN may pick another algorithm for the kept
kernel layout), are made again whenever what they were made for changes, and are not
used where a gradient is wanted or variables are not the layer's own."""

import contextlib

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy, torch_device_type
from keras_dynconv import layers
from keras_dynconv.layers import prepared_calls

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="the prepared functions are torch's")


def _on_cpu():
    return torch_device_type() == "cpu"


TOLERANCE = (
    dict(atol=1e-6, rtol=1e-6) if BACKEND != "torch" or _on_cpu() else dict(atol=1e-5, rtol=1e-5)
)

CONV_CASES = [
    # (layer, input shape)
    (lambda: layers.Conv2D(6, 3, padding="same"), (2, 7, 7, 4)),
    # "same" padding that is not symmetric: padded first.
    (lambda: layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False), (2, 8, 8, 4)),
    (lambda: layers.Conv2D(6, 5, padding="valid", dilation_rate=2, activation="relu"), (1, 12, 11, 4)),
    # A strided 1x1 kernel: subsampled first.
    (lambda: layers.Conv2D(6, 1, strides=2, padding="same"), (2, 7, 8, 4)),
    (lambda: layers.Conv2D(6, 3, groups=2, padding="same"), (1, 6, 6, 4)),
    (lambda: layers.DepthwiseConv2D(3, padding="same"), (2, 7, 7, 4)),
    (lambda: layers.DepthwiseConv2D(5, strides=2, padding="same", depth_multiplier=2), (2, 8, 9, 3)),
    (lambda: layers.DepthwiseConv2D(3, padding="valid", use_bias=False, activation="swish"), (1, 6, 6, 4)),
]


def _built(make, shape, rng):
    layer = make()
    layer.build(shape)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def _batch_norm(rng, **arguments):
    layer = layers.BatchNormalization(**arguments)
    layer.build((None, 5, 5, 6))
    layer.set_weights([
        rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
        else rng.standard_normal(w.shape).astype("float32")
        for w in layer.weights
    ])
    return layer


def _inputs(rng, shape, dtype="float32"):
    return keras.ops.convert_to_tensor(rng.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("native", ["1", "0"])
def test_prepared_convolutions_equal_their_call(rng, monkeypatch, case, native):
    """With the compiled depthwise kernel (small batches; `native_depthwise`) and with
    oneDNN's convolution: each path prepared equals the same path unprepared."""
    import torch

    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", native)
    make, shape = CONV_CASES[case]
    layer = _built(make, shape, rng)
    x = _inputs(rng, shape)
    with torch.no_grad():
        got = prepared_calls.call(layer, x)
        np.testing.assert_allclose(to_numpy(got), to_numpy(layer.call(x)), **TOLERANCE)


@pytest.mark.parametrize("arguments, dtype", [
    ({}, "float32"),
    ({"center": False, "epsilon": 1e-5}, "float32"),
    ({"scale": False}, "float32"),
    ({}, "float64"),  # normalised in float64, as Keras' layer does
])
def test_prepared_batch_normalization_equals_its_call(rng, arguments, dtype):
    import torch

    layer = _batch_norm(rng, **arguments)
    x = _inputs(rng, (2, 5, 5, 6), dtype)
    with torch.no_grad():
        got = prepared_calls.call(layer, x)
        expected = layer.call(x, training=False)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), **TOLERANCE)


def test_prepared_layers_under_mixed_precision_equal_their_call(rng):
    """bfloat16 inputs in the model's autocast scope: the kernel read in bfloat16, the
    normalisation computed in float32 and returned in bfloat16."""
    import torch
    from keras.src.backend import AutocastScope

    keras.config.set_dtype_policy("mixed_bfloat16")
    conv = _built(lambda: layers.Conv2D(6, 3, padding="same"), (2, 5, 5, 6), rng)
    norm = _batch_norm(rng)
    x = keras.ops.cast(_inputs(rng, (2, 5, 5, 6)), "bfloat16")
    with torch.no_grad(), AutocastScope("bfloat16"):
        for layer, call in ((conv, conv.call), (norm, lambda t: norm.call(t, training=False))):
            got, expected = prepared_calls.call(layer, x), call(x)
            assert got.dtype == expected.dtype == torch.bfloat16
            # Equal on a CPU; on a GPU within one bfloat16 rounding (another cuDNN algorithm).
            np.testing.assert_allclose(to_numpy(got.float()), to_numpy(expected.float()),
                                       rtol=0 if _on_cpu() else 2**-7, atol=0)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax", "tanh", "relu"])
@pytest.mark.parametrize("hidden_units", [None, 5])
@pytest.mark.parametrize("shape", [(3, 5, 4, 16), (2, 16)])
def test_prepared_routing_equals_its_call(rng, activation, hidden_units, shape):
    """The same torch ops in the same order: equal bit for bit on a CPU."""
    import torch

    layer = layers.Routing(4, activation=activation, temperature=0.7, hidden_units=hidden_units)
    layer.build(shape)
    layer.set_weights([
        np.asarray(w) if w.ndim == 0 else rng.standard_normal(w.shape).astype("float32")
        for w in layer.get_weights()
    ])
    x = _inputs(rng, shape)
    with torch.no_grad():
        got = prepared_calls.call(layer, x)
        np.testing.assert_allclose(to_numpy(got), to_numpy(layer.call(x)), **TOLERANCE)


def test_prepared_routing_follows_the_temperature(monkeypatch, rng):
    """`set_temperature` (the annealing callback's) makes the function again."""
    import torch

    layer = layers.Routing(4, activation="softmax", temperature=2.0)
    layer.build((2, 5, 5, 8))
    made = _count_preparations(monkeypatch, layer)
    x = _inputs(rng, (2, 5, 5, 8))
    with torch.no_grad():
        before = to_numpy(prepared_calls.call(layer, x))
        layer.set_temperature(0.5)
        got = prepared_calls.call(layer, x)
        np.testing.assert_allclose(to_numpy(got), to_numpy(layer.call(x)), **TOLERANCE)
    assert len(made) == 2 and not np.allclose(before, to_numpy(got))


def _count_preparations(monkeypatch, layer):
    made = []
    prepare = layer.prepared_inference

    def spy(inputs):
        made.append(tuple(inputs.shape))
        return prepare(inputs)

    monkeypatch.setattr(layer, "prepared_inference", spy)
    return made


@pytest.mark.parametrize("change", ["assign", "set_weights", "optimizer step"])
def test_prepared_function_is_made_again_when_a_weight_changes(monkeypatch, rng, change):
    import torch

    layer = _built(lambda: layers.Conv2D(6, 3, padding="same"), (2, 7, 7, 4), rng)
    made = _count_preparations(monkeypatch, layer)
    x = _inputs(rng, (2, 7, 7, 4))
    with torch.no_grad():
        prepared_calls.call(layer, x)
        prepared_calls.call(layer, x)
    assert len(made) == 1
    if change == "assign":
        layer.bias.assign(layer.bias.numpy() + 1.0)
    elif change == "set_weights":
        layer.set_weights([w * 2 for w in layer.get_weights()])
    else:
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.apply([keras.ops.ones(layer.kernel.shape)], [layer.kernel])
    with torch.no_grad():
        got = prepared_calls.call(layer, x)
        expected = layer.call(x)
    assert len(made) == 2
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), **TOLERANCE)


def test_prepared_function_is_made_again_for_other_inputs_and_scopes(monkeypatch, rng):
    """Another input shape (other padding), dtype, or autocast scope (float32 inputs in
    a bfloat16 scope read the kernel rounded to bfloat16, as Keras does)."""
    import torch
    from keras.src.backend import AutocastScope

    layer = _built(lambda: layers.Conv2D(6, 3, strides=2, padding="same"), (None, None, None, 4), rng)
    made = _count_preparations(monkeypatch, layer)
    with torch.no_grad():
        for shape, dtype, scope in [
            ((2, 7, 7, 4), "float32", None),
            ((2, 8, 8, 4), "float32", None),
            ((2, 8, 8, 4), "float32", "bfloat16"),
            ((2, 8, 8, 4), "float64", None),
        ]:
            x = _inputs(rng, shape, dtype)
            with AutocastScope(scope) if scope else contextlib.nullcontext():
                got, expected = prepared_calls.call(layer, x), layer.call(x)
            np.testing.assert_allclose(to_numpy(got), to_numpy(expected), **TOLERANCE)
    assert len(made) == 4


def test_no_prepared_function_where_a_gradient_is_wanted_or_variables_are_not_the_layers(rng):
    """Gradient mode with trainable weights (a fine-tuning step with `training=False`),
    a stateless scope (`stateless_call`: the scope's values), and a LoRA kernel (computed,
    not a variable) are each `call`'s."""
    import torch
    from keras.src.backend import StatelessScope

    layer = _built(lambda: layers.Conv2D(6, 3, padding="same"), (2, 7, 7, 4), rng)
    x = _inputs(rng, (2, 7, 7, 4))
    assert prepared_calls.call(layer, x) is None
    with torch.no_grad():
        zeros = [(v, keras.ops.zeros(v.shape)) for v in layer.weights]
        with StatelessScope(state_mapping=zeros):
            assert prepared_calls.call(layer, x) is None
        layer.enable_lora(2)
        assert prepared_calls.call(layer, x) is None


def test_no_prepared_function_for_a_subclass_with_its_own_call(rng):
    import torch

    class Doubled(layers.Conv2D):
        def call(self, inputs):
            return 2 * super().call(inputs)

    layer = _built(lambda: Doubled(6, 3, padding="same"), (2, 7, 7, 4), rng)
    with torch.no_grad():
        assert prepared_calls.call(layer, _inputs(rng, (2, 7, 7, 4))) is None


def test_zoo_model_runs_its_static_layers_prepared(monkeypatch, rng):
    """Every static convolution and normalisation of a zoo model, and every MoD block
    (whose inner layers are folded into its own kept function), runs through its kept
    function under the direct calls: a convolution and the normalisation folded into
    it through their pair's (`folded_normalization`)."""
    import torch

    from keras_dynconv import zoo
    from keras_dynconv.layers.folded_normalization import NormalizedConvolution

    model = zoo.get_model("resnet75_mod", weights=None, input_shape=(64, 64, 3), classes=10)
    used = []
    call = prepared_calls.call

    def spy(layer, inputs, *arguments):
        outputs = call(layer, inputs, *arguments)
        if outputs is not None:
            if isinstance(layer, NormalizedConvolution):
                used.extend([layer.convolution, layer.normalization])
            else:
                used.append(layer)
        return outputs

    monkeypatch.setattr(prepared_calls, "call", spy)
    with torch.no_grad():
        model(rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32"), training=False)
    static = [
        layer for layer in model.layers
        if type(layer) in (layers.Conv2D, layers.DepthwiseConv2D, layers.BatchNormalization,
                           layers.MoDBlock)
    ]
    assert any(type(layer) is layers.MoDBlock for layer in static)
    assert set(map(id, used)) == set(map(id, static))
