"""The MADDs / parameter profiler: exact on small models, the papers' tables on the zoo."""

import keras
import numpy as np
import pytest
import reference

from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.utils import count_madds
from keras_dynconv.utils import count_params
from keras_dynconv.utils import madds_by_layer
from keras_dynconv.zoo.registry import model_entry

PAPER_TOLERANCE = 0.02  # the bar: within 2% of the published figure


def _small_dynamic_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.CondConv2D(12, 1, num_experts=3, use_bias=True, name="cond")(x)
    routing = layers.Routing(2, name="shared_routing")(x)
    x = layers.CondDepthwiseConv2D(3, num_experts=2, routing=None, name="cond_dw")(
        x, routing_weights=routing
    )
    block = keras.Sequential([keras.layers.Conv2D(3, 3, padding="same", name="inner")])
    x = layers.MoDBlock(block, capacity=4, name="mod")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_madds_of_each_layer_follow_the_documented_convention():
    positions = 8 * 8  # every layer after the stride-2 conv runs on 8x8
    expected = {
        "conv": positions * 3 * 3 * 3 * 8,
        "dw": positions * 3 * 3 * 8,
        # per-example 1x1 conv + E per kernel and bias parameter + own routing C*E
        "cond": positions * 8 * 12 + 3 * (8 * 12 + 12) + 8 * 3,
        "shared_routing": 12 * 2,
        "cond_dw": positions * 3 * 3 * 12 + 2 * (3 * 3 * 12),
        # selector 12 -> max(12 // 16, 1) -> 12, then the block on k = 12 // 4 channels
        "mod": 12 * 1 + 1 * 12,
        "mod/inner": positions * 3 * 3 * 3 * 3,
        "dense": 12 * 5,
    }
    model = _small_dynamic_model()
    assert {k.split("/")[0] + ("/inner" if k.endswith("inner") else ""): v
            for k, v in madds_by_layer(model).items()} == expected
    assert count_madds(model) == sum(expected.values())


def test_sparse_layers_count_the_weights_their_masks_keep(rng):
    inputs = keras.Input((8, 8, 6))
    layer = layers.SparseDynamicConv2D(4, 3, num_kernels=3, name="sparse")
    model = keras.Model(inputs, layer(inputs))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    threshold = float(np.quantile(np.abs(kernel), 0.6))
    layer.threshold.assign(threshold)
    mask = reference.sd_conv_mask(kernel, threshold, 1.0 / 1024) > 0.5
    attention = 6 * 4 + 4 * 3  # GAP -> FC(max(6 // 16, 4)) -> FC(K)
    dense = 64 * 3 * 3 * 6 * 4 + 3 * kernel[0].size + attention
    sparse = 64 * int(mask.any(axis=0).sum()) + int(mask.sum()) + attention
    assert count_madds(model, sparse=False) == dense
    assert count_madds(model) == sparse < dense


def test_count_params_splits_trainable_and_non_trainable():
    model = _small_dynamic_model()
    counts = count_params(model)
    assert counts.trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert counts.non_trainable == sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert counts.total == counts.trainable + counts.non_trainable
    # Routing temperatures are schedule variables, not parameters to train.
    assert counts.non_trainable == 2


def test_madds_need_a_fixed_input_shape():
    model = zoo.mobilenet_v1(include_top=False, alpha=0.25)
    with pytest.raises(ValueError, match="fixed input shape"):
        count_madds(model)


PAPER_FIGURES = [
    (name, figure)
    for name in zoo.list_models()
    for figure in model_entry(name).paper
]


@pytest.mark.architecture
@pytest.mark.parametrize(
    "name,figure", PAPER_FIGURES, ids=[f"{n}-{f.source}" for n, f in PAPER_FIGURES]
)
def test_madds_reproduce_the_papers_tables(name, figure):
    model = zoo.get_model(
        name, input_shape=(figure.size, figure.size, 3), **figure.builder_arguments()
    )
    madds = count_madds(model)
    assert abs(madds / figure.madds - 1) <= PAPER_TOLERANCE, (
        f"{name}: {madds / 1e6:.1f}M MADDs, {figure.source} says {figure.madds / 1e6:.1f}M"
    )


@pytest.mark.architecture
@pytest.mark.parametrize(
    "name,experts,timm_name",
    [
        ("condconv_efficientnet_b0", 4, "tf_efficientnet_cc_b0_4e"),
        ("condconv_efficientnet_b0", 8, "tf_efficientnet_cc_b0_8e"),
        ("condconv_efficientnet_b1", 8, "tf_efficientnet_cc_b1_8e"),
        ("efficientnet_lite0", None, "efficientnet_lite0"),
        ("mnasnet_a1", None, "semnasnet_100"),
        ("efficientnet_b0", None, "tf_efficientnet_b0"),
        ("mobilenet_v2", None, "mobilenetv2_100"),
    ],
)
def test_trainable_params_equal_timm(name, experts, timm_name, repo_root):
    """timm's counts, from the golden files scripts/timm_golden.py writes."""
    import json
    import os

    golden_path = os.path.join(repo_root, "tests", "golden", "timm", f"{timm_name}.json")
    with open(golden_path) as file:
        golden = json.load(file)
    arguments = {"num_experts": experts} if experts else {}
    model = zoo.get_model(name, input_shape=(64, 64, 3), **arguments)
    assert count_params(model).trainable == golden["trainable_params"]
