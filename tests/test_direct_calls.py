"""`keras_dynconv.layers.direct_calls` and `keras_dynconv.zoo.ZooModel`: layers called
directly (a MoD block's Sequential, a zoo model's graph) equal the same layers called
through Keras (tolerance: conftest.ATOL unless stated), and the direct calls are taken
exactly where nothing of Keras' call machinery has work to do."""

import keras
import numpy as np
import pytest

from conftest import ATOL, BACKEND, RTOL, to_numpy
from keras_dynconv import layers
from keras_dynconv.layers import direct_calls


def _bottleneck(channels=8, activity_regularizer=None):
    """The MoD ResNets' inner block (zoo/resnet.py), with random statistics."""
    block = keras.Sequential([
        layers.Conv2D(channels // 4, 1, activity_regularizer=activity_regularizer),
        layers.BatchNormalization(epsilon=1.001e-5),
        keras.layers.ReLU(),
        layers.Conv2D(channels // 4, 3, padding="same"),
        layers.BatchNormalization(epsilon=1.001e-5),
        keras.layers.ReLU(),
        layers.Conv2D(channels, 1),
        layers.BatchNormalization(epsilon=1.001e-5),
    ])
    block.build((None, 6, 6, channels))
    rng = np.random.default_rng(0)
    block.set_weights([
        rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
        else rng.standard_normal(w.shape).astype("float32")
        for w in block.weights
    ])
    return block


def _images(channels=8):
    return keras.ops.convert_to_tensor(
        np.random.default_rng(1).standard_normal((2, 6, 6, channels)).astype("float32")
    )


def _taken(monkeypatch):
    """Records whether each `run` took the direct calls."""
    decisions = []
    decide = direct_calls._sequential_runs_directly

    def spy(*args):
        decisions.append(decide(*args))
        return decisions[-1]

    monkeypatch.setattr(direct_calls, "_sequential_runs_directly", spy)
    return decisions


@pytest.mark.parametrize("training", [False, None, True])
def test_run_equals_calling_the_block(monkeypatch, training):
    """Inference (`training` False or None) is direct on torch; a training step goes
    through Keras (batch statistics, moving averages updated identically)."""
    block, twin = _bottleneck(), _bottleneck()
    images = _images()
    decisions = _taken(monkeypatch)
    got = to_numpy(direct_calls.run(block, images, training=training))
    expected = to_numpy(twin(images, training=training))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    for ours, theirs in zip(block.weights, twin.weights):
        np.testing.assert_allclose(to_numpy(ours), to_numpy(theirs), atol=ATOL, rtol=RTOL)
    assert decisions == [BACKEND == "torch" and not training]


def test_mod_block_runs_its_block_directly_with_the_same_result(monkeypatch):
    block = _bottleneck(channels=4)
    mod = layers.MoDBlock(block, capacity=4, reduction=2)
    images = _images(channels=16)
    mod(images)
    decisions = _taken(monkeypatch)
    direct = to_numpy(mod(images, training=False))
    monkeypatch.setattr(direct_calls, "_sequential_runs_directly", lambda *args: False)
    through_keras = to_numpy(mod(images, training=False))
    np.testing.assert_allclose(direct, through_keras, atol=ATOL, rtol=RTOL)
    assert decisions == [BACKEND == "torch"]


class _SequentialSubclass(keras.Sequential):
    pass


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
@pytest.mark.parametrize("case", ["mixed-precision", "subclass", "unbuilt"])
def test_keras_calls_the_block_where_its_machinery_has_work(monkeypatch, case):
    if case == "mixed-precision":
        keras.config.set_dtype_policy("mixed_float16")
        block = _bottleneck()
    elif case == "subclass":
        block = _SequentialSubclass(_bottleneck().layers)
        block.build((None, 6, 6, 8))
    else:
        block = keras.Sequential([layers.Conv2D(8, 1)])
    images = _images()
    decisions = _taken(monkeypatch)
    got = direct_calls.run(block, images, training=False)
    assert decisions == [False]
    np.testing.assert_allclose(
        to_numpy(got), to_numpy(block(images, training=False)), atol=1e-2, rtol=1e-2
    )


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
@pytest.mark.parametrize("case", ["activity-regularizer", "torch-hook", "nested"])
def test_keras_calls_the_layers_whose_machinery_has_work(monkeypatch, case):
    """The block runs directly; the one layer with work for `__call__` goes through it
    (the hook runs, the regularizer's loss is recorded)."""
    if case == "activity-regularizer":
        block = _bottleneck(activity_regularizer="l2")
        keras_layer = block.layers[0]
    elif case == "torch-hook":
        block = _bottleneck()
        keras_layer = block.layers[2]
        keras_layer.register_forward_hook(lambda module, inputs, outputs: outputs * 0)
    else:
        block = keras.Sequential([_bottleneck(), keras.layers.ReLU()])
        block.build((None, 6, 6, 8))
        keras_layer = block.layers[0]
    images = _images()
    decisions = _taken(monkeypatch)
    direct = _direct_layers(monkeypatch)
    got = to_numpy(direct_calls.run(block, images, training=False))
    losses = [to_numpy(loss) for loss in block.losses]
    assert decisions == [True] and keras_layer.name not in direct and direct
    np.testing.assert_allclose(got, to_numpy(block(images, training=False)), atol=ATOL, rtol=RTOL)
    if case == "activity-regularizer":
        assert len(losses) == 1 and losses[0] > 0


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
@pytest.mark.filterwarnings("ignore:.*does not support masking")
def test_keras_calls_the_block_for_masked_or_symbolic_inputs_and_in_autocast(monkeypatch):
    """Symbolic: a Keras tensor, or torch's shape inference (meta tensors in a symbolic
    scope)."""
    from keras.src.backend import AutocastScope
    from keras.src.backend.common.keras_tensor import KerasTensor
    from keras.src.backend.common.symbolic_scope import SymbolicScope

    block = _bottleneck()
    decisions = _taken(monkeypatch)
    masked = _images()
    masked._keras_mask = keras.ops.ones((2, 6, 6), dtype="bool")
    direct_calls.run(block, masked, training=False)
    symbolic = direct_calls.run(block, KerasTensor((None, 6, 6, 8)), training=False)
    assert tuple(symbolic.shape) == (None, 6, 6, 8)
    with SymbolicScope():
        direct_calls.run(block, _images(), training=False)
    with AutocastScope("float16"):
        direct_calls.run(block, _images(), training=False)
    assert decisions == [False, False, False, False]


def _zoo_model_and_functional_twin(name, **arguments):
    """A zoo model at 64x64 and a plain functional `keras.Model` of the same graph
    (the same layers and weights)."""
    from keras_dynconv import zoo

    model = zoo.get_model(name, weights=None, input_shape=(64, 64, 3), classes=10, **arguments)
    return model, keras.Model(model.inputs[0], model.outputs[0])


def _direct_layers(monkeypatch):
    """Counts the layers `inference_call` calls directly."""
    counts = []
    plain = direct_calls._plain

    def spy(layer, tensors, container=False):
        result = plain(layer, tensors, container)
        if result and not container:
            counts.append(layer.name)
        return result

    monkeypatch.setattr(direct_calls, "_plain", spy)
    return counts


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's (elsewhere a "
                    "ZooModel is Keras' functional model: tests/test_zoo.py)")
@pytest.mark.parametrize("name, arguments", [
    ("condconv_efficientnet_b0", dict(num_experts=2)),  # CondConv layers, routing kwargs
    ("resnet75_mod", {}),  # conv biases, MoD blocks (a layer with a block inside)
])
def test_zoo_model_inference_equals_the_functional_model(monkeypatch, rng, name, arguments):
    from keras_dynconv.zoo import ZooModel

    model, functional = _zoo_model_and_functional_twin(name, **arguments)
    assert isinstance(model, ZooModel) and type(functional) is not ZooModel
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    direct = _direct_layers(monkeypatch)
    got = to_numpy(model(images, training=False))
    expected_direct = len(direct)
    expected = to_numpy(functional(images, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)
    # Every layer but the input is plain; a MoD block's inner layers count too.
    assert expected_direct >= len(model.layers) - 1


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_zoo_model_training_step_is_keras(rng):
    """Batch statistics and moving averages as a functional model's."""
    from keras_dynconv import zoo

    model, _ = _zoo_model_and_functional_twin("resnet50")
    twin = zoo.get_model("resnet50", weights=None, input_shape=(64, 64, 3), classes=10)
    twin.set_weights(model.get_weights())
    functional = keras.Model(twin.inputs[0], twin.outputs[0])
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(model(images, training=True)),
                               to_numpy(functional(images, training=True)), atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(model.weights, twin.weights):
        np.testing.assert_allclose(to_numpy(ours), to_numpy(theirs), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_zoo_model_calls_hooked_layers_through_keras_and_runs_mixed_precision(
    monkeypatch, rng
):
    """A torch forward hook still runs. Under mixed precision the layers run directly
    in the model's autocast scope, but for the first, whose float32 images Keras
    casts."""
    model, functional = _zoo_model_and_functional_twin("resnet50")
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    reference = to_numpy(model(images, training=False))
    hooked = model.get_layer("conv5_block3_out")
    handle = hooked.register_forward_hook(lambda module, inputs, outputs: outputs * 0)
    direct = _direct_layers(monkeypatch)
    got = to_numpy(model(images, training=False))
    expected = to_numpy(functional(images, training=False))
    handle.remove()
    assert "conv5_block3_out" not in direct and len(direct) > 0
    np.testing.assert_allclose(got, expected)
    assert not np.allclose(got, reference)

    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed, mixed_functional = _zoo_model_and_functional_twin("resnet50")
    mixed.set_weights(model.get_weights())
    direct.clear()
    got = mixed(images, training=False)
    through_keras = {layer.name for layer in mixed.layers[1:]} - set(direct)
    expected = mixed_functional(images, training=False)
    assert through_keras == {mixed.layers[1].name}
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(to_numpy(keras.ops.cast(got, "float32")),
                                  to_numpy(keras.ops.cast(expected, "float32")))


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_zoo_model_calls_layers_that_change_the_autocast_scope_through_keras(monkeypatch):
    """In a mixed bfloat16 model: a float32 layer (Keras opens a float32 scope for it)
    and a layer with `autocast=False` (Keras clears the scope: its variables are read in
    float32, so its output is float32, which the next layer's call casts) go through
    Keras; the mixed layers with bfloat16 inputs run directly."""
    from keras_dynconv.zoo import ZooModel

    keras.config.set_dtype_policy("mixed_bfloat16")
    inputs = keras.Input((6, 6, 8))
    x = layers.Conv2D(8, 1, name="first")(inputs)
    x = keras.layers.Dense(8, name="mixed_dense")(x)
    x = keras.layers.Dense(8, autocast=False, name="no_autocast")(x)
    x = keras.layers.Dense(8, name="after_no_autocast")(x)
    x = keras.layers.Dense(8, name="mixed_again")(x)
    outputs = keras.layers.Dense(2, dtype="float32", name="float32_dense")(x)
    model, functional = ZooModel(inputs, outputs), keras.Model(inputs, outputs)
    direct = _direct_layers(monkeypatch)
    images = _images()
    got = model(images, training=False)
    assert set(direct) == {"mixed_dense", "mixed_again"}
    expected = functional(images, training=False)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(to_numpy(got), to_numpy(expected))


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_zoo_model_calls_layers_of_other_dtypes_through_keras(monkeypatch):
    """In a float32 model: a second mixed-precision layer in a row gets inputs of its
    compute dtype but must read its float32 variables in it (autocast); a float64 layer
    must have its inputs converted."""
    from keras_dynconv.zoo import ZooModel

    inputs = keras.Input((6, 6, 8))
    x = layers.Conv2D(8, 1, dtype="mixed_bfloat16", name="first_mixed")(inputs)
    x = keras.layers.Dense(4, dtype="mixed_bfloat16", name="second_mixed")(x)
    x = keras.layers.Dense(4, name="float32_dense")(x)
    outputs = keras.layers.Dense(2, dtype="float64", name="float64_dense")(x)
    model, functional = ZooModel(inputs, outputs), keras.Model(inputs, outputs)
    direct = _direct_layers(monkeypatch)
    got = model(_images(), training=False)
    assert direct == []
    expected = functional(_images(), training=False)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_zoo_model_calls_masking_and_masked_layers_through_keras(monkeypatch):
    """A layer that makes a mask, and one whose input carries it, go through Keras (the
    average skips the masked steps)."""
    from keras_dynconv.zoo import ZooModel

    inputs = keras.Input((5, 3))
    masked = keras.layers.Masking(0.0, name="masking")(inputs)
    outputs = keras.layers.GlobalAveragePooling1D(name="average")(
        keras.layers.Dense(3, name="dense")(masked)
    )
    model, functional = ZooModel(inputs, outputs), keras.Model(inputs, outputs)
    sequences = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    sequences[:, 3:] = 0.0
    direct = _direct_layers(monkeypatch)
    got = to_numpy(model(sequences, training=False))
    assert direct == []
    expected = to_numpy(functional(sequences, training=False))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    unmasked = to_numpy(keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(
        model.get_layer("dense")(inputs)))(sequences))
    assert not np.allclose(got, unmasked)


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
@pytest.mark.filterwarnings("ignore:Layer InputLayer does not have a `quantize`")
def test_zoo_model_calls_quantized_layers_through_keras(monkeypatch):
    from keras_dynconv.zoo import ZooModel

    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(4, name="dense")(keras.layers.Dense(8, name="first")(inputs))
    model, functional = ZooModel(inputs, outputs), keras.Model(inputs, outputs)
    model.quantize("int8")
    vectors = np.random.default_rng(0).standard_normal((2, 8)).astype("float32")
    direct = _direct_layers(monkeypatch)
    got = to_numpy(model(vectors, training=False))
    assert direct == []
    np.testing.assert_allclose(got, to_numpy(functional(vectors, training=False)),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(BACKEND != "torch", reason="every backend: tests/test_zoo.py")
def test_zoo_model_round_trips_through_keras_files(tmp_path, rng):
    from keras_dynconv.zoo import ZooModel

    model, _ = _zoo_model_and_functional_twin("mobilenet_v2_mod")
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(reloaded) is ZooModel
    assert type(ZooModel.from_config(model.get_config())) is ZooModel
    np.testing.assert_allclose(to_numpy(reloaded(images, training=False)),
                               to_numpy(model(images, training=False)), atol=1e-6, rtol=1e-5)


class _TrainingByDefault(keras.layers.Layer):
    """A layer whose `call` defaults to training (as Monte Carlo dropout layers do)."""

    def call(self, inputs, training=True):
        return inputs + (1.0 if training else 0.0)


@pytest.mark.parametrize("training", [None, False])
def test_zoo_model_passes_training_as_keras_does(monkeypatch, training):
    """`training=None` leaves each layer its own default, as Keras' functional model
    does; `training=False` reaches every layer."""
    from keras_dynconv.zoo import ZooModel

    inputs = keras.Input((6, 6, 8))
    outputs = _TrainingByDefault()(layers.Conv2D(8, 1)(inputs))
    model = ZooModel(inputs, outputs)
    functional = keras.Model(inputs, outputs)
    direct = _direct_layers(monkeypatch)
    got = to_numpy(model(_images(), training=training))
    np.testing.assert_allclose(got, to_numpy(functional(_images(), training=training)),
                               atol=ATOL, rtol=RTOL)
    assert len(direct) == (2 if BACKEND == "torch" else 0)


def test_no_direct_calls_without_the_keras_internals_they_consult(monkeypatch):
    """A Keras that moved the private functions `direct_calls` imports keeps working,
    through `__call__`."""
    monkeypatch.setattr(direct_calls, "KERAS_INTERNALS_FOUND", False)
    block = _bottleneck()
    decisions = _taken(monkeypatch)
    got = to_numpy(direct_calls.run(block, _images(), training=False))
    np.testing.assert_allclose(got, to_numpy(block(_images(), training=False)),
                               atol=ATOL, rtol=RTOL)
    assert decisions == [False]

    from keras_dynconv.zoo import ZooModel
    from keras_dynconv.zoo import model as zoo_model

    monkeypatch.setattr(direct_calls, "KERAS_INTERNALS_FOUND", True)
    monkeypatch.setattr(zoo_model, "functional_operation_fn", None)
    inputs = keras.Input((6, 6, 8))
    outputs = layers.Conv2D(8, 1)(inputs)
    model = ZooModel(inputs, outputs)
    direct = _direct_layers(monkeypatch)
    np.testing.assert_allclose(to_numpy(model(_images(), training=False)),
                               to_numpy(keras.Model(inputs, outputs)(_images())),
                               atol=ATOL, rtol=RTOL)
    assert direct == []


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_direct_calls_without_the_keras_internals_of_the_plan_and_prepared_calls(monkeypatch):
    """Without the Keras class `graph_plan` imports, Keras walks the graph with the
    direct calls; without what `prepared_calls` imports, layers run their `call`."""
    import torch

    from keras_dynconv.layers import prepared_calls
    from keras_dynconv.zoo import ZooModel
    from keras_dynconv.zoo import graph_plan

    monkeypatch.setattr(graph_plan, "KERAS_INTERNALS_FOUND", False)
    monkeypatch.setattr(prepared_calls, "KERAS_INTERNALS_FOUND", False)
    monkeypatch.setattr(graph_plan, "run", lambda *args: pytest.fail("graph_plan.run used"))
    prepared = []
    prepare = layers.Conv2D.prepared_inference
    monkeypatch.setattr(layers.Conv2D, "prepared_inference",
                        lambda self, x: prepared.append(self) or prepare(self, x))
    inputs = keras.Input((6, 6, 8))
    outputs = layers.Conv2D(8, 1)(inputs)
    model = ZooModel(inputs, outputs)
    direct = _direct_layers(monkeypatch)
    with torch.no_grad():
        got = model(_images(), training=False)
    np.testing.assert_allclose(to_numpy(got), to_numpy(keras.Model(inputs, outputs)(_images())),
                               atol=ATOL, rtol=RTOL)
    assert len(direct) == 1 and prepared == []


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
def test_zoo_model_graph_plan_passes_nested_arguments_and_several_outputs(monkeypatch):
    """`graph_plan.run`: a list argument (`Concatenate`), a layer with two outputs and
    a model whose outputs are a dict, as Keras' walk gives them."""
    from keras_dynconv.zoo import ZooModel
    from keras_dynconv.zoo import graph_plan

    inputs = keras.Input((6, 6, 8))
    left = layers.Conv2D(4, 1, name="left")(inputs)
    right = layers.Conv2D(4, 3, padding="same", name="right")(inputs)
    joined = keras.layers.Concatenate(name="joined")([left, right])
    doubled, negated = keras.layers.Lambda(lambda x: [2 * x, -x], name="two_outputs")(joined)
    outputs = {"sum": keras.layers.Add(name="sum")([doubled, negated]), "negated": negated}
    model, functional = ZooModel(inputs, outputs), keras.Model(inputs, outputs)
    walks = []
    run = graph_plan.run
    monkeypatch.setattr(graph_plan, "run", lambda *args, **kwargs: walks.append(1) or run(*args, **kwargs))
    got = model(_images(), training=False)
    expected = functional(_images(), training=False)
    assert walks and set(got) == {"sum", "negated"}
    for key in expected:
        np.testing.assert_allclose(to_numpy(got[key]), to_numpy(expected[key]), atol=ATOL, rtol=RTOL)
