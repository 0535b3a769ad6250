"""The native kernels as TensorFlow ops (`keras_dynconv.ops.native_tensorflow`) against
per-example NumPy loops in float64 and against the TensorFlow paths they replace
(values and gradients), and the rules that keep them out of XLA, exports and graphs
of unknown batch size.

Tolerance: conftest's ATOL/RTOL (1e-4): float32 sums of up to 672 products of combined
kernels, in another order than NumPy's and TensorFlow's.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import test_native_pointwise
from conftest import ATOL, BACKEND, RTOL, compiler_here
from keras_dynconv import layers
from keras_dynconv.ops import aggregation
from keras_dynconv.ops import native_tensorflow
from keras_dynconv.ops import portable
from keras_dynconv.ops.taps import output_size_and_padding

pytestmark = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's ops")

OPS = (
    native_tensorflow.DEPTHWISE_OP,
    native_tensorflow.DEPTHWISE_OF_EXPERTS_OP,
    native_tensorflow.POINTWISE_OP,
)

# (batch, H, W, C, kernel, stride, padding, dilation): channels in whole and partial
# vectors, uneven "same" padding (stride 2 on an even side), "valid", a dilation.
DEPTHWISE_CASES = [
    (3, 7, 7, 40, 5, 1, "same", 1),
    (2, 8, 8, 19, 3, 2, "same", 1),
    (2, 9, 6, 32, 3, 1, "valid", 1),
    (2, 9, 9, 24, 3, 1, "same", 2),
    (1, 4, 4, 16, 5, 2, "same", 1),
]
# Batches this large or larger take the 1x1 op.
BATCH = native_tensorflow.POINTWISE_MIN_BATCH
# (batch, H, W, I, O, E): the torch kernel's cases (tests/test_native_pointwise.py).
POINTWISE_CASES = test_native_pointwise.CASES


@pytest.fixture
def native_ops():
    if native_tensorflow.library() is None:
        pytest.skip("no native TensorFlow ops on this machine")


def _random(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _depthwise_loop(inputs, kernels, stride, padding, dilation):
    """float64 reference: `kernels` `[B, kh, kw, C]`."""
    batch, height, width, channels = inputs.shape
    size = kernels.shape[1]
    out_h, (top, bottom) = output_size_and_padding(height, size, stride, dilation, padding)
    out_w, (left, right) = output_size_and_padding(width, size, stride, dilation, padding)
    padded = np.pad(inputs.astype("float64"), ((0, 0), (top, bottom), (left, right), (0, 0)))
    outputs = np.zeros((batch, out_h, out_w, channels))
    for i in range(size):
        for j in range(size):
            window = padded[
                :,
                i * dilation : i * dilation + (out_h - 1) * stride + 1 : stride,
                j * dilation : j * dilation + (out_w - 1) * stride + 1 : stride,
            ]
            outputs += window * kernels[:, None, None, i, j].astype("float64")
    return outputs


def _pointwise_loop(inputs, experts, routing):
    kernels = np.einsum(
        "be,eio->bio", routing.astype("float64"), experts[:, 0, 0].astype("float64")
    )
    return np.einsum("bhwi,bio->bhwo", inputs.astype("float64"), kernels)


def _graph_op_types(function, *specs):
    import tensorflow as tf

    graph = tf.function(function).get_concrete_function(*specs).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_ops_match_a_loop(rng, native_ops, case):
    batch, height, width, channels, size, stride, padding, dilation = case
    inputs = _random(rng, batch, height, width, channels)
    experts = _random(rng, 4, size, size, channels, 1)
    routing = rng.uniform(0, 1, (batch, 4)).astype("float32")
    kernels = np.einsum("be,ehwcm->bhwcm", routing, experts)
    expected = _depthwise_loop(
        inputs, np.einsum("be,ehwc->bhwc", routing.astype("float64"), experts[..., 0]),
        stride, padding, dilation,
    )
    per_example = native_tensorflow.per_example_depthwise_conv(
        inputs, kernels, stride, padding, dilation
    )
    of_experts = native_tensorflow.depthwise_conv_of_experts(
        inputs, experts, routing, stride, padding, dilation
    )
    np.testing.assert_allclose(np.asarray(per_example), expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(of_experts), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", POINTWISE_CASES)
def test_pointwise_op_matches_a_loop(rng, native_ops, case):
    batch, height, width, in_channels, out_channels, num_experts = case
    inputs = _random(rng, batch, height, width, in_channels)
    experts = _random(rng, num_experts, 1, 1, in_channels, out_channels)
    routing = rng.uniform(0, 1, (batch, num_experts)).astype("float32")
    got = native_tensorflow.pointwise_conv_of_experts(inputs, experts, routing)
    np.testing.assert_allclose(
        np.asarray(got), _pointwise_loop(inputs, experts, routing), atol=ATOL, rtol=RTOL
    )


def _gradients(function, tensors, monkeypatch, native):
    """The outputs and the gradients of `sum(outputs ** 2)` with respect to `tensors`,
    with the native ops on or off."""
    import tensorflow as tf

    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "1" if native else "0")
    tensors = [tf.constant(t) for t in tensors]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        outputs = function(*tensors)
        loss = tf.reduce_sum(outputs**2)
    return [np.asarray(outputs)] + [np.asarray(g) for g in tape.gradient(loss, tensors)]


@pytest.mark.parametrize("case", [DEPTHWISE_CASES[0], DEPTHWISE_CASES[1], DEPTHWISE_CASES[2]])
def test_depthwise_gradients_equal_the_tensorflow_path(rng, monkeypatch, native_ops, case):
    """Inputs, experts and routing: a 5x5 kernel (the correlation gradient), a 3x3 one
    with stride 2 (TensorFlow's filter gradient) and "valid" padding. Dilated ones take
    TensorFlow's path (`test_the_ops_apply_only_to_what_they_take`)."""
    batch, height, width, channels, size, stride, padding, dilation = case
    tensors = (
        _random(rng, batch, height, width, channels),
        _random(rng, 4, size, size, channels, 1),
        rng.uniform(0, 1, (batch, 4)).astype("float32"),
    )

    def convolve(inputs, experts, routing):
        return aggregation.per_example_depthwise_conv_of_experts(
            inputs, experts, routing, stride, padding, dilation
        )

    def convolve_combined(inputs, experts, routing):
        kernels = aggregation.combine_experts(routing, experts)
        return aggregation.per_example_depthwise_conv(inputs, kernels, stride, padding, dilation)

    for function in (convolve, convolve_combined):
        native = _gradients(function, tensors, monkeypatch, native=True)
        generic = _gradients(function, tensors, monkeypatch, native=False)
        for got, expected in zip(native, generic):
            np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def test_pointwise_gradients_equal_the_tensorflow_path(rng, monkeypatch, native_ops):
    tensors = (
        _random(rng, BATCH, 5, 3, 40),
        _random(rng, 4, 1, 1, 40, 48),
        rng.uniform(0, 1, (BATCH, 4)).astype("float32"),
    )
    native = _gradients(aggregation.per_example_conv_of_experts, tensors, monkeypatch, True)
    generic = _gradients(aggregation.per_example_conv_of_experts, tensors, monkeypatch, False)
    for got, expected in zip(native, generic):
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def _cond_block():
    """A 1x1 CondConv, a CondConv depthwise and a strided 1x1 CondConv, as in a block."""
    inputs = keras.Input((7, 7, 24))
    x = layers.CondConv2D(48, 1, num_experts=4, name="expand")(inputs)
    x = layers.CondDepthwiseConv2D(5, num_experts=4, padding="same", name="dwconv")(x)
    outputs = layers.CondConv2D(32, 1, strides=2, num_experts=4, name="project")(x)
    return keras.Model(inputs, outputs)


def test_the_ops_are_in_a_traced_model_with_their_static_shapes(native_ops):
    import tensorflow as tf

    model = _cond_block()
    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec((BATCH, 7, 7, 24))
    ).graph
    found = {}
    for op in graph.get_operations():
        if op.type in OPS:
            found.setdefault(op.type, []).append(tuple(op.outputs[0].shape))
    assert found == {
        native_tensorflow.POINTWISE_OP: [(BATCH, 7, 7, 48), (BATCH, 4, 4, 32)],
        native_tensorflow.DEPTHWISE_OF_EXPERTS_OP: [(BATCH, 7, 7, 48)],
    }


def test_the_ops_stay_out_of_xla_exports_and_unknown_batches(native_ops, monkeypatch):
    """Under `jit_compile`, `portable()`, with an unknown batch size (what
    `model.export` traces) and with `KERAS_DYNCONV_NATIVE=0`, the graph has none of the
    ops."""
    import tensorflow as tf

    model = _cond_block()

    def forward(t):
        return model(t, training=False)

    known, unknown = tf.TensorSpec((BATCH, 7, 7, 24)), tf.TensorSpec((None, 7, 7, 24))
    assert _graph_op_types(forward, known) & set(OPS)
    assert not _graph_op_types(forward, unknown) & set(OPS)
    xla_graph = tf.function(forward, jit_compile=True).get_concrete_function(known).graph
    assert not {op.type for op in xla_graph.get_operations()} & set(OPS)
    with portable():
        assert not _graph_op_types(forward, known) & set(OPS)
    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
    assert not _graph_op_types(forward, known) & set(OPS)


def test_saved_models_hold_none_of_the_ops(native_ops, tmp_path):
    """SavedModels run elsewhere (TensorFlow Serving, converters) without this library:
    `tf.saved_model.save` of a function traced before with a known batch size, and
    `model.export` with one, hold none of the ops."""
    import tensorflow as tf

    model = _cond_block()
    images = np.random.default_rng(0).standard_normal((BATCH, 7, 7, 24)).astype("float32")
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda t: model(t, training=False), input_signature=[tf.TensorSpec((BATCH, 7, 7, 24))]
    )
    module.serve(images)
    tf.saved_model.save(module, str(tmp_path / "saved"))
    model.export(
        str(tmp_path / "exported"), verbose=False,
        input_signature=[keras.InputSpec(shape=(BATCH, 7, 7, 24), dtype="float32")],
    )
    for folder in ("saved", "exported"):
        assert b"KerasDynconv" not in (tmp_path / folder / "saved_model.pb").read_bytes()
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(
        np.asarray(restored.serve(images)), np.asarray(model(images)), atol=ATOL, rtol=RTOL
    )


def test_predict_and_a_training_step_equal_the_tensorflow_path(rng, monkeypatch, native_ops):
    """`model.predict` and one `train_on_batch` (SGD) with the ops and without them:
    the same outputs, loss and updated weights."""
    images = _random(rng, BATCH, 7, 7, 24)
    targets = _random(rng, BATCH, 4, 4, 32)
    initial = _cond_block()
    results = {}
    for native in ("1", "0"):
        monkeypatch.setenv("KERAS_DYNCONV_NATIVE", native)
        model = _cond_block()
        model.set_weights(initial.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        predicted = model.predict(images, batch_size=BATCH, verbose=0)
        loss = model.train_on_batch(images, targets)
        results[native] = (predicted, loss, model.get_weights())
    (predicted, loss, weights), (expected, expected_loss, expected_weights) = (
        results["1"], results["0"]
    )
    np.testing.assert_allclose(predicted, expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(loss, expected_loss, atol=ATOL, rtol=RTOL)
    for got, want in zip(weights, expected_weights):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


def test_the_ops_apply_only_to_what_they_take(native_ops, monkeypatch):
    import tensorflow as tf

    def pointwise(shape, out_channels, dtype=tf.float32):
        inputs = tf.zeros(shape, dtype)
        experts = tf.zeros((4, 1, 1, shape[-1], out_channels), dtype)
        return native_tensorflow.pointwise_applies(inputs, experts, tf.zeros((shape[0], 4), dtype))

    assert pointwise((32, 7, 7, 1152), 192)
    assert not pointwise((BATCH - 1, 7, 7, 64), 64)  # TensorFlow's path is faster
    assert not pointwise((BATCH, 7, 7, 64), 40)  # not whole vectors of 16 channels
    assert not pointwise((BATCH, 7, 7, 64), 64, tf.float16)
    assert not pointwise((32, 14, 14, 672), 112)  # many pixels of 17 MB
    depthwise = native_tensorflow.depthwise_applies
    assert depthwise(tf.zeros((2, 7, 7, 8)), tf.zeros((2, 3, 3, 8, 1)))
    assert not depthwise(tf.zeros((2, 7, 7, 8)), tf.zeros((2, 3, 3, 8, 2)))  # multiplier 2
    assert not depthwise(tf.zeros((2, 7, 7, 8)), tf.zeros((2, 3, 3, 8, 1)), 2)  # dilated
    monkeypatch.setenv("KERAS_DYNCONV_NATIVE", "0")
    assert not depthwise(tf.zeros((2, 7, 7, 8)), tf.zeros((2, 3, 3, 8, 1)))


def test_threads_follow_tensorflows_intra_op_setting(native_ops):
    import tensorflow as tf

    configured = tf.config.threading.get_intra_op_parallelism_threads()
    assert native_tensorflow.threads() == (configured or len(os.sched_getaffinity(0)))


@pytest.mark.skipif(not compiler_here(), reason="needs Linux and a C compiler")
def test_the_library_is_built_into_the_cache_and_loaded(tmp_path):
    """In a fresh process (TensorFlow registers an op library once per process): built
    into `$KERAS_DYNCONV_CACHE`, loaded, and the ops run."""
    script = (
        "import numpy as np\n"
        "from keras_dynconv.ops import native_tensorflow as n\n"
        "assert n.library() is not None\n"
        "y = n.pointwise_conv_of_experts(np.ones((1, 2, 2, 3), 'float32'),"
        " np.ones((2, 1, 1, 3, 16), 'float32'), np.ones((1, 2), 'float32'))\n"
        "assert np.allclose(np.asarray(y), 6.0)\n"
    )
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", KERAS_DYNCONV_CACHE=str(tmp_path))
    subprocess.run([sys.executable, "-c", script], env=environment, check=True, timeout=300)
    assert len(list(tmp_path.glob("tensorflow_kernels-*.so"))) == 1
