"""Upcycling static zoo models into their dynamic twins (`keras_dynconv.weights.upcycling`).

Parity: random static weights with non-trivial batch-norm statistics (and non-zero
biases, gamma and beta, so that every copy matters), upcycled; the dynamic model's
logits must equal the static model's on random raw images. Float32 on every backend:
max |difference| <= 1e-4 * max(1, max |static logit|), i.e. 1e-4 absolute for logits
of order one and 1e-4 relative for the larger logits random networks reach (random
BN statistics do not normalise, so activations grow with depth; per-example grouped
and mixture convolutions sum in other orders than `keras.layers.Conv2D`).
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.weights.upcycling import THRESHOLD_MARGIN
from keras_dynconv.weights.upcycling import upcycle
from keras_dynconv.zoo.conversion import Conversion
from keras_dynconv.zoo.conversion import LayerFactory
from keras_dynconv.zoo.preprocessing import ImageNormalization

TOLERANCE = 1e-4
SIZE = 64
NUM_CLASSES = 10

# (static, dynamic, builder arguments of both). Fewer experts and a narrower
# MobileNetV2 than the zoo's defaults keep the builds fast; the code paths are the same.
HALF_WIDTH = dict(alpha=0.5)
# On every backend: CondConv (shared sigmoid routing, CondDense classifier). JAX
# compiles every new weight shape's initializer (about 0.3-1 s each on 2 cores), so a
# zoo pair costs 30-90 s there; the tiny twins below cover every rule (SD-Conv's masks
# and softmax attention included) on every backend.
CHEAP_PAIRS = [
    ("mobilenet_v2", "condconv_mobilenet_v2", dict(num_experts=3, **HALF_WIDTH)),
]
# The matching is backend-independent Python: the other pairs run once, on torch, in
# the default suite (`architecture`), and on the other backends with `-m large`.
ARCHITECTURE_PAIRS = [
    ("efficientnet_lite0", "condconv_efficientnet_lite0", dict(num_experts=2)),
    ("mobilenet_v2", "dynamic_mobilenet_v2", dict(num_experts=3, **HALF_WIDTH)),
    ("mobilenet_v2", "sparse_dynamic_mobilenet_v2", dict(num_experts=3, **HALF_WIDTH)),
    ("mobilenet_v1", "condconv_mobilenet_v1", dict(num_experts=8)),
    # condconv_resnet50 defaults to v1.5 downsampling (stride on the 3x3 conv);
    # resnet50 is keras.applications' (stride on the first 1x1): same shapes, other
    # function, which upcycle refuses (test_mismatched_zoo_pair_raises_naming_a_layer).
    ("resnet50", "condconv_resnet50", dict(num_experts=3, downsampling="conv1x1")),
    ("resnet50", "dynamic_resnet50", dict(num_experts=2)),
    ("resnet50", "sparse_dynamic_resnet50", dict(num_experts=2)),
    # condconv_efficientnet_b0 normalises as timm's tf_efficientnet_cc ("inception"),
    # efficientnet_b0 as keras.applications ("imagenet"): compare without it.
    ("efficientnet_b0", "condconv_efficientnet_b0", dict(num_experts=3)),
]
NO_PREPROCESSING = {"efficientnet_b0"}


def randomize_static_weights(model, seed=0):
    """Batch-norm statistics and affine terms and all biases random, kernels as built."""
    rng = np.random.default_rng(seed)
    draws = {
        "moving_mean": lambda shape: rng.normal(0.0, 0.1, shape),
        "moving_variance": lambda shape: rng.uniform(0.5, 1.5, shape),
        "gamma": lambda shape: rng.uniform(0.8, 1.2, shape),
        "beta": lambda shape: rng.normal(0.0, 0.1, shape),
        "bias": lambda shape: rng.normal(0.0, 0.1, shape),
    }
    for variable in model.weights:
        if variable.name in draws:
            variable.assign(draws[variable.name](tuple(variable.shape)).astype("float32"))


def build_pair(static_name, dynamic_name, arguments, size=SIZE):
    """The static model and its dynamic twin; `arguments` minus the experts go to both."""
    common = dict(
        input_shape=(size, size, 3), classes=NUM_CLASSES, classifier_activation=None
    )
    if static_name in NO_PREPROCESSING:
        common["include_preprocessing"] = False
    shared = {key: value for key, value in arguments.items() if key in ("alpha", "downsampling")}
    static = zoo.get_model(static_name, **common, **shared)
    dynamic = zoo.get_model(dynamic_name, **common, **arguments)
    return static, dynamic


def logits(model, images):
    return to_numpy(model.predict_on_batch(images))


def expert_layers(model):
    return [layer for layer in model.layers if isinstance(layer, layers.ExpertLayer)]


def check_upcycled_parity(static_name, dynamic_name, arguments):
    static, dynamic = build_pair(static_name, dynamic_name, arguments)
    randomize_static_weights(static)
    report = upcycle(static, dynamic)

    weighted = [layer.name for layer in dynamic.layers if layer.weights]
    assert [name for name, _ in report] == weighted
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = logits(static, images)
    difference = np.abs(logits(dynamic, images) - expected).max()
    largest = float(np.abs(expected).max())
    print(f"{static_name} -> {dynamic_name}: max |diff| {difference:.3g}, "
          f"max |logit| {largest:.3g}")
    assert difference <= TOLERANCE * max(1.0, largest)

    # Experts of layers with their own softmax attention are copies of the static
    # kernel; the others are perturbed copies whose mean is the static kernel.
    for layer in expert_layers(dynamic):
        experts = to_numpy(layer.kernel)
        kernel = to_numpy(static.get_layer(layer.name).kernel)
        if layer.routing_fn is not None and layer.routing_fn.activation == "softmax":
            np.testing.assert_array_equal(experts, np.stack([kernel] * len(experts)))
        else:
            np.testing.assert_allclose(experts.mean(axis=0), kernel, atol=1e-6, rtol=0)
            assert np.abs(experts - experts[:1]).max() > 0
    return static, dynamic


@pytest.mark.parametrize("static_name,dynamic_name,arguments", CHEAP_PAIRS)
def test_upcycled_model_computes_the_static_function(
    static_name, dynamic_name, arguments
):
    _, dynamic = check_upcycled_parity(static_name, dynamic_name, arguments)
    sparse = [
        layer for layer in expert_layers(dynamic)
        if isinstance(layer, (layers.SparseDynamicConv2D, layers.SparseDynamicDepthwiseConv2D))
    ]
    for layer in sparse:
        assert float(to_numpy(layer.threshold)) == pytest.approx(-THRESHOLD_MARGIN)
    for layer in sparse[:2] + sparse[-1:]:  # the masks keep every weight
        assert float(to_numpy(layer.density())) == 1.0


@pytest.mark.architecture
@pytest.mark.parametrize("static_name,dynamic_name,arguments", ARCHITECTURE_PAIRS)
def test_upcycled_architecture_computes_the_static_function(
    static_name, dynamic_name, arguments
):
    check_upcycled_parity(static_name, dynamic_name, arguments)


# --- small twins built with the zoo's LayerFactory --------------------------------
def tiny_model(conversion, width=16, strides=1, normalization=None, classes=5):
    """stem conv -> [block routing] -> 1x1 conv (bias) -> depthwise -> classifier."""
    factory = LayerFactory(conversion)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    if normalization is not None:
        x = ImageNormalization(normalization, name="normalization")(x)
    x = factory.conv(x, 8, 3, "stem_conv", strides=2)
    x = factory.batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    routing = factory.block_routing(x, "block_routing")
    dynamic = dict(dynamic=True, routing_weights=routing)
    x = factory.conv(x, width, 1, "expand", use_bias=True, strides=strides, **dynamic)
    x = factory.batch_norm(x, "expand_bn")
    x = keras.layers.ReLU(name="expand_relu")(x)
    x = factory.depthwise(x, 3, "dwconv", **dynamic)
    x = factory.batch_norm(x, "dwconv_bn")
    x = keras.layers.ReLU(name="dwconv_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = factory.classifier(x, classes, None)
    return keras.Model(inputs, outputs, name=f"tiny_{conversion.kind}")


def tiny_twins(kind, num_experts=3, **arguments):
    dynamic = Conversion(kind=kind, num_experts=num_experts, classifier=True, reduction=2)
    static = tiny_model(Conversion(), **arguments)
    randomize_static_weights(static)
    return static, tiny_model(dynamic, **arguments)


def routing_functions(model):
    """Every routing function (`Routing` layer), by the name of its owner layer."""
    functions = {}
    for layer in model.layers:
        if isinstance(layer, layers.Routing):
            functions[layer.name] = layer
        elif isinstance(layer, layers.ExpertLayer) and layer.routing_fn is not None:
            functions[layer.name] = layer.routing_fn
    return functions


def routing_kernels(model):
    """The last kernel of every routing function, by owner name."""
    return {name: routing.kernel for name, routing in routing_functions(model).items()}


def snapshot(variables):
    return {name: to_numpy(variable) for name, variable in variables.items()}


def compile_for_training(model):
    # Plain SGD (update = -2 * gradient): a zero gradient leaves a weight bit-exact, and
    # a large step lifts the experts' differences well above float32 rounding.
    model.compile(
        optimizer=keras.optimizers.SGD(2.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def train_step(model):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 16, 16, 3)).astype("float32")
    model.train_on_batch(images, rng.integers(0, 5, (8,)))


def update_spread(before, after):
    """max_e |update_e - update_0| / max |update|: 0 when every expert moves alike."""
    update = after - before
    return np.abs(update - update[:1]).max() / np.abs(update).max()


def expert_kernels(model):
    return {layer.name: layer.kernel for layer in expert_layers(model)}


@pytest.mark.parametrize(
    "kind,uniform_attention",
    [("condconv", False), ("dynamic", False), ("dynamic", True), ("sparse", False),
     ("sparse", True)],
)
def test_tiny_twins_upcycle_exactly(kind, uniform_attention):
    static, dynamic = tiny_twins(kind)
    attention_before = {
        name: snapshot({w.path: w for w in r.weights})
        for name, r in routing_functions(dynamic).items()
    }
    report = dict(upcycle(static, dynamic, uniform_attention=uniform_attention))
    images = np.random.default_rng(1).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    expected = logits(static, images)
    np.testing.assert_allclose(logits(dynamic, images), expected, atol=TOLERANCE, rtol=0)

    features = np.random.default_rng(2).uniform(0, 2, size=(3, 4, 4, 8)).astype("float32")
    if kind == "condconv":
        # sigmoid(logit(1/3)) = 1/3 for every expert and every input.
        assert report["block_routing"].startswith("sigmoid routing: kernel 0, bias -0.6931")
        routing = dynamic.get_layer("block_routing")
        np.testing.assert_allclose(to_numpy(routing(features)), 1.0 / 3.0, atol=1e-7)
    else:
        attention = dynamic.get_layer("expand").routing_fn
        hidden = attention_before["expand"][attention.hidden_kernel.path]
        np.testing.assert_array_equal(to_numpy(attention.hidden_kernel), hidden)
        weights = to_numpy(attention(features))
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-6)
        if uniform_attention:
            assert "last FC zeroed" in report["expand"]
            np.testing.assert_allclose(weights, 1.0 / 3.0, atol=1e-7)
        else:
            assert "attention kept" in report["expand"]
            for weight in attention.weights:  # untouched
                np.testing.assert_array_equal(
                    to_numpy(weight), attention_before["expand"][weight.path]
                )
            assert np.abs(weights - 1.0 / 3.0).max() > 1e-4  # random (softened by T=30)
    # The CondDense classifier owns a sigmoid routing; its bias is copied per expert.
    classifier = dynamic.get_layer("predictions")
    np.testing.assert_array_equal(
        to_numpy(classifier.bias), np.tile(to_numpy(static.get_layer("predictions").bias), (3, 1))
    )


def test_zero_noise_gives_exact_copies():
    static, dynamic = tiny_twins("condconv")
    upcycle(static, dynamic, expert_noise=0)
    for layer in expert_layers(dynamic):
        kernel = to_numpy(static.get_layer(layer.name).kernel)
        np.testing.assert_array_equal(to_numpy(layer.kernel), np.stack([kernel] * 3))


@pytest.mark.parametrize("kind", ["condconv", "dynamic", "sparse"])
def test_upcycled_model_trains_and_its_experts_specialise(kind):
    """Two SGD steps from the upcycled start; see the module docstring of upcycling.

    Uniform routing (CondConv's sigmoid routing, and the CondDense classifier of every
    twin here): step 1 gives every expert the same update `(1/E) sum_b G_b`, but
    routing column e receives `<G_b, W_e>`, which differs between the zero-sum
    perturbed experts: the routing moves, per expert. Step 2: the routing weights now
    differ between experts, so do the experts' updates `sum_b r_be G_b`.

    Kept softmax attention (dynamic, sparse): the random attention weights identical
    experts differently, so their updates differ from step 1; the attention itself
    gets a zero gradient at step 1 (identical experts) and a non-zero one at step 2.
    """
    static, dynamic = tiny_twins(kind)
    upcycle(static, dynamic)
    compile_for_training(dynamic)
    functions = routing_functions(dynamic)
    kept_attention = {name for name, r in functions.items() if r.activation == "softmax"}
    assert kept_attention == ({"expand", "dwconv"} if kind != "condconv" else set())
    routing_start = snapshot(routing_kernels(dynamic))
    experts_start = snapshot(expert_kernels(dynamic))

    train_step(dynamic)
    routing_1 = snapshot(routing_kernels(dynamic))
    experts_1 = snapshot(expert_kernels(dynamic))
    for name, kernel in routing_1.items():
        change = kernel - routing_start[name]
        if name in kept_attention:
            assert np.abs(change).max() <= 1e-9, name
        else:
            # Starts at zero, so the change is the gradient (times -2) exactly.
            assert np.abs(change - change[:, :1]).max() > 1e-5, name
    for name, kernel in experts_1.items():
        if name in kept_attention:
            assert update_spread(experts_start[name], kernel) > 1e-3, name
        else:
            assert update_spread(experts_start[name], kernel) < 1e-5, name

    train_step(dynamic)
    for name, kernel in snapshot(routing_kernels(dynamic)).items():
        if name in kept_attention:
            assert np.abs(kernel - routing_1[name]).max() > 1e-8, name
    for name, kernel in snapshot(expert_kernels(dynamic)).items():
        assert update_spread(experts_1[name], kernel) > 2e-5, name
    images = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    assert np.all(np.isfinite(logits(dynamic, images)))


@pytest.mark.parametrize("kind", ["condconv", "dynamic"])
def test_identical_experts_under_uniform_routing_never_specialise(kind):
    """Why the default is not "exact copies, uniform routing": that is a fixed point.

    Routing weight r_be receives `<G_b, W_e>`, the same for every expert when the
    experts are equal: a softmax turns equal gradients into zero logit gradients
    (the attention never moves), a sigmoid moves every routing column alike. The
    routing weights then stay equal across experts, so every expert receives the
    same update `sum_b r_be G_b`, step after step.
    """
    static, dynamic = tiny_twins(kind)
    upcycle(static, dynamic, expert_noise=0, uniform_attention=True)
    compile_for_training(dynamic)
    activations = {name: r.activation for name, r in routing_functions(dynamic).items()}
    routing_start = snapshot(routing_kernels(dynamic))
    experts_start = snapshot(expert_kernels(dynamic))
    for _ in range(3):
        train_step(dynamic)
    for name, kernel in snapshot(routing_kernels(dynamic)).items():
        change = kernel - routing_start[name]
        if activations[name] == "softmax":
            assert np.abs(change).max() <= 1e-9, name
        else:
            assert np.abs(change).max() > 1e-5, name
            assert np.abs(change - change[:, :1]).max() <= 1e-6 * np.abs(change).max(), name
    for name, kernel in snapshot(expert_kernels(dynamic)).items():
        assert update_spread(experts_start[name], kernel) <= 1e-6, name


# --- errors -----------------------------------------------------------------------
@pytest.mark.architecture
def test_mismatched_zoo_pair_raises_naming_a_layer():
    arguments = dict(input_shape=(32, 32, 3), classes=NUM_CLASSES, include_preprocessing=False)
    condconv_resnet50 = zoo.condconv_resnet50(num_experts=2, **arguments)
    with pytest.raises(ValueError, match="Layer 'conv1_conv'"):
        upcycle(zoo.mobilenet_v2(**arguments), condconv_resnet50)
    # Same layers and shapes, other function: condconv_resnet50 defaults to ResNet v1.5
    # (stride on the 3x3 conv), resnet50 to keras.applications' (on the first 1x1).
    with pytest.raises(ValueError, match="Layer 'conv3_block1_1_conv': `strides` differs"):
        upcycle(zoo.resnet50(**arguments), condconv_resnet50)


def tiny_mod_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem_conv")(inputs)
    block = keras.layers.Conv2D(2, 3, padding="same", name="block_inner")
    x = layers.MoDBlock(block, capacity=16, name="block_mod")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="predictions")(x))


def test_mixture_of_depths_model_raises():
    static, mod = tiny_model(Conversion()), tiny_mod_model()
    with pytest.raises(ValueError, match="Mixture-of-Depths block 'block_mod'.*no static twin"):
        upcycle(static, mod)
    with pytest.raises(ValueError, match="`static_model` .* Mixture-of-Depths"):
        upcycle(mod, static)


@pytest.mark.architecture
def test_mixture_of_depths_zoo_model_raises():
    arguments = dict(input_shape=(32, 32, 3), classes=NUM_CLASSES)
    static = zoo.mobilenet_v2(**arguments)
    mod = zoo.mobilenet_v2_mod(**arguments)  # capacity 16 needs the full width
    with pytest.raises(ValueError, match="Mixture-of-Depths block 'block2_mod'"):
        upcycle(static, mod)


def test_different_input_normalisation_raises():
    static, dynamic = tiny_twins("condconv")
    with pytest.raises(ValueError, match="normalise their inputs differently"):
        upcycle(static, tiny_model(Conversion(kind="condconv"), normalization="inception"))
    static = tiny_model(Conversion(), normalization="imagenet")
    with pytest.raises(ValueError, match="'imagenet'.*'inception'"):
        upcycle(static, tiny_model(Conversion(kind="condconv"), normalization="inception"))
    # A zoo pair with and without its normalisation layer (the shapes of the parity
    # tests, already compiled on JAX).
    arguments = dict(input_shape=(SIZE, SIZE, 3), classes=NUM_CLASSES, **HALF_WIDTH)
    dynamic = zoo.condconv_mobilenet_v2(num_experts=3, include_preprocessing=False, **arguments)
    with pytest.raises(ValueError, match="Layer 'normalization'.*'inception'.*None"):
        upcycle(zoo.mobilenet_v2(**arguments), dynamic)


def test_shape_mismatch_raises_and_assigns_nothing():
    static, _ = tiny_twins("condconv")
    dynamic = tiny_model(Conversion(kind="condconv", num_experts=3, classifier=True), classes=7)
    before = [to_numpy(weight) for weight in dynamic.weights]
    with pytest.raises(ValueError, match="Layer 'predictions'.*shape"):
        upcycle(static, dynamic)
    for weight, value in zip(dynamic.weights, before):
        np.testing.assert_array_equal(to_numpy(weight), value)


def test_settings_that_change_the_function_must_agree():
    static, _ = tiny_twins("condconv")
    dynamic = tiny_model(Conversion(kind="condconv", num_experts=3, classifier=True), strides=2)
    with pytest.raises(ValueError, match="Layer 'expand': `strides` differs"):
        upcycle(static, dynamic)


def test_every_static_layer_must_be_used():
    dynamic_conversion = Conversion(kind="condconv", num_experts=3, classifier=True)
    static = tiny_model(Conversion())
    outputs = keras.layers.Dense(4, name="extra_head")(static.output)
    extended = keras.Model(static.input, outputs)
    with pytest.raises(ValueError, match="Layer 'extra_head' of the static model"):
        upcycle(extended, tiny_model(dynamic_conversion))
    dynamic = tiny_model(dynamic_conversion)
    outputs = keras.layers.Dense(4, name="extra_head")(dynamic.output)
    with pytest.raises(ValueError, match="Layer 'extra_head' .* of the dynamic model"):
        upcycle(static, keras.Model(dynamic.input, outputs))


def test_sigmoid_routing_over_one_expert_raises():
    static, dynamic = tiny_twins("condconv", num_experts=1)
    with pytest.raises(ValueError, match="Layer 'block_routing': sigmoid routing over a single"):
        upcycle(static, dynamic)


def test_invalid_arguments_raise():
    static, dynamic = tiny_twins("condconv")
    for expert_noise in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="expert_noise"):
            upcycle(static, dynamic, expert_noise=expert_noise)
    with pytest.raises(ValueError, match="uniform_attention"):
        upcycle(static, dynamic, uniform_attention="yes")
