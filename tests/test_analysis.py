"""Routing analysis: the routing probe, statistics, callbacks and plots.

Routing weights are checked against NumPy written here from each routing
function's input and weights (keras_dynconv/layers/routing.py, `Routing.call`).
"""

import json
import math

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_dynconv import layers, zoo
from keras_dynconv.analysis import (
    collect_routing,
    per_class_mean_routing,
    plot_class_routing,
    routing_entropy,
    routing_model,
    routing_statistics,
)
from keras_dynconv.callbacks import RoutingStatistics, SparsityScheduler
from models import small_model, toy_images

# float32 pooling and matmuls against float64 references, on weights in (0, 1).
ATOL = 1e-5


def numpy_routing(routing_layer, inputs):
    """`activation((relu(GAP(x) @ Wh + bh) @ W + b) / T)` in float64."""
    w = {v.name: to_numpy(v).astype(np.float64) for v in routing_layer.weights}
    x = np.asarray(inputs, dtype=np.float64)
    pooled = x.mean(axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x
    if "hidden_kernel" in w:
        pooled = np.maximum(pooled @ w["hidden_kernel"] + w["hidden_bias"], 0.0)
    logits = (pooled @ w["kernel"] + w["bias"]) / w["temperature"]
    if routing_layer.activation == "softmax":
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    assert routing_layer.activation == "sigmoid"
    return 1.0 / (1.0 + np.exp(-logits))


def routing_functions(model):
    """`{expected output name: (routing layer, layer whose input it reads)}`."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, layers.Routing):
            found[layer.name] = (layer, layer)
        elif isinstance(layer, layers.ExpertLayer) and layer.routing_fn is not None:
            found[f"{layer.name}/routing"] = (layer.routing_fn, layer)
    return found


def expected_routing(model, images):
    """NumPy routing of every routing function, from its input read by a sub-model."""
    functions = routing_functions(model)
    reader = keras.Model(model.input, [owner.input for _, owner in functions.values()])
    inputs = reader.predict_on_batch(images)
    return {
        name: numpy_routing(routing, to_numpy(x))
        for (name, (routing, _)), x in zip(functions.items(), inputs)
    }


def normalised_entropy(weights):
    shares = weights / weights.sum(axis=1, keepdims=True)
    return float((-(shares * np.log(shares)).sum(axis=1) / np.log(weights.shape[1])).mean())


@pytest.fixture(scope="module")
def condconv_zoo_model():
    """Built once per module: on JAX every new weight shape compiles an initializer.
    Seeded here: a module fixture is built before the per-test seed."""
    keras.utils.set_random_seed(1234)
    return zoo.get_model(
        "condconv_mobilenet_v1", alpha=0.25, num_experts=2, classes=4, input_shape=(32, 32, 3)
    )


def dynamic_model():
    """Several layers owning a softmax routing with a hidden layer, a shared
    sigmoid Routing and a CondDense head with its own routing."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.DynamicConv2D(8, 3, num_kernels=3, reduction=2, name="dyn")(x)
    x = layers.DynamicDepthwiseConv2D(3, num_kernels=2, name="dyn_dw")(x)
    r = layers.Routing(2, name="shared_routing")(x)
    x = layers.CondConv2D(6, 1, num_experts=2, routing=None, name="cond")(x, routing_weights=r)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = layers.CondDense(3, num_experts=2, routing="softmax", routing_hidden_units=5,
                               temperature=2.0, name="head")(x)
    model = keras.Model(inputs, outputs)
    # Temperatures are read from the variable the annealing callback sets.
    model.get_layer("dyn").set_routing_temperature(7.0)
    model.get_layer("dyn_dw").set_routing_temperature(0.5)
    return model


def images(num, size=8, seed=0):
    return np.random.default_rng(seed).normal(size=(num, size, size, 3)).astype("float32")


# --- routing_model ------------------------------------------------------------------


def test_routing_model_on_a_zoo_condconv_model(condconv_zoo_model):
    model = condconv_zoo_model
    rng = np.random.default_rng(0)
    # Raw [0, 255] pixels, one colour per image so that pooled features differ.
    x = (rng.uniform(0, 255, (4, 1, 1, 3)) + rng.normal(0, 20, (4, 32, 32, 3))).astype("float32")
    # At initialisation (BatchNorm statistics 0 / 1) activations shrink through the
    # blocks and every routing sits at sigmoid(bias). Scale each routing function's
    # weights to its pooled input, layer after layer, so that the routing varies
    # between images and a wrong formula would show.
    functions = routing_functions(model)
    reader = keras.Model(model.input, [owner.input for _, owner in functions.values()])
    for index, (routing_layer, _) in enumerate(functions.values()):
        inputs = to_numpy(reader.predict_on_batch(x)[index]).astype(np.float64)
        pooled = inputs.mean(axis=tuple(range(1, inputs.ndim - 1))) if inputs.ndim > 2 else inputs
        kernel = rng.normal(size=routing_layer.kernel.shape) / (
            pooled.std(axis=0)[:, None] + 1e-30) / pooled.shape[1] ** 0.5
        routing_layer.kernel.assign(kernel.astype("float32"))
        routing_layer.bias.assign((rng.normal(0, 0.5, kernel.shape[1]) - pooled.mean(0) @ kernel)
                                  .astype("float32"))
    probe = routing_model(model)
    routing = probe.predict_on_batch(x)
    shared = [l.name for l in model.layers if isinstance(l, layers.Routing)]
    assert len(shared) >= 2 and all(name.endswith("_routing") for name in shared)
    # Keras sorts a dict of outputs by key; collect_routing keeps the layer order.
    assert sorted(routing) == sorted(shared + ["predictions/routing"])
    assert list(collect_routing(probe, x)[0]) == shared + ["predictions/routing"]
    expected = expected_routing(model, x)
    for name, values in routing.items():
        assert to_numpy(values).shape == (4, 2)
        np.testing.assert_allclose(to_numpy(values), expected[name], atol=ATOL, err_msg=name)
    for name, values in expected.items():  # differs between images; sigmoid: no sum to one
        assert np.ptp(values, axis=0).max() > 0.02, name
        assert not np.allclose(values.sum(axis=1), 1.0), name


def test_routing_model_reads_softmax_attention_with_hidden_layer_and_temperature():
    model = dynamic_model()
    probe = routing_model(model)
    x = images(5)
    routing = probe.predict_on_batch(x)
    assert sorted(routing) == ["dyn/routing", "dyn_dw/routing", "head/routing", "shared_routing"]
    shapes = {name: to_numpy(v).shape for name, v in routing.items()}
    assert shapes == {"dyn/routing": (5, 3), "dyn_dw/routing": (5, 2),
                      "shared_routing": (5, 2), "head/routing": (5, 2)}
    expected = expected_routing(model, x)
    for name, values in routing.items():
        np.testing.assert_allclose(to_numpy(values), expected[name], atol=ATOL, err_msg=name)
    np.testing.assert_allclose(expected["dyn/routing"].sum(axis=1), 1.0, rtol=1e-12)
    # The probe shares the model's weights: a new temperature shows at once.
    model.get_layer("dyn").set_routing_temperature(1.0)
    again = to_numpy(probe.predict_on_batch(x)["dyn/routing"])
    np.testing.assert_allclose(again, expected_routing(model, x)["dyn/routing"], atol=ATOL)
    assert not np.allclose(again, to_numpy(routing["dyn/routing"]), atol=1e-3)
    # A subset by name.
    subset = routing_model(model, names=["head/routing"])
    assert list(subset.predict_on_batch(x)) == ["head/routing"]


def test_routing_model_errors():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)),
                        name="plain")
    with pytest.raises(ValueError, match="Model 'plain' has no routing function"):
        routing_model(plain)
    with pytest.raises(ValueError, match=r"\['nope'\] are not routing functions"):
        routing_model(dynamic_model(), names=["head/routing", "nope"])

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional Keras model"):
        routing_model(Subclassed())


# --- statistics ---------------------------------------------------------------------


def test_routing_entropy():
    assert routing_entropy(np.full((5, 4), 0.25)) == pytest.approx(1.0, abs=1e-12)
    assert routing_entropy(np.full((3, 4), 0.8)) == pytest.approx(1.0, abs=1e-12)  # sigmoid
    assert routing_entropy(np.eye(4)) == pytest.approx(0.0, abs=1e-12)
    assert routing_entropy(np.ones((3, 1))) == 0.0  # one expert: nothing to spread
    # By hand, E = 4: [.5, .5, 0, 0] -> ln 2 / ln 4 = 0.5;
    # [.7, .1, .1, .1] -> -(0.7 ln 0.7 + 0.3 ln 0.1) / ln 4 = 0.94044799 / 1.38629436.
    hand = np.array([[0.5, 0.5, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]])
    assert routing_entropy(hand) == pytest.approx((0.5 + 0.94044799 / 1.38629436) / 2, rel=1e-7)
    # Sigmoid rows are normalised first: any positive scale gives the same value.
    sigmoid = np.random.default_rng(0).uniform(0.05, 0.95, (20, 3))
    assert routing_entropy(sigmoid) == pytest.approx(normalised_entropy(sigmoid), rel=1e-12)
    assert routing_entropy(3.7 * sigmoid) == pytest.approx(routing_entropy(sigmoid), rel=1e-12)
    assert 0 < routing_entropy(sigmoid) < 1


def test_per_class_mean_routing_and_routing_statistics():
    rng = np.random.default_rng(0)
    routing = rng.uniform(size=(30, 3)).astype(np.float32)
    labels = rng.choice([0, 1, 3], size=30)
    means = per_class_mean_routing(routing, labels, num_classes=5)
    assert means.shape == (5, 3)
    for class_id in range(5):
        rows = [routing[i] for i in range(30) if labels[i] == class_id]
        if rows:
            np.testing.assert_allclose(means[class_id], np.mean(rows, axis=0), rtol=1e-6)
        else:
            assert np.all(np.isnan(means[class_id]))
    assert per_class_mean_routing(routing, labels).shape == (4, 3)  # max label + 1

    statistics = routing_statistics({"a": routing, "b": routing[:, :2] * 2})
    assert set(statistics) == {"a", "b"}
    np.testing.assert_allclose(statistics["a"]["mean"], routing.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(statistics["a"]["std"], routing.std(axis=0), rtol=1e-5)
    assert len(statistics["b"]["mean"]) == 2
    assert statistics["b"]["entropy"] == pytest.approx(
        normalised_entropy(routing[:, :2].astype(np.float64)), rel=1e-6
    )


def test_collect_routing_from_arrays_tuples_and_datasets():
    import tensorflow as tf

    model = dynamic_model()
    x = images(12)
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    one_hot = np.eye(3, dtype="float32")[labels]
    expected = expected_routing(model, x)

    def check(routing, rows):
        assert list(routing) == list(expected)
        for name, values in routing.items():
            assert values.dtype == np.float32
            np.testing.assert_allclose(values, expected[name][:rows], atol=ATOL, err_msg=name)

    routing, got = collect_routing(model, x, batch_size=4)
    check(routing, 12)
    assert got is None
    routing, got = collect_routing(model, (x, one_hot), batch_size=4)
    check(routing, 12)
    np.testing.assert_array_equal(got, labels)
    # Integer labels as a column, as keras.datasets gives them.
    _, got = collect_routing(model, (x, labels[:, None]), batch_size=4)
    np.testing.assert_array_equal(got, labels)

    probe = routing_model(model)  # a probe is reused as is
    dataset = tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(4)
    routing, got = collect_routing(probe, dataset)
    check(routing, 12)
    np.testing.assert_array_equal(got, labels)
    routing, got = collect_routing(probe, dataset, max_batches=2)
    check(routing, 8)
    np.testing.assert_array_equal(got, labels[:8])
    routing, got = collect_routing(probe, tf.data.Dataset.from_tensor_slices(x).batch(4))
    check(routing, 12)
    assert got is None
    routing, _ = collect_routing(probe, (x, labels), max_batches=1, batch_size=4)
    check(routing, 4)
    routing, _ = collect_routing(model, x, names=["shared_routing"], batch_size=4)
    assert list(routing) == ["shared_routing"]


# --- callbacks ----------------------------------------------------------------------


def test_routing_statistics_callback_logs_entropy_history_and_json_lines(tmp_path):
    import tensorflow as tf

    train_x, train_y = toy_images(num=32)
    # A shared Routing (auto-named "routing") and a CondDense head owning one.
    model = small_model(["cond_conv_shared"], cond_head=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((train_x[:24], train_y[:24])).batch(8)
    path = tmp_path / "routing.jsonl"
    stats = RoutingStatistics(data, max_batches=2, path=str(path))
    history = model.fit(train_x, train_y, batch_size=16, epochs=2, verbose=0, callbacks=[stats])

    assert [record["epoch"] for record in stats.history] == [0, 1]
    expected = expected_routing(model, train_x[:16])  # 2 batches of 8; final weights
    last = stats.history[-1]["layers"]
    assert list(last) == list(expected) == ["routing", "cond_dense/routing"]
    for name, weights in expected.items():
        assert len(last[name]["mean"]) == weights.shape[1]
        np.testing.assert_allclose(last[name]["mean"], weights.mean(axis=0), atol=ATOL)
        np.testing.assert_allclose(last[name]["std"], weights.std(axis=0), atol=ATOL)
        assert last[name]["entropy"] == pytest.approx(normalised_entropy(weights), abs=ATOL)
    logged = history.history["routing_entropy"]
    assert len(logged) == 2 and all(0 < value <= 1 for value in logged)
    assert logged[-1] == pytest.approx(
        np.mean([normalised_entropy(w) for w in expected.values()]), abs=ATOL
    )
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == stats.history


def test_sparsity_scheduler_logs_the_penalty_of_every_sparse_layer():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.SparseDynamicConv2D(6, 3, num_kernels=2, sparsity_penalty=0.01, name="sparse_a")(x)
    x = layers.SparseDynamicConv2D(6, 3, num_kernels=2, sparsity_penalty=0.3, name="sparse_b")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    sparse = [model.get_layer("sparse_a"), model.get_layer("sparse_b")]
    # Layer a keeps ~70% of its weights (threshold between two |w|), b all of them.
    magnitudes = np.sort(np.abs(to_numpy(sparse[0].kernel)).ravel())
    cut = int(0.3 * len(magnitudes))
    sparse[0].threshold.assign((magnitudes[cut - 1] + magnitudes[cut]) / 2)
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_x, train_y = toy_images(num=16, image_size=8)
    scheduler = SparsityScheduler(final_density=0.5, epochs=2, phases=1)
    history = model.fit(train_x, train_y, batch_size=8, epochs=2, verbose=0,
                        callbacks=[scheduler]).history
    assert history["target_density"] == [1.0, 0.5]

    # The mask keeps |w| > threshold (a 0/1 rounding of a sigmoid sharpened 1024x).
    densities = [
        float(np.mean(np.abs(to_numpy(layer.kernel)) > float(to_numpy(layer.threshold))))
        for layer in sparse
    ]
    assert 0.6 < densities[0] < 0.8 and densities[1] > 0.9
    expected = 0.01 * max(densities[0] - 0.5, 0.0) + 0.3 * max(densities[1] - 0.5, 0.0)
    assert history["sparsity_penalty"][0] == 0.0  # target 1: nothing is too dense
    assert history["sparsity_penalty"][-1] == pytest.approx(expected, rel=1e-6)
    assert history["density"][-1] == pytest.approx(np.mean(densities), rel=1e-6)


# --- plots --------------------------------------------------------------------------


def test_plot_class_routing_writes_a_png_with_one_panel_per_layer(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    first = rng.uniform(size=(5, 3))
    last = rng.uniform(size=(5, 2))
    last[3] = np.nan  # a class absent from the data
    dpi = 120  # what plot_class_routing saves with
    sizes = {}
    for panels in ({"first": first, "last": last}, {"first": first}):
        path = str(tmp_path / f"routing{len(panels)}.png")
        returned = plot_class_routing(panels, path, class_names=list("abcde"), title="t")
        assert returned == path
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert image[..., :3].std() > 0.05  # not blank
        sizes[len(panels)] = image.shape[:2]
    # Figure size (1.2 + 3.2 * panels) x (1.4 + 0.32 * classes) inches.
    for panels, (height, width) in sizes.items():
        assert abs(width - (1.2 + 3.2 * panels) * dpi) <= 1, sizes
        assert abs(height - (1.4 + 0.32 * 5) * dpi) <= 1, sizes
    assert math.isclose(sizes[2][1] / sizes[1][1], 7.6 / 4.4, rel_tol=0.01)
