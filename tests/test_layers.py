"""Every layer against a reference written independently in `reference.py`.

Tolerance: conftest.ATOL / RTOL (float32 layer vs float64 reference).
"""

import keras
import numpy as np
import pytest

import reference
from conftest import ATOL, RTOL, gradients, to_numpy
from harness import run_layer_test
from keras_dynconv import layers
from keras_dynconv.layers.sparse_dynamic_conv import soft_magnitude_mask

STRATEGIES = ["per_example", "mixture"]


def _random(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _routing_reference(layer, inputs):
    routing = layer.routing_fn
    hidden = (
        (to_numpy(routing.hidden_kernel), to_numpy(routing.hidden_bias))
        if routing.hidden_units
        else (None, None)
    )
    return reference.routing(
        inputs,
        to_numpy(routing.kernel),
        to_numpy(routing.bias),
        routing.activation,
        float(to_numpy(routing.temperature)),
        *hidden,
    )


def _randomize_biases(layer, rng):
    if layer.bias is not None:
        layer.bias.assign(_random(rng, *layer.bias.shape))
    if layer.routing_fn is not None:
        layer.routing_fn.bias.assign(_random(rng, *layer.routing_fn.bias.shape))


CONV_CONFIGS = [
    # (batch, size, cin, filters, kernel, strides, padding, dilation, experts, use_bias)
    (1, 7, 3, 4, 3, 1, "same", 1, 1, False),
    (3, 9, 4, 5, 3, 2, "same", 1, 4, True),
    (2, 9, 3, 2, (3, 1), 1, "valid", 2, 3, False),
    (4, 8, 6, 3, 1, 2, "same", 1, 8, True),
    (2, 8, 2, 3, 5, 1, "valid", 1, 2, True),
]


@pytest.mark.parametrize("config", CONV_CONFIGS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cond_conv2d_matches_reference(rng, tmp_path, config, strategy):
    batch, size, cin, filters, kernel, strides, padding, dilation, experts, use_bias = config
    inputs = _random(rng, batch, size, size, cin)

    def make():
        return layers.CondConv2D(
            filters, kernel, num_experts=experts, strides=strides, padding=padding,
            dilation_rate=dilation, use_bias=use_bias, strategy=strategy,
        )

    layer = make()
    layer(inputs)
    _randomize_biases(layer, rng)
    routing = _routing_reference(layer, inputs)
    expected = reference.cond_conv2d(
        inputs, to_numpy(layer.kernel), routing,
        bias=to_numpy(layer.bias) if use_bias else None,
        strides=strides, padding=padding, dilation=dilation,
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


@pytest.mark.parametrize("config", CONV_CONFIGS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_cond_depthwise_conv2d_matches_reference(rng, config, strategy, multiplier):
    batch, size, cin, _, kernel, strides, padding, dilation, experts, use_bias = config
    inputs = _random(rng, batch, size, size, cin)
    layer = layers.CondDepthwiseConv2D(
        kernel, num_experts=experts, depth_multiplier=multiplier, strides=strides,
        padding=padding, dilation_rate=dilation, use_bias=use_bias, strategy=strategy,
    )
    layer(inputs)
    _randomize_biases(layer, rng)
    expected = reference.cond_conv2d(
        inputs, to_numpy(layer.kernel), _routing_reference(layer, inputs),
        bias=to_numpy(layer.bias) if use_bias else None, depthwise=True,
        strides=strides, padding=padding, dilation=dilation,
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batch,experts,use_bias", [(1, 1, False), (5, 4, True), (3, 8, True)])
def test_cond_dense_matches_reference(rng, tmp_path, strategy, batch, experts, use_bias):
    inputs = _random(rng, batch, 12)

    def make():
        return layers.CondDense(7, num_experts=experts, use_bias=use_bias, strategy=strategy)

    layer = make()
    layer(inputs)
    _randomize_biases(layer, rng)
    expected = reference.cond_dense(
        inputs, to_numpy(layer.kernel), _routing_reference(layer, inputs),
        to_numpy(layer.bias) if use_bias else None,
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax", "tanh", "relu"])
@pytest.mark.parametrize("hidden_units,temperature", [(None, 1.0), (6, 3.0)])
def test_routing_matches_reference(rng, tmp_path, activation, hidden_units, temperature):
    inputs = _random(rng, 3, 5, 5, 8)

    def make():
        return layers.Routing(5, activation, temperature=temperature, hidden_units=hidden_units)

    layer = make()
    layer(inputs)
    layer.bias.assign(_random(rng, 5))
    expected = reference.routing(
        inputs, to_numpy(layer.kernel), to_numpy(layer.bias), activation, temperature,
        *((to_numpy(layer.hidden_kernel), to_numpy(layer.hidden_bias)) if hidden_units else ()),
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


def test_shared_routing_in_a_block(rng, tmp_path):
    """One routing computed from the block input drives several layers (official code)."""
    inputs = _random(rng, 2, 8, 8, 4)
    routing = layers.Routing(3, name="block_routing")
    expand = layers.CondConv2D(8, 1, num_experts=3, routing=None)
    depthwise = layers.CondDepthwiseConv2D(3, num_experts=3, routing=None)
    x = keras.Input((8, 8, 4))
    r = routing(x)
    model = keras.Model(x, depthwise(expand(x, routing_weights=r), routing_weights=r))
    out = to_numpy(model(inputs))
    weights = reference.routing(inputs, to_numpy(routing.kernel), to_numpy(routing.bias))
    hidden = reference.cond_conv2d(inputs, to_numpy(expand.kernel), weights, padding="same")
    expected = reference.cond_conv2d(
        hidden.astype("float32"), to_numpy(depthwise.kernel), weights, depthwise=True,
        padding="same",
    )
    np.testing.assert_allclose(out, expected, atol=ATOL, rtol=RTOL)
    assert expand.routing_fn is None and depthwise.routing_fn is None
    path = str(tmp_path / "shared.keras")
    model.save(path)
    np.testing.assert_array_equal(to_numpy(keras.models.load_model(path)(inputs)), out)


def test_external_routing_weights_argument(rng, tmp_path):
    inputs = _random(rng, 3, 6, 6, 4)
    weights = _random(rng, 3, 5)

    def make():
        return layers.CondConv2D(4, 3, num_experts=5, routing=None, use_bias=True)

    model = run_layer_test(make, [inputs, weights], tmp_path)
    layer = model.layers[-1]
    expected = reference.cond_conv2d(
        inputs, to_numpy(layer.kernel), weights, bias=to_numpy(layer.bias), padding="same"
    )
    np.testing.assert_allclose(to_numpy(model([inputs, weights])), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kernel_size,strides,padding", [(3, 1, "same"), (3, 2, "valid"), (1, 1, "same")])
def test_identical_experts_with_normalised_routing_equal_conv2d(rng, kernel_size, strides, padding):
    inputs = _random(rng, 4, 9, 9, 3)
    conv = keras.layers.Conv2D(5, kernel_size, strides=strides, padding=padding, use_bias=True)
    conv(inputs)
    conv.bias.assign(_random(rng, 5))
    kernel, bias = (to_numpy(w) for w in conv.weights)
    cond = layers.CondConv2D(
        5, kernel_size, num_experts=4, strides=strides, padding=padding,
        use_bias=True, routing="softmax",
    )
    cond(inputs)
    cond.kernel.assign(np.stack([kernel] * 4))
    cond.bias.assign(np.stack([bias] * 4))
    cond.routing_fn.bias.assign(_random(rng, 4))
    for strategy in STRATEGIES:
        cond.strategy = strategy
        np.testing.assert_allclose(
            to_numpy(cond(inputs)), to_numpy(conv(inputs)), atol=ATOL, rtol=RTOL
        )


def _layer_loss_gradients(layer, inputs, training):
    trainable = [to_numpy(v) for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    out_shape = layer.compute_output_shape(inputs.shape)
    projection = keras.ops.convert_to_tensor(
        np.random.default_rng(7).standard_normal(out_shape).astype("float32")
    )

    def loss(x, *weights):
        out, _ = layer.stateless_call(list(weights), non_trainable, x, training=training)
        return keras.ops.sum(out * projection)

    return gradients(loss, [inputs] + trainable)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: layers.CondConv2D(4, 3, num_experts=3, strides=2, use_bias=True, strategy=s),
        lambda s: layers.CondDepthwiseConv2D(3, num_experts=3, depth_multiplier=2, strategy=s),
        lambda s: layers.CondDense(4, num_experts=3, use_bias=True, strategy=s),
        lambda s: layers.DynamicConv2D(4, 3, strategy=s),
    ],
    ids=["conv", "depthwise", "dense", "dynamic"],
)
@pytest.mark.parametrize("training", [False, True])
def test_strategies_agree_in_outputs_and_gradients(rng, make, training):
    per_example, mixture = make("per_example"), make("mixture")
    inputs = _random(rng, 3, 7, 7, 4)
    if isinstance(per_example, layers.CondDense):
        inputs = inputs[:, 0, 0]
    per_example(inputs)
    mixture(inputs)
    mixture.set_weights(per_example.get_weights())
    np.testing.assert_allclose(
        to_numpy(per_example(inputs, training=training)),
        to_numpy(mixture(inputs, training=training)),
        atol=ATOL, rtol=RTOL,
    )
    for got, want in zip(
        _layer_loss_gradients(per_example, inputs, training),
        _layer_loss_gradients(mixture, inputs, training),
    ):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)


def test_auto_strategy_follows_the_measured_rule():
    # CPUs: per-example always (measured faster on every backend); accelerators: the
    # paper's rule, mixture when training with at most 4 experts.
    resolve = layers.resolve_strategy
    for experts in (1, 2, 4, 8):
        for training in (True, False):
            assert resolve("auto", experts, training, accelerator=False) == "per_example"
    assert resolve("auto", 4, training=True, accelerator=True) == "mixture"
    assert resolve("auto", 8, training=True, accelerator=True) == "per_example"
    assert resolve("auto", 2, training=False, accelerator=True) == "per_example"
    assert resolve("mixture", 8, training=False, accelerator=False) == "mixture"
    assert resolve("per_example", 2, training=True, accelerator=True) == "per_example"
    # This CI machine has no accelerator: the layer's own question says so.
    assert resolve("auto", 2, training=True) == "per_example"


def test_expert_dropout_drops_whole_experts_in_training_only(rng):
    inputs = _random(rng, 16, 5, 5, 3)
    layer = layers.CondConv2D(4, 3, num_experts=1, expert_dropout=0.5, seed=3)
    inference = to_numpy(layer(inputs, training=False))
    np.testing.assert_array_equal(to_numpy(layer(inputs)), inference)
    trained = to_numpy(layer(inputs, training=True))
    # With one expert each example keeps it (scaled by 1 / (1 - 0.5)) or loses it.
    dropped = np.all(trained == 0, axis=(1, 2, 3))
    np.testing.assert_allclose(trained[~dropped], 2 * inference[~dropped], atol=ATOL, rtol=RTOL)
    assert 0 < dropped.sum() < len(inputs)


def test_dynamic_conv2d_softmax_attention_with_temperature(rng, tmp_path):
    inputs = _random(rng, 3, 8, 8, 16)

    def make():
        return layers.DynamicConv2D(6, 3, num_kernels=4, reduction=4, temperature=30.0)

    layer = make()
    layer(inputs)
    assert layer.routing_fn.hidden_units == 4
    assert float(to_numpy(layer.routing_fn.temperature)) == 30.0
    layer.set_routing_temperature(2.0)
    attention = _routing_reference(layer, inputs)
    np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-6)
    expected = reference.cond_conv2d(inputs, to_numpy(layer.kernel), attention, padding="same")
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


def test_dynamic_depthwise_conv2d_matches_reference(rng, tmp_path):
    inputs = _random(rng, 2, 8, 8, 8)

    def make():
        return layers.DynamicDepthwiseConv2D(3, num_kernels=3, strides=2, temperature=5.0)

    layer = make()
    layer(inputs)
    expected = reference.cond_conv2d(
        inputs, to_numpy(layer.kernel), _routing_reference(layer, inputs),
        depthwise=True, strides=2, padding="same",
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


def test_sparse_dynamic_conv2d_masks_penalty_and_density(rng, tmp_path):
    inputs = _random(rng, 3, 8, 8, 8)

    def make():
        return layers.SparseDynamicConv2D(6, 3, num_kernels=4, target_density=0.3, temperature=1.0)

    layer = make()
    layer(inputs)
    assert float(to_numpy(layer.density())) == 1.0  # tau = 0 keeps every weight
    kernel = to_numpy(layer.kernel)
    threshold = float(np.median(np.abs(kernel)))
    layer.threshold.assign(threshold)
    mask = reference.sd_conv_mask(kernel, threshold, 1.0 / 1024)
    assert 0.4 < mask.mean() < 0.6
    np.testing.assert_allclose(float(to_numpy(layer.density())), mask.mean(), atol=1e-6)
    expected = reference.cond_conv2d(
        inputs, kernel * mask, _routing_reference(layer, inputs), padding="same"
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    penalty = float(to_numpy(layer.losses[-1]))
    np.testing.assert_allclose(penalty, 0.01 * max(mask.mean() - 0.3, 0.0), rtol=1e-5)
    layer.set_target_density(0.9)
    layer(inputs)
    assert float(to_numpy(layer.losses[-1])) == 0.0
    run_layer_test(make, [inputs], tmp_path)


def test_sparse_dynamic_depthwise_conv2d_masks_its_depthwise_kernels(rng, tmp_path):
    inputs = _random(rng, 2, 8, 8, 6)

    def make():
        return layers.SparseDynamicDepthwiseConv2D(3, num_kernels=3, strides=2, temperature=1.0)

    layer = make()
    layer(inputs)
    kernel = to_numpy(layer.kernel)
    assert kernel.shape == (3, 3, 3, 6, 1)
    threshold = float(np.quantile(np.abs(kernel), 0.7))
    layer.threshold.assign(threshold)
    mask = reference.sd_conv_mask(kernel, threshold, 1.0 / 1024)
    np.testing.assert_allclose(float(to_numpy(layer.density())), mask.mean(), atol=1e-6)
    expected = reference.cond_conv2d(
        inputs, kernel * mask, _routing_reference(layer, inputs),
        depthwise=True, strides=2, padding="same",
    )
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


def test_sparse_mask_straight_through_gradient_reaches_threshold(rng):
    kernel = _random(rng, 2, 3, 3, 4, 4) * 0.1
    threshold = np.float32(np.median(np.abs(kernel)))

    def kept_fraction(k, tau):
        soft = soft_magnitude_mask(k, tau, 0.05)
        hard = soft + keras.ops.stop_gradient(keras.ops.round(soft) - soft)
        return keras.ops.mean(hard)

    grad_kernel, grad_threshold = gradients(kept_fraction, [kernel, threshold])
    assert grad_threshold < 0  # raising the threshold prunes more weights
    assert np.any(grad_kernel != 0)


@pytest.mark.parametrize("capacity,batch,activation", [(4, 1, None), (3, 3, "relu")])
def test_mod_block_matches_reference(rng, tmp_path, capacity, batch, activation):
    inputs = _random(rng, batch, 6, 6, 16)
    k = 16 // capacity

    def make():
        return layers.MoDBlock(
            keras.layers.Conv2D(k, 3, padding="same", use_bias=False), capacity=capacity,
            reduction=4, activation=activation,
        )

    layer = make()
    layer(inputs)
    block_kernel = to_numpy(layer.block.kernel)
    expected = reference.mod_block(
        inputs,
        to_numpy(layer.selector_hidden_kernel),
        to_numpy(layer.selector_kernel),
        capacity,
        lambda x: reference.conv2d(x[0], block_kernel, padding="same")[None],
    )
    if activation == "relu":
        expected = np.maximum(expected, 0.0)
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)
    run_layer_test(make, [inputs], tmp_path)


def test_mod_block_is_differentiable_through_the_scores(rng):
    inputs = _random(rng, 2, 5, 5, 8)
    layer = layers.MoDBlock(keras.layers.Conv2D(2, 1, use_bias=False), capacity=4, reduction=2)
    layer(inputs)
    grads = _layer_loss_gradients(layer, inputs, training=True)
    names = ["inputs"] + [v.path for v in layer.trainable_variables]
    for name, grad in zip(names, grads):
        assert np.any(grad != 0), f"no gradient reaches {name}"


def test_mod_block_ties_select_the_lowest_channels(rng):
    """A dead selector scores every channel 0.5: all backends pick channels 0..k-1."""
    inputs = _random(rng, 2, 4, 4, 8)
    layer = layers.MoDBlock(keras.layers.Identity(), capacity=4)
    layer(inputs)
    layer.selector_kernel.assign(np.zeros(layer.selector_kernel.shape, "float32"))
    expected = inputs.copy()
    expected[..., :2] += 0.5 * inputs[..., :2]
    np.testing.assert_allclose(to_numpy(layer(inputs)), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("seed", [None, 5])
def test_each_expert_is_initialised_like_a_conv2d_kernel(seed):
    """Fans come from one expert's shape, not E times it, and experts differ."""
    layer = layers.CondConv2D(
        64, 3, num_experts=8, kernel_initializer=keras.initializers.GlorotUniform(seed)
    )
    layer.build((None, 8, 8, 64))
    kernel = to_numpy(layer.kernel)
    limit = np.sqrt(6.0 / (9 * 64 + 9 * 64))  # Glorot for one (3, 3, 64, 64) kernel
    np.testing.assert_allclose(kernel.std(axis=(1, 2, 3, 4)), limit / np.sqrt(3), rtol=0.05)
    assert np.abs(kernel).max() <= limit
    assert not np.allclose(kernel[0], kernel[1])
