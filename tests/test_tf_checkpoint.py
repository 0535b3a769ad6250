"""`load_tf_checkpoint` reads official TensorFlow EfficientNet(-CondConv) checkpoints.

The official checkpoints cannot be downloaded here, so each test writes one: a zoo
model's weights (random, with random batch norm statistics) saved with TensorFlow's
`SaveV2` op under the official variable names and in the official layouts, as the
official code (tensorflow/tpu, models/official/efficientnet at d1f59eb, the commit
that published the CondConv checkpoints) creates them. `official_tensors` below
re-derives those names and layouts from that code, independently of the loader:

* `tf.layers` layers are named per variable scope in call order (`conv2d`,
  `conv2d_1`, `tpu_batch_normalization_1`, ...; `MBConvBlock.call` order: routing
  `dense`, expand, bn0, depthwise, bn1, `se/conv2d`, `se/conv2d_1`, project, bn2).
* The Keras CondConv layers are numbered by graph-wide counters at construction
  (each CondConv block constructs `_fused_conv`, `_expand_conv`, `_project_conv`)
  and their variables sit in the Keras model's `model/` name scope.
* Expert kernels are stored as `[E, kh*kw*I*O]`, each row one expert's HWIO kernel
  flattened by `tf.reshape(kernel, [-1])` (`get_condconv_initializer`).

OFFICIAL_NAMES and the variable counts (327 for `efficientnet-condconv-b0-4e`, 461 for
`-b0-8e-depth`, 311 for `efficientnet-b0`) were listed by running that official code
in graph mode; they pin the writer (and so the loader) to the real names.

Checkpoints hold raw values, different moving averages (`/ExponentialMovingAverage`)
and optimizer junk (`/RMSProp` slots, `global_step`). The model is built once per
module (JAX builds are slow) and its weights are overwritten with other random
values before each load, so every test loads into weights that differ everywhere.
Tolerance: the loaded weights are bit-identical to the written ones, so the logits
are the same computation; LOGITS_ATOL = 1e-5 only absorbs thread-order round-off.
"""

import dataclasses
import os
import re
import sys

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_dynconv import zoo
from keras_dynconv.weights.tf_checkpoint import load_tf_checkpoint

tf = pytest.importorskip("tensorflow")

LOGITS_ATOL = 1e-5
EMA = "/ExponentialMovingAverage"
BATCH_NORM_LEAVES = ("gamma", "beta", "moving_mean", "moving_variance")
IMAGE_SIZE = 64

# Listed by running the official builder (d1f59eb) in graph mode.
OFFICIAL_VARIABLE_COUNTS = {
    "efficientnet-condconv-b0-4e": 327,
    "efficientnet-condconv-b0-8e-depth": 461,
    "efficientnet-b0": 311,
}
# Official variable -> the zoo variable it belongs to.
OFFICIAL_NAMES = {
    "efficientnet-condconv-b0-4e": {
        "stem/conv2d/kernel": "stem_conv/kernel",
        "blocks_0/conv2d/kernel": "block0_project/kernel",
        "blocks_0/tpu_batch_normalization_1/moving_variance": "block0_project_bn/moving_variance",
        "blocks_1/conv2d_1/kernel": "block1_project/kernel",
        "blocks_7/se/conv2d_1/bias": "block7_se_expand/bias",
        "blocks_8/dense/kernel": "block8_routing/kernel",
        "model/blocks_8/cond_conv2d_1/condconv_kernel": "block8_expand/kernel",
        "model/blocks_8/depthwise_cond_conv2d/depthwise_condconv_kernel": "block8_dwconv/kernel",
        "model/blocks_15/cond_conv2d_23/condconv_kernel": "block15_project/kernel",
        "blocks_15/tpu_batch_normalization_2/gamma": "block15_project_bn/gamma",
        "head/dense/bias": "predictions/bias",
    },
    "efficientnet-condconv-b0-8e-depth": {
        "blocks_1/conv2d/kernel": "block1_project/kernel",  # expand ratio 1: no expand
        "blocks_1/tpu_batch_normalization_1/gamma": "block1_project_bn/gamma",
        "blocks_11/conv2d_1/kernel": "block11_project/kernel",
        "blocks_12/dense/kernel": "block12_routing/kernel",
        "model/blocks_12/cond_conv2d_1/condconv_kernel": "block12_expand/kernel",
        "model/blocks_22/depthwise_cond_conv2d_10/depthwise_condconv_kernel":
            "block22_dwconv/kernel",
        "model/blocks_22/cond_conv2d_32/condconv_kernel": "block22_project/kernel",
        "head/dense/kernel": "predictions/kernel",
    },
    "efficientnet-b0": {
        "blocks_0/depthwise_conv2d/depthwise_kernel": "block0_dwconv/kernel",
        "blocks_0/conv2d/kernel": "block0_project/kernel",
        "blocks_8/conv2d/kernel": "block8_expand/kernel",
        "blocks_15/se/conv2d/bias": "block15_se_reduce/bias",
        "head/conv2d/kernel": "head_conv/kernel",
    },
}


# --- the official side, written independently of the loader ------------------------------
def flatten_experts(kernel):
    """`(E, *expert shape)` -> `[E, prod]`, as `get_condconv_initializer` stacks them."""
    return tf.stack([tf.reshape(expert, [-1]) for expert in kernel]).numpy()


def official_tensors(model, model_scope, keras_name_scope="model/", fused_conv=True):
    """`{official name: array}` of `model`'s weights, as efficientnet_model.py names them.

    Args:
        keras_name_scope: the name scope of the Keras CondConv variables ("model/"
            in the official code; "" tests that the loader does not depend on it).
        fused_conv: whether each CondConv block constructs the unused `_fused_conv`
            (it does at d1f59eb), which shifts the `cond_conv2d_<k>` numbers.
    """
    weights = {variable.path: to_numpy(variable) for variable in model.weights}
    layer_names = {layer.name for layer in model.layers}
    tensors = {}

    def put(name, value):
        tensors[f"{model_scope}/{name}"] = np.asarray(value, dtype=np.float32)

    def put_batch_norm(scope, layer):
        for leaf in BATCH_NORM_LEAVES:
            put(f"{scope}/{leaf}", weights[f"{layer}/{leaf}"])

    def numbered(base, number):  # Keras' unique layer names: base, base_1, base_2...
        return base if number == 0 else f"{base}_{number}"

    put("stem/conv2d/kernel", weights["stem_conv/kernel"])
    put_batch_norm("stem/tpu_batch_normalization", "stem_bn")
    cond_conv_count = depthwise_cond_conv_count = 0  # graph-wide Keras name counters
    index = 0
    while f"block{index}_dwconv" in layer_names:
        block, scope = f"block{index}", f"blocks_{index}"
        condconv = f"{block}_routing" in layer_names
        convs = iter(("conv2d", "conv2d_1"))  # tf.layers names of this scope, call order
        norms = iter(("tpu_batch_normalization", "tpu_batch_normalization_1",
                      "tpu_batch_normalization_2"))
        if condconv:
            put(f"{scope}/dense/kernel", weights[f"{block}_routing/kernel"])
            put(f"{scope}/dense/bias", weights[f"{block}_routing/bias"])
            if fused_conv:
                cond_conv_count += 1
            expand_number, project_number = cond_conv_count, cond_conv_count + 1
            cond_conv_count += 2
            depthwise_number = depthwise_cond_conv_count
            depthwise_cond_conv_count += 1

        def put_conv(role, number):
            kernel = weights[f"{block}_{role}/kernel"]
            if condconv:
                put(f"{keras_name_scope}{scope}/{numbered('cond_conv2d', number)}/"
                    "condconv_kernel", flatten_experts(kernel))
            else:
                put(f"{scope}/{next(convs)}/kernel", kernel)

        if f"{block}_expand" in layer_names:
            put_conv("expand", expand_number if condconv else None)
            put_batch_norm(f"{scope}/{next(norms)}", f"{block}_expand_bn")
        depthwise = weights[f"{block}_dwconv/kernel"]
        if condconv:
            put(f"{keras_name_scope}{scope}/"
                f"{numbered('depthwise_cond_conv2d', depthwise_number)}/"
                "depthwise_condconv_kernel", flatten_experts(depthwise))
        else:
            put(f"{scope}/depthwise_conv2d/depthwise_kernel", depthwise)
        put_batch_norm(f"{scope}/{next(norms)}", f"{block}_dwconv_bn")
        for se_name, role in (("conv2d", "se_reduce"), ("conv2d_1", "se_expand")):
            put(f"{scope}/se/{se_name}/kernel", weights[f"{block}_{role}/kernel"])
            put(f"{scope}/se/{se_name}/bias", weights[f"{block}_{role}/bias"])
        put_conv("project", project_number if condconv else None)
        put_batch_norm(f"{scope}/{next(norms)}", f"{block}_project_bn")
        index += 1
    put("head/conv2d/kernel", weights["head_conv/kernel"])
    put_batch_norm("head/tpu_batch_normalization", "head_bn")
    put("head/dense/kernel", weights["predictions/kernel"])
    put("head/dense/bias", weights["predictions/bias"])
    return tensors


def save_checkpoint(prefix, tensors):
    """Writes `{name: array}` as a TF V2 checkpoint (`prefix.index`, `prefix.data-*`)."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[name]) for name in names],
    )
    return prefix


def training_checkpoint(raw, averages):
    """Raw variables, their moving averages and what else a training run stores."""
    tensors = dict(raw)
    tensors.update({name + EMA: value for name, value in averages.items()})
    for name in sorted(raw)[:3]:  # RMSProp's two slots per variable
        tensors[name + "/RMSProp"] = np.ones_like(raw[name])
        tensors[name + "/RMSProp_1"] = np.zeros_like(raw[name])
    tensors["global_step"] = np.array(218_949, dtype=np.int64)
    return tensors


# --- the zoo side ---------------------------------------------------------------------------
def model_variables(model):
    """Every variable the loader fills: all but Routing's non-trainable temperature."""
    return [v for v in model.weights if not v.path.endswith("_routing/temperature")]


def randomize(model, seed, statistics_only=False):
    """Random values; with `statistics_only`, only batch norms and biases change."""
    rng = np.random.default_rng(seed)
    for variable in model_variables(model):
        shape, leaf = tuple(variable.shape), variable.path.rpartition("/")[2]
        if leaf in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("beta", "moving_mean", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        elif statistics_only:
            continue
        else:
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype("float32"))


def snapshot(model):
    return {variable.path: to_numpy(variable) for variable in model_variables(model)}


def assert_weights_equal(model, expected):
    actual = snapshot(model)
    assert sorted(actual) == sorted(expected)
    for path, value in expected.items():
        np.testing.assert_array_equal(actual[path], value, err_msg=path)


def predict(model, images):
    return to_numpy(model.predict(images, batch_size=len(images), verbose=0))


@dataclasses.dataclass
class Source:
    """A CondConv-B0-4e zoo model and the official checkpoint of its weights."""

    model: keras.Model
    averages: dict  # zoo variable path -> the values written as moving averages
    raw: dict  # zoo variable path -> the (other) values written as raw variables
    raw_tensors: dict  # official name -> raw value
    average_tensors: dict  # official name -> moving average
    images: np.ndarray
    logits: np.ndarray
    directory: str
    prefix: str


MODEL_SCOPE = "efficientnet-condconv-b0-4e"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    keras.utils.set_random_seed(7)
    model = zoo.condconv_efficientnet_b0(
        num_experts=4, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), classifier_activation=None
    )
    randomize(model, seed=1, statistics_only=True)  # non-trivial batch norm statistics
    averages = snapshot(model)
    average_tensors = official_tensors(model, MODEL_SCOPE)
    images = np.random.default_rng(3).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
    images = images.astype("float32")
    logits = predict(model, images)
    randomize(model, seed=2)  # the raw variables: other values than their averages
    raw = snapshot(model)
    raw_tensors = official_tensors(model, MODEL_SCOPE)
    directory = str(tmp_path_factory.mktemp("official") / MODEL_SCOPE)
    os.makedirs(directory)
    # What the official tarballs extract to: model.ckpt.* and a `checkpoint` file.
    prefix = save_checkpoint(
        os.path.join(directory, "model.ckpt"), training_checkpoint(raw_tensors, average_tensors)
    )
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt"\n'
                'all_model_checkpoint_paths: "model.ckpt"\n')
    return Source(model, averages, raw, raw_tensors, average_tensors, images, logits,
                  directory, prefix)


@pytest.fixture
def model(source):
    """The source model with all its weights overwritten by other random values."""
    randomize(source.model, seed=4)
    return source.model


# --- tests ------------------------------------------------------------------------------------
def test_loads_the_moving_averages_and_reproduces_the_logits(source, model):
    loaded = load_tf_checkpoint(model, source.prefix)

    assert len(loaded) == OFFICIAL_VARIABLE_COUNTS[MODEL_SCOPE]
    assert all(name.endswith(EMA) for name, _ in loaded)
    assert_weights_equal(model, source.averages)
    deviation = np.max(np.abs(predict(model, source.images) - source.logits))
    assert deviation <= LOGITS_ATOL, f"max |logits difference| = {deviation:.3g}"


def test_prefer_ema_false_reads_the_raw_variables_under_official_names(source, model):
    loaded = dict(load_tf_checkpoint(model, source.prefix, prefer_ema=False))

    assert_weights_equal(model, source.raw)
    assert set(loaded) == set(source.raw_tensors)  # every model variable, no junk
    assert len(loaded) == OFFICIAL_VARIABLE_COUNTS[MODEL_SCOPE]
    for name, path in OFFICIAL_NAMES[MODEL_SCOPE].items():
        assert loaded[f"{MODEL_SCOPE}/{name}"] == path


@pytest.mark.parametrize("form", ["directory", "index file"])
def test_path_may_be_the_extracted_directory_or_a_checkpoint_file(source, model, form):
    path = source.directory if form == "directory" else source.prefix + ".index"
    load_tf_checkpoint(model, path)
    assert_weights_equal(model, source.averages)


def test_keras_layer_numbers_and_name_scope_may_differ(source, model, tmp_path):
    # Without the `model/` name scope and without the unused fused conv in the
    # numbering: still one expand and one project `cond_conv2d_<k>` per block.
    tensors = official_tensors(model, MODEL_SCOPE, keras_name_scope="", fused_conv=False)
    assert f"{MODEL_SCOPE}/blocks_8/cond_conv2d/condconv_kernel" in tensors
    expected = snapshot(model)
    prefix = save_checkpoint(str(tmp_path / "model.ckpt"), tensors)
    randomize(model, seed=5)

    load_tf_checkpoint(model, prefix)
    assert_weights_equal(model, expected)


def broken_checkpoint(source, tmp_path, edit):
    tensors = training_checkpoint(source.raw_tensors, source.average_tensors)
    edit(tensors)
    return save_checkpoint(str(tmp_path / "model.ckpt"), tensors)


def assert_load_fails_unchanged(model, prefix, message):
    before = snapshot(model)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_tf_checkpoint(model, prefix)
    assert_weights_equal(model, before)


def test_missing_variable_is_named(source, model, tmp_path):
    name = f"{MODEL_SCOPE}/blocks_3/tpu_batch_normalization_1/moving_variance"

    def drop(tensors):
        del tensors[name], tensors[name + EMA]

    assert_load_fails_unchanged(model, broken_checkpoint(source, tmp_path, drop), name)


def test_mis_shaped_variable_is_named(source, model, tmp_path):
    name = f"{MODEL_SCOPE}/model/blocks_9/depthwise_cond_conv2d_1/depthwise_condconv_kernel"

    def widen(tensors):  # 8 experts where the model has 4
        tensors[name + EMA] = np.concatenate([tensors[name + EMA]] * 2)

    assert_load_fails_unchanged(model, broken_checkpoint(source, tmp_path, widen), name + EMA)


def test_unused_model_variable_is_named(source, model, tmp_path):
    name = f"{MODEL_SCOPE}/blocks_3/se/conv2d_2/kernel"

    def add(tensors):
        tensors[name] = np.zeros((1, 1, 6, 144), np.float32)

    assert_load_fails_unchanged(model, broken_checkpoint(source, tmp_path, add), name)


def test_reading_needs_tensorflow(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` fails
    with pytest.raises(ImportError, match="pip install tensorflow-cpu"):
        load_tf_checkpoint(None, "model.ckpt")


# Other official checkpoints: naming covered on the architecture backend (torch).
OTHER_CHECKPOINTS = {
    # The names do not depend on the number of experts: 2 keeps the model small.
    "efficientnet-condconv-b0-8e-depth": (zoo.condconv_efficientnet_b0_depth,
                                          dict(num_experts=2)),
    "efficientnet-b0": (zoo.efficientnet_b0, {}),
}


@pytest.mark.architecture
@pytest.mark.parametrize("model_scope", sorted(OTHER_CHECKPOINTS))
def test_official_names_cover_every_layer(model_scope, tmp_path):
    builder, kwargs = OTHER_CHECKPOINTS[model_scope]
    model = builder(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), **kwargs)
    randomize(model, seed=6)
    expected = snapshot(model)
    tensors = official_tensors(model, model_scope)
    assert len(tensors) == OFFICIAL_VARIABLE_COUNTS[model_scope]
    prefix = save_checkpoint(str(tmp_path / "model.ckpt"), tensors)
    randomize(model, seed=7)

    loaded = dict(load_tf_checkpoint(model, prefix))

    assert_weights_equal(model, expected)
    assert set(loaded) == set(tensors)
    for name, path in OFFICIAL_NAMES[model_scope].items():
        assert loaded[f"{model_scope}/{name}"] == path
