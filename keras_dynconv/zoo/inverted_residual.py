"""One builder for the inverted-residual family: EfficientNet, MobileNetV2, MnasNet.

The architecture is an `InvertedResidualArchitecture` (a block table plus stem, head
and normalisation choices); which layers are dynamic is a `Conversion`. The block
follows keras.applications' EfficientNet / MobileNetV2 and timm's InvertedResidual:
expand 1x1 -> BN -> act -> depthwise -> BN -> act -> [squeeze-excite] -> project 1x1
-> BN -> [drop connect + residual]. In a CondConv block one routing function on the
block input is shared by the expand, depthwise and project convolutions; SE stays
static (official CondConv-EfficientNet, tensorflow/tpu condconv_layers).
"""

import dataclasses
import typing

import keras

from keras_dynconv import layers as dynamic_layers
from keras_dynconv.layers import validation
from keras_dynconv.zoo import arguments
from keras_dynconv.zoo.block_table import make_divisible
from keras_dynconv.zoo.block_table import parse_block_string
from keras_dynconv.zoo.block_table import scale_filters
from keras_dynconv.zoo.block_table import scale_repeats
from keras_dynconv.zoo.conversion import Conversion
from keras_dynconv.zoo.conversion import LayerFactory


@dataclasses.dataclass(frozen=True)
class InvertedResidualArchitecture:
    """Everything that defines a network of the family except its dynamic layers.

    Attributes:
        table: block strings (see `block_table`).
        stem_filters, head_filters: channels of the stem conv and of the final 1x1
            conv at width 1.
        scale_stem: whether the stem follows the width multiplier (not in Lite).
        head_scaling: "scaled" (EfficientNet), "grow_only" (MobileNetV2: only for
            widths above 1) or "fixed" (Lite, MnasNet).
        activation: "swish", "relu6" or "relu".
        normalization: input normalisation (`preprocessing.NORMALIZATIONS` key).
        padding: "same" or "symmetric" (see `LayerFactory`).
        bn_epsilon, bn_momentum: batch norm settings of the reference.
        kernel_initializer, dense_initializer: initializers of the reference.
        default_size: the input size the reference is trained at.
    """

    table: tuple
    stem_filters: int = 32
    head_filters: int = 1280
    scale_stem: bool = True
    head_scaling: str = "scaled"
    activation: str = "swish"
    normalization: str = "imagenet"
    padding: str = "same"
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    kernel_initializer: object = "glorot_uniform"
    dense_initializer: object = "glorot_uniform"
    default_size: int = 224

    def stem_filters_at(self, width):
        return make_divisible(self.stem_filters * width) if self.scale_stem else self.stem_filters

    def head_filters_at(self, width):
        scaled = self.head_scaling == "scaled" or (self.head_scaling == "grow_only" and width > 1)
        return make_divisible(self.head_filters * width) if scaled else self.head_filters


def _activation(inputs, activation, name):
    return keras.layers.Activation(activation, name=name)(inputs)


def _squeeze_excite(inputs, reduced_filters, activation, initializer, name):
    channels = inputs.shape[-1]
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(inputs)
    x = dynamic_layers.Conv2D(
        reduced_filters, 1, activation=activation, kernel_initializer=initializer,
        name=f"{name}_reduce",
    )(x)
    x = dynamic_layers.Conv2D(
        channels, 1, activation="sigmoid", kernel_initializer=initializer,
        name=f"{name}_expand",
    )(x)
    return keras.layers.Multiply(name=f"{name}_excite")([inputs, x])


def inverted_residual_block(
    inputs, factory, arch, group, stride, filters, name, dynamic=False, drop_rate=0.0
):
    """One inverted-residual (or depthwise-separable) block; returns its output."""
    input_filters = inputs.shape[-1]
    routing = factory.block_routing(inputs, f"{name}_routing") if dynamic else None
    dynamic_args = dict(dynamic=dynamic, routing_weights=routing)
    x = inputs
    if group.expansion != 1:
        x = factory.conv(
            x, int(input_filters * group.expansion), 1, f"{name}_expand", **dynamic_args
        )
        x = factory.batch_norm(x, f"{name}_expand_bn")
        x = _activation(x, arch.activation, f"{name}_expand_act")
    x = factory.depthwise(x, group.kernel_size, f"{name}_dwconv", strides=stride, **dynamic_args)
    x = factory.batch_norm(x, f"{name}_dwconv_bn")
    x = _activation(x, arch.activation, f"{name}_dwconv_act")
    if group.se_ratio > 0:
        x = _squeeze_excite(
            x, max(1, int(input_filters * group.se_ratio)), arch.activation,
            arch.kernel_initializer, f"{name}_se",
        )
    x = factory.conv(x, filters, 1, f"{name}_project", **dynamic_args)
    x = factory.batch_norm(x, f"{name}_project_bn")
    if group.skip and stride == 1 and input_filters == filters:
        if drop_rate > 0:
            x = keras.layers.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop"
            )(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _mod_inner_block(channels, arch, group, name):
    """The inverted residual a MoD block runs on its k selected channels."""

    def batch_norm(suffix):
        return dynamic_layers.BatchNormalization(
            epsilon=arch.bn_epsilon, momentum=arch.bn_momentum, name=f"{name}_{suffix}"
        )

    return keras.Sequential(
        [
            dynamic_layers.Conv2D(
                int(channels * group.expansion), 1, use_bias=False, name=f"{name}_expand"
            ),
            batch_norm("expand_bn"),
            keras.layers.Activation(arch.activation, name=f"{name}_expand_act"),
            dynamic_layers.DepthwiseConv2D(
                group.kernel_size, padding="same", use_bias=False, name=f"{name}_dwconv"
            ),
            batch_norm("dwconv_bn"),
            keras.layers.Activation(arch.activation, name=f"{name}_dwconv_act"),
            dynamic_layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_project"),
            batch_norm("project_bn"),
        ],
        name=name,
    )


class PlannedBlock(typing.NamedTuple):
    """One block of the network after width and depth scaling."""

    group: object  # its BlockGroup
    stride: int
    filters: int
    level: int  # log2 of the block's output stride
    repeat: int  # index of the block in its group
    group_index: int


def flat_blocks(arch, width, depth):
    """A `PlannedBlock` for every block of `arch` at width and depth multipliers."""
    blocks = []
    level = 1  # the stem has stride 2
    for group_index, group in enumerate(map(parse_block_string, arch.table)):
        filters = scale_filters(group.filters, width)
        for repeat in range(scale_repeats(group.repeats, depth)):
            stride = group.stride if repeat == 0 else 1
            level += stride == 2
            blocks.append(PlannedBlock(group, stride, filters, level, repeat, group_index))
    return blocks


def build_inverted_residual_network(
    *,
    architecture,
    conversion=Conversion(),
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="inverted_residual_network",
    alpha=1.0,
    alphas=None,
    depth=1.0,
    num_experts=None,
    routing=None,
    strategy=None,
    dropout_rate=0.2,
    drop_connect_rate=0.0,
    mod_capacity=None,
    padding=None,
    include_preprocessing=True,
    normalization=None,
):
    """Builds a network of the inverted-residual family as a functional `keras.Model`.

    Args:
        architecture: an `InvertedResidualArchitecture`.
        conversion: a `Conversion`: which blocks are CondConv / dynamic / sparse.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`. Models take raw
            [0, 255] RGB; `weights` is None, a registered name or a `.weights.h5` path.
        alpha: width multiplier (`alphas`, when given, lists the valid values).
        depth: depth multiplier (EfficientNet's compound scaling; 1.1 for B1).
        num_experts, routing, strategy: override the conversion's experts (or
            kernels), CondConv routing activation and aggregation strategy.
        dropout_rate: before the classifier.
        drop_connect_rate: stochastic depth of residual blocks, growing linearly
            with depth to this rate (keras.applications' EfficientNet rule).
        mod_capacity: capacity c of CNN Mixture-of-Depths blocks placed at every
            second shape-keeping block of a group; None for none.
        padding: "same" (TF) or "symmetric" (PyTorch); None for the reference's.
        include_preprocessing: normalise [0, 255] inputs inside the model.
        normalization: input normalisation (`preprocessing.NORMALIZATIONS` key);
            None for the reference's (the architecture's). Pretrained weights set it.
    """
    if alphas is not None:
        validation.one_of("alpha", alpha, alphas)
    conversion = conversion.with_overrides(
        num_experts=num_experts, routing=routing, strategy=strategy
    )
    application = arguments.ApplicationArguments(
        name, include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation,
    )
    image, inputs = application.inputs(architecture.default_size)
    factory = LayerFactory(
        conversion,
        padding=padding or architecture.padding,
        bn_epsilon=architecture.bn_epsilon,
        bn_momentum=architecture.bn_momentum,
        kernel_initializer=architecture.kernel_initializer,
        dense_initializer=architecture.dense_initializer,
    )
    normalization = normalization or architecture.normalization
    x = arguments.preprocess(image, normalization, include_preprocessing)
    x = factory.conv(x, architecture.stem_filters_at(alpha), 3, "stem_conv", strides=2)
    x = factory.batch_norm(x, "stem_bn")
    x = _activation(x, architecture.activation, "stem_act")

    blocks = flat_blocks(architecture, alpha, depth)
    level = 1
    for index, block in enumerate(blocks):
        if block.level != level:
            x = arguments.pyramid_level(x, level)
            level = block.level
        block_name = f"block{index}"
        keeps_shape = block.stride == 1 and x.shape[-1] == block.filters and block.group.skip
        if mod_capacity and keeps_shape and block.repeat % 2 == 1:
            inner = _mod_inner_block(
                x.shape[-1] // mod_capacity, architecture, block.group, f"{block_name}_inner"
            )
            x = dynamic_layers.MoDBlock(
                inner, capacity=mod_capacity, name=f"{block_name}_mod"
            )(x)
            continue
        x = inverted_residual_block(
            x, factory, architecture, block.group, block.stride, block.filters, block_name,
            dynamic=conversion.converts_block(
                index, len(blocks), block.group_index, len(architecture.table)
            ),
            drop_rate=drop_connect_rate * index / len(blocks),
        )
    x = factory.conv(
        x, architecture.head_filters_at(alpha), 1, "head_conv", dynamic=conversion.head_conv
    )
    x = factory.batch_norm(x, "head_bn")
    x = _activation(x, architecture.activation, "head_act")
    x = arguments.pyramid_level(x, level)
    return application.finish(x, inputs, factory, dropout_rate)
