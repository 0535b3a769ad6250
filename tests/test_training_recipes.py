"""Training recipes: the recipe table, schedules, optimizers, compile and EMA.

Schedules, weight decay, the routing learning rate and the EMA are checked against
formulas written here, on the variables the optimizers update.
"""

import dataclasses
import math

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from keras_dynconv import layers, zoo
from keras_dynconv.callbacks import RoutingTemperatureScheduler, SparsityScheduler
from keras_dynconv.training import (
    RECIPES,
    Recipe,
    RoutingOptimizerSelector,
    ScaledSchedule,
    WarmupExponentialDecay,
    build_optimizer,
    classification_loss_and_metrics,
    compile_with_recipe,
    ema_weights,
    get_recipe,
    is_routing_variable,
    learning_rate_schedule,
    recipe_callbacks,
)
from models import small_model, toy_images

# torch.compile of a training step takes minutes on 2 CPU cores (see test_training).
JIT = "auto" if BACKEND != "torch" else False

# Variables the recipes leave out of weight decay, by their own name (Keras matches
# the exclusion patterns against `variable.name`).
NOT_DECAYED = {"bias", "hidden_bias", "gamma", "beta", "threshold"}

# Zoo model -> recipe family, from the sources each recipe cites.
EXPECTED_FAMILY = {
    "ssd300_mobilenet_v1": "ssd",
    "condconv_ssd300_mobilenet_v1": "ssd",
    "condconv_efficientnet_b0": "condconv_efficientnet",
    "condconv_efficientnet_b0_depth": "condconv_efficientnet",
    "condconv_efficientnet_b1": "condconv_efficientnet",
    "condconv_efficientnet_lite0": "condconv_efficientnet",
    "condconv_mnasnet_a1": "condconv_efficientnet",
    "condconv_mobilenet_v1": "mobilenet",
    "condconv_mobilenet_v2": "mobilenet",
    "condconv_resnet50": "resnet",
    "dynamic_mobilenet_v2": "dynamic",
    "dynamic_resnet50": "dynamic",
    "efficientnet_b0": "efficientnet",
    "efficientnet_b1": "efficientnet",
    "efficientnet_lite0": "efficientnet",
    "mnasnet_a1": "efficientnet",
    "mobilenet_v1": "mobilenet",
    "mobilenet_v2": "mobilenet",
    "mobilenet_v2_mod": "mod",
    "resnet50": "resnet",
    "resnet75_mod": "mod",
    "resnet86_mod": "mod",
    "sparse_dynamic_mobilenet_v2": "sparse_dynamic",
    "sparse_dynamic_resnet50": "sparse_dynamic",
}


@pytest.fixture(scope="module")
def condconv_zoo_model():
    """Built once per module: on JAX every new weight shape compiles an initializer."""
    return zoo.get_model(
        "condconv_mobilenet_v1", alpha=0.25, num_experts=2, classes=4, input_shape=(32, 32, 3)
    )


def tiny_model(classes=3, softmax=False):
    """Every kind of variable the optimizers treat apart: conv kernel and bias,
    BatchNorm, a shared Routing, CondConv experts with biases, SD-Conv (threshold,
    own softmax routing with a hidden layer) and a dense head."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    r = layers.Routing(2, name="block_routing")(x)
    x = layers.CondConv2D(4, 1, num_experts=2, routing=None, use_bias=True, name="cond")(
        x, routing_weights=r
    )
    x = layers.SparseDynamicConv2D(4, 3, num_kernels=2, reduction=1, name="sparse")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


def randomize(variables, seed=0):
    """Non-zero values everywhere, so that decay of a zero bias could be seen."""
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32") * rng.choice([-1, 1], v.shape))


def values(variables):
    return [to_numpy(v).astype(np.float64) for v in variables]


# --- the recipe table -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_valid(name):
    recipe = RECIPES[name]
    assert recipe.name == name
    assert recipe.optimizer in ("rmsprop", "sgd", "adam", "adamw")
    assert recipe.schedule in ("cosine", "exponential", "constant")
    assert 0 < recipe.learning_rate <= 1
    for field in ("base_batch_size", "batch_size", "epochs", "pruning_phases"):
        assert isinstance(getattr(recipe, field), int) and getattr(recipe, field) > 0
    assert 0 <= recipe.warmup_epochs < recipe.epochs
    assert 0 < recipe.decay_rate <= 1 and recipe.decay_epochs > 0
    assert 0 <= recipe.min_learning_rate_ratio < 1
    assert 0 <= recipe.momentum < 1 and recipe.epsilon > 0
    assert 0 <= recipe.weight_decay < 1e-2
    assert 0 <= recipe.label_smoothing < 1
    assert recipe.ema_momentum is None or 0 < recipe.ema_momentum < 1
    for rate in (recipe.dropout_rate, recipe.drop_connect_rate):
        assert rate is None or 0 <= rate < 1
    assert recipe.augment in ("standard", "randaugment", "autoaugment", "ssd_random_crop", None)
    assert recipe.mixup_alpha >= 0
    assert recipe.routing_learning_rate_multiplier > 0
    if recipe.temperature_annealing is not None:
        initial, final, epochs = recipe.temperature_annealing
        assert initial >= final > 0 and 0 < epochs <= recipe.epochs
    assert recipe.final_density is None or 0 < recipe.final_density <= 1
    assert recipe.source
    # Everything the recipe names can be built.
    schedule = learning_rate_schedule(recipe, 100, recipe.epochs, recipe.batch_size)
    assert math.isfinite(float(to_numpy(schedule(1000))))
    build_optimizer(recipe, 0.01)
    recipe_callbacks(recipe)


def test_get_recipe_maps_every_zoo_model():
    names = zoo.list_models()
    assert set(EXPECTED_FAMILY) <= set(names)
    for name in names:
        recipe = get_recipe(name)
        assert RECIPES[recipe.name] is recipe
        if name in EXPECTED_FAMILY:
            assert recipe.name == EXPECTED_FAMILY[name], name
    for name, recipe in RECIPES.items():
        assert get_recipe(name) is recipe
        assert get_recipe(recipe) is recipe
    custom = RECIPES["resnet"].replace(name="mine", epochs=3)
    assert get_recipe(custom) is custom


def test_get_recipe_refuses_unknown_names():
    for name in ("vgg16", "densenet121", "", None, "Resnet50"):
        with pytest.raises(ValueError, match="Invalid value for argument `name`") as error:
            get_recipe(name)
        assert f"Received name={name!r}" in str(error.value)


def test_recipe_validation():
    arguments = dict(name="x", optimizer="sgd", learning_rate=0.1, base_batch_size=256,
                     batch_size=256, epochs=10)
    Recipe(**arguments)  # valid as it stands
    for field, bad in [
        ("optimizer", "lamb"),
        ("schedule", "linear"),
        ("learning_rate", 0.0),
        ("learning_rate", -0.1),
        ("base_batch_size", 0),
        ("batch_size", -8),
        ("epochs", True),
        ("routing_learning_rate_multiplier", 0),
    ]:
        with pytest.raises(ValueError, match=f"Invalid value for argument `{field}`") as error:
            Recipe(**{**arguments, field: bad})
        assert f"Received {field}={bad!r}" in str(error.value)
        # replace() validates too.
        with pytest.raises(ValueError, match=f"`{field}`"):
            RECIPES["resnet"].replace(**{field: bad})


def test_scaled_learning_rate_is_the_linear_rule():
    recipe = RECIPES["efficientnet"]  # 0.016 per 256
    for batch in (32, 256, 1000, 4096):
        assert recipe.scaled_learning_rate(batch) == pytest.approx(0.016 * batch / 256, rel=1e-12)
    assert RECIPES["fine_tune"].scaled_learning_rate(640) == pytest.approx(1e-2, rel=1e-12)


def test_replace_and_builder_arguments():
    original = RECIPES["efficientnet"]
    changed = original.replace(epochs=10, dropout_rate=0.0)
    assert changed.epochs == 10 and changed.dropout_rate == 0.0
    assert original.epochs == 350 and original.dropout_rate == 0.2  # unchanged
    assert RECIPES["efficientnet"] is original
    with pytest.raises(dataclasses.FrozenInstanceError):
        original.epochs = 1
    assert original.builder_arguments() == {"dropout_rate": 0.2, "drop_connect_rate": 0.2}
    assert RECIPES["condconv_efficientnet"].builder_arguments() == {
        "dropout_rate": 0.25, "drop_connect_rate": 0.2
    }
    assert RECIPES["resnet"].builder_arguments() == {}
    # 0.0 is a value, not "the builder's default".
    assert changed.builder_arguments() == {"dropout_rate": 0.0, "drop_connect_rate": 0.2}


# --- learning-rate schedules --------------------------------------------------------


def lr_at(schedule, step):
    return float(to_numpy(schedule(step)))


def test_cosine_schedule_follows_warmup_and_cosine_formula():
    recipe = RECIPES["resnet"].replace(warmup_epochs=2, min_learning_rate_ratio=0.1)
    steps_per_epoch, epochs, batch = 10, 10, 512
    schedule = learning_rate_schedule(recipe, steps_per_epoch, epochs, batch)
    peak, warmup, total, alpha = 0.1 * 512 / 256, 20, 100, 0.1

    def expected(step):
        if step < warmup:
            return peak * step / warmup
        progress = min(step - warmup, total - warmup) / (total - warmup)
        return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)

    assert expected(0) == 0 and expected(20) == pytest.approx(peak)
    assert expected(100) == pytest.approx(alpha * peak)
    for step in (0, 1, 10, 19, 20, 21, 60, 77, 99, 100, 150):
        assert lr_at(schedule, step) == pytest.approx(expected(step), rel=1e-5, abs=1e-7), step
    # Without warmup the schedule starts at the peak.
    no_warmup = learning_rate_schedule(recipe.replace(warmup_epochs=0), 10, 10, 256)
    assert lr_at(no_warmup, 0) == pytest.approx(0.1, rel=1e-6)
    assert lr_at(no_warmup, 50) == pytest.approx(0.1 * (0.9 * 0.5 + 0.1), rel=1e-5)


@pytest.mark.parametrize("steps_per_epoch", [10, 3])
def test_exponential_schedule_is_a_staircase_after_warmup(steps_per_epoch):
    recipe = RECIPES["efficientnet"]  # 5 warmup epochs, 0.97 every 2.4 epochs
    schedule = learning_rate_schedule(recipe, steps_per_epoch, 40, 512)
    peak = 0.016 * 512 / 256
    warmup = 5 * steps_per_epoch
    decay_steps = 2.4 * steps_per_epoch  # 7.2 steps for 3 steps per epoch: not rounded

    def expected(step):
        if step < warmup:
            return peak * step / warmup
        return peak * 0.97 ** math.floor((step - warmup) / decay_steps)

    # Steps on both sides of the first decays, kept off exact stair edges.
    steps = [0, 1, warmup // 2, warmup - 1, warmup, warmup + 1]
    steps += [warmup + int(k * decay_steps) + d for k in (1, 2, 3, 5, 10) for d in (-1, 1)]
    for step in steps:
        assert lr_at(schedule, step) == pytest.approx(expected(step), rel=1e-5), step
    assert lr_at(schedule, warmup) == pytest.approx(peak, rel=1e-6)


def test_constant_schedule_and_warmup_capped_at_half_a_short_run():
    # "constant": warmup, then the peak for ever.
    constant = learning_rate_schedule(RECIPES["mobilenet"].replace(schedule="constant"), 4, 20, 256)
    assert [lr_at(constant, s) for s in (0, 10, 20, 40, 79)] == pytest.approx(
        [0.0, 0.008, 0.016, 0.016, 0.016], rel=1e-6
    )
    # 5 warmup epochs in a run of 2 epochs x 4 steps: warmup is 4 steps (half).
    cosine = learning_rate_schedule(RECIPES["resnet"], 4, 2, 256)
    assert [lr_at(cosine, s) for s in (0, 2, 4)] == pytest.approx([0.0, 0.05, 0.1], rel=1e-6)
    assert lr_at(cosine, 6) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)), abs=1e-7)
    assert lr_at(cosine, 8) == pytest.approx(0.0, abs=1e-7)
    exponential = learning_rate_schedule(RECIPES["efficientnet"], 4, 2, 256)
    assert [lr_at(exponential, s) for s in (2, 4)] == pytest.approx([0.008, 0.016], rel=1e-6)


def test_schedules_round_trip_their_config():
    schedules = [
        WarmupExponentialDecay(0.2, warmup_steps=7, decay_steps=16.8, decay_rate=0.9),
        ScaledSchedule(0.05, 0.1),
        ScaledSchedule(WarmupExponentialDecay(0.2, 7, 16.8, 0.9), 0.25),
        ScaledSchedule(keras.optimizers.schedules.CosineDecay(0.0, 90, 0.1, warmup_target=0.4,
                                                              warmup_steps=10), 0.5),
    ]
    for schedule in schedules:
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(schedule)
        )
        assert type(restored) is type(schedule)
        assert keras.saving.serialize_keras_object(restored) == (
            keras.saving.serialize_keras_object(schedule)
        )
        for step in (0, 3, 7, 24, 60, 100):
            assert lr_at(restored, step) == pytest.approx(lr_at(schedule, step), rel=1e-6)
    # ScaledSchedule is factor x the schedule it wraps.
    inner = keras.optimizers.schedules.CosineDecay(0.3, 50)
    for step in (0, 10, 49):
        assert lr_at(ScaledSchedule(inner, 0.25), step) == pytest.approx(
            0.25 * 0.3 * 0.5 * (1 + math.cos(math.pi * step / 50)), rel=1e-5
        )
    assert lr_at(ScaledSchedule(0.05, 0.1), 123) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="decay_steps"):
        WarmupExponentialDecay(0.1, 5, 0)


# --- optimizers: weight decay and the routing learning rate --------------------------


def check_decay(model, optimizer, lr, weight_decay, multiplier, steps=2):
    """Zero gradients: only the decoupled weight decay moves variables."""
    variables = model.trainable_variables
    randomize(variables)
    before = values(variables)
    for _ in range(steps):
        optimizer.apply([keras.ops.zeros(v.shape, v.dtype) for v in variables], variables)
    after = values(variables)
    kinds = set()
    for v, b, a in zip(variables, before, after):
        if v.name in NOT_DECAYED:
            np.testing.assert_array_equal(a, b, err_msg=v.path)
            kinds.add(v.name)
            continue
        step_lr = lr * (multiplier if is_routing_variable(v) else 1.0)
        # float32 steps: relative error ~1e-7 per step.
        np.testing.assert_allclose(a, b * (1 - step_lr * weight_decay) ** steps, rtol=2e-6,
                                   err_msg=v.path)
        kinds.add(("routing " if is_routing_variable(v) else "") + v.name)
    assert kinds == NOT_DECAYED | {"kernel", "routing kernel", "routing hidden_kernel"}


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam", "adamw"])
def test_decoupled_weight_decay_spares_biases_batchnorm_and_thresholds(optimizer):
    model = tiny_model()
    for multiplier in (1.0, 0.25):
        recipe = RECIPES["resnet"].replace(optimizer=optimizer, weight_decay=0.02,
                                           routing_learning_rate_multiplier=multiplier)
        built = build_optimizer(recipe, 0.5)
        assert isinstance(built, keras.optimizers.MultiOptimizer) == (multiplier != 1)
        # 0.5 * 0.02 = 1% per step: far above the float32 tolerance.
        check_decay(model, built, lr=0.5, weight_decay=0.02, multiplier=multiplier)


def test_is_routing_variable_on_a_zoo_condconv_model(condconv_zoo_model):
    model = condconv_zoo_model
    shared = [l for l in model.layers if isinstance(l, layers.Routing)]
    own = [l for l in model.layers
           if isinstance(l, layers.ExpertLayer) and l.routing_fn is not None]
    experts = [l for l in model.layers if isinstance(l, layers.ExpertLayer)]
    assert shared and own and len(experts) > len(own)
    routing_paths = {v.path for v in model.trainable_variables if is_routing_variable(v)}
    expected = {v.path for l in shared for v in l.trainable_variables}
    expected |= {v.path for l in own for v in l.routing_fn.trainable_variables}
    assert routing_paths == expected
    assert "predictions/routing/kernel" in routing_paths
    assert any(p.endswith("_routing/kernel") for p in routing_paths)
    for layer in experts:  # expert kernels and biases are not routing
        assert not is_routing_variable(layer.kernel), layer.kernel.path
    assert not any(is_routing_variable(v) for v in model.non_trainable_variables
                   if "moving" in v.name)


def test_routing_variables_learn_at_the_multiplier(condconv_zoo_model):
    model = condconv_zoo_model
    multiplier, lr = 0.25, 0.1
    recipe = RECIPES["resnet"].replace(momentum=0.0, weight_decay=0.0,
                                       routing_learning_rate_multiplier=multiplier)
    optimizer = build_optimizer(recipe, lr)
    variables = model.trainable_variables
    rng = np.random.default_rng(1)
    grads = [rng.uniform(0.5, 1.5, v.shape).astype("float32") * rng.choice([-1, 1], v.shape)
             for v in variables]
    before = values(variables)
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    ratios = {True: [], False: []}
    for v, g, b, a in zip(variables, grads, before, values(variables)):
        ratios[is_routing_variable(v)].append(((b - a) / g).ravel())
    routing, other = np.concatenate(ratios[True]), np.concatenate(ratios[False])
    # update / gradient: lr for the rest, multiplier * lr for routing (float32 steps
    # on weights of size ~1: relative error ~1e-5).
    np.testing.assert_allclose(other, lr, rtol=1e-4)
    np.testing.assert_allclose(routing, multiplier * lr, rtol=1e-4)


# --- compile_with_recipe -----------------------------------------------------------


def head_model(last):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, activation="softmax" if last == "dense_softmax" else None)(inputs)
    if last == "softmax_layer":
        x = keras.layers.Softmax()(x)
    elif last == "activation_layer":
        x = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(
    "last, probabilities",
    [("logits", False), ("dense_softmax", True), ("softmax_layer", True),
     ("activation_layer", True)],
)
def test_compile_detects_logits_or_probabilities(last, probabilities):
    model = head_model(last)
    compile_with_recipe(model, "resnet", steps_per_epoch=1)
    assert model.loss.from_logits is (not probabilities)
    # The compiled loss on the model's own outputs is the cross-entropy of the
    # softmax probabilities (label smoothing 0.1 of the resnet recipe).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 1, 0]]
    logits = to_numpy(keras.Model(model.input, model.layers[1].output)(x)).astype(np.float64)
    if last == "dense_softmax":  # the Dense output already is the softmax
        logits = np.log(logits)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    smoothed = y * 0.9 + 0.1 / 3
    expected = -(smoothed * log_p).sum(-1).mean()
    assert float(to_numpy(model.loss(y, model(x)))) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_label_format_and_top5():
    model = head_model("logits")
    recipe = compile_with_recipe(model, "efficientnet", steps_per_epoch=10, epochs=2)
    assert recipe is RECIPES["efficientnet"]
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    compile_with_recipe(model, "efficientnet", steps_per_epoch=10, label_format="sparse")
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    with pytest.raises(ValueError, match="label_format"):
        compile_with_recipe(model, "resnet", steps_per_epoch=1, label_format="onehot")
    with pytest.raises(ValueError, match="Label smoothing needs one-hot labels"):
        classification_loss_and_metrics(model, "sparse", label_smoothing=0.1)
    # A top-5 accuracy only when there are more than 5 classes.
    for classes, names in ((5, ["accuracy"]), (6, ["accuracy", "top5"])):
        inputs = keras.Input((4,))
        wide = keras.Model(inputs, keras.layers.Dense(classes)(inputs))
        for label_format, top5 in (("one_hot", keras.metrics.TopKCategoricalAccuracy),
                                   ("sparse", keras.metrics.SparseTopKCategoricalAccuracy)):
            _, metrics = classification_loss_and_metrics(wide, label_format)
            assert [m.name for m in metrics] == names
            if classes > 5:
                assert isinstance(metrics[1], top5) and metrics[1].k == 5


def test_short_fit_learns_and_the_model_round_trips_through_keras_file(tmp_path):
    images, labels = toy_images(num=96)
    one_hot = np.eye(3, dtype="float32")[labels]
    model = small_model(["cond_conv_shared"])
    # fine_tune: AdamW, routing at 0.1 x the learning rate (a MultiOptimizer).
    recipe = compile_with_recipe(model, "fine_tune", steps_per_epoch=3, epochs=6,
                                 global_batch_size=640, jit_compile=JIT)
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    history = model.fit(images, one_hot, batch_size=32, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded.predict(images[:8], verbose=0)),
                               to_numpy(model.predict(images[:8], verbose=0)), atol=1e-6)
    # The compile config came back: loss, the routing optimizer at 0.1 x the rate.
    assert isinstance(loaded.loss, keras.losses.CategoricalCrossentropy)
    assert loaded.loss.get_config()["label_smoothing"] == pytest.approx(recipe.label_smoothing)
    assert isinstance(loaded.optimizer, keras.optimizers.MultiOptimizer)
    assert int(to_numpy(loaded.optimizer.iterations)) == 18
    selector = keras.saving.deserialize_keras_object(
        loaded.optimizer.get_config()["optimizer_map"]
    )
    assert isinstance(selector, RoutingOptimizerSelector)
    schedules = [
        keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
        for optimizer in loaded.optimizer.optimizers
    ]
    routing = [s for s in schedules if isinstance(s, ScaledSchedule)]
    main = [s for s in schedules if not isinstance(s, ScaledSchedule)]
    assert len(routing) == len(main) == 1
    for step in (1, 9, 15):  # early, middle and late in the run
        assert lr_at(routing[0], step) == pytest.approx(0.1 * lr_at(main[0], step), rel=1e-6)
        assert lr_at(main[0], step) > 0


# Saved before any step, the optimizer has no variables to load: Keras says so.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_loaded_recipe_optimizer_keeps_weight_decay_exclusions(tmp_path):
    recipe = RECIPES["resnet"].replace(weight_decay=0.02, routing_learning_rate_multiplier=0.5)
    model = tiny_model()
    compile_with_recipe(model, recipe, steps_per_epoch=1, learning_rate=0.5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    check_decay(loaded, loaded.optimizer, lr=0.5, weight_decay=0.02, multiplier=0.5)


# --- EMA of the weights ------------------------------------------------------------


def ema_of(recorded, momentum):
    """Keras' EMA: the first step copies the weights, then m * average + (1 - m) * w."""
    average = None
    for weights in recorded:
        if average is None:
            average = [w.copy() for w in weights]
        else:
            average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return average


def assert_weights(model, expected, message):
    for v, e in zip(model.trainable_variables, expected):
        # float32 averages of O(1) weights.
        np.testing.assert_allclose(to_numpy(v), e, rtol=1e-5, atol=1e-6, err_msg=message)


EMA_RECIPE = RECIPES["resnet"].replace(ema_momentum=0.5, routing_learning_rate_multiplier=0.5)


def test_ema_weights_hold_the_average_inside_the_block_only():
    model = tiny_model()
    compile_with_recipe(model, EMA_RECIPE, steps_per_epoch=4, epochs=1,
                        global_batch_size=2560, jit_compile=JIT)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    recorded = []
    for _ in range(3):
        model.train_on_batch(x, y)
        recorded.append(values(model.trainable_variables))
    assert not np.allclose(recorded[0][0], recorded[-1][0])  # the weights moved
    expected = ema_of(recorded, 0.5)
    with ema_weights(model):
        assert_weights(model, expected, "inside ema_weights")
    assert_weights(model, recorded[-1], "after ema_weights")


class RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.recorded = []

    def on_train_batch_end(self, batch, logs=None):
        if BACKEND == "jax":  # JAX trains on a copy of the state
            self.model.jax_state_sync()
        self.recorded.append(values(self.model.trainable_variables))


def test_fit_with_recipe_callbacks_ends_on_the_ema_weights():
    model = tiny_model()
    compile_with_recipe(model, EMA_RECIPE, steps_per_epoch=2, epochs=2,
                        global_batch_size=2560, jit_compile=JIT)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    recorder = RecordWeights()
    callbacks = recipe_callbacks(EMA_RECIPE, epochs=2)
    assert [type(c) for c in callbacks] == [keras.callbacks.SwapEMAWeights]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[recorder] + callbacks)
    assert len(recorder.recorded) == 4
    assert not np.allclose(recorder.recorded[-1][0], ema_of(recorder.recorded, 0.5)[0])
    assert_weights(model, ema_of(recorder.recorded, 0.5), "after fit")


def test_recipe_callbacks_per_recipe():
    assert recipe_callbacks("resnet") == []
    assert recipe_callbacks("fine_tune") == []

    (temperature,) = recipe_callbacks("dynamic", epochs=4)
    assert isinstance(temperature, RoutingTemperatureScheduler)
    assert (temperature.initial, temperature.final, temperature.epochs) == (30.0, 1.0, 4)
    (temperature,) = recipe_callbacks("dynamic_resnet50")
    assert temperature.epochs == 10

    temperature, sparsity = recipe_callbacks("sparse_dynamic", epochs=8)
    assert isinstance(temperature, RoutingTemperatureScheduler)
    assert isinstance(sparsity, SparsityScheduler)
    assert (sparsity.final_density, sparsity.epochs, sparsity.phases) == (0.5, 8, 3)
    assert recipe_callbacks("sparse_dynamic")[1].epochs == 100

    for name in ("efficientnet", "condconv_efficientnet_b0"):
        (swap,) = recipe_callbacks(name)
        assert isinstance(swap, keras.callbacks.SwapEMAWeights) and swap.swap_on_epoch
