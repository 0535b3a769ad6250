"""EfficientNet-B0/B1, EfficientNet-Lite0 and their CondConv versions."""

import dataclasses

from keras_dynconv.zoo.conversion import STATIC_KNOBS
from keras_dynconv.zoo.conversion import CONDCONV_LAST_THREE_GROUPS
from keras_dynconv.zoo.inverted_residual import InvertedResidualArchitecture
from keras_dynconv.zoo.inverted_residual import build_inverted_residual_network
from keras_dynconv.zoo.registry import PaperFigure
from keras_dynconv.zoo.registry import variant

# Tan & Le (2019), Table 1; keras.applications' DEFAULT_BLOCKS_ARGS; timm's arch_def.
EFFICIENTNET_B0_TABLE = (
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r2_k3_s2_e6_c24_se0.25",
    "ir_r2_k5_s2_e6_c40_se0.25",
    "ir_r3_k3_s2_e6_c80_se0.25",
    "ir_r3_k5_s1_e6_c112_se0.25",
    "ir_r4_k5_s2_e6_c192_se0.25",
    "ir_r1_k3_s1_e6_c320_se0.25",
)
# Lite: no squeeze-excite, ReLU6, stem and head not scaled (timm's efficientnet_lite).
EFFICIENTNET_LITE_TABLE = tuple(row.replace("_se0.25", "") for row in EFFICIENTNET_B0_TABLE)

# keras.applications.efficientnet's CONV_KERNEL_INITIALIZER / DENSE_KERNEL_INITIALIZER.
CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
DENSE_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}

# keras.applications.EfficientNetB0: TF "same" padding, BN eps 1e-3, ImageNet mean/std.
EFFICIENTNET = InvertedResidualArchitecture(
    table=EFFICIENTNET_B0_TABLE,
    activation="swish",
    normalization="imagenet",
    padding="same",
    kernel_initializer=CONV_INITIALIZER,
    dense_initializer=DENSE_INITIALIZER,
)
# timm's tf_efficientnet_cc_*: as above, with inputs scaled by mean = std = 0.5.
CONDCONV_EFFICIENTNET = InvertedResidualArchitecture(
    table=EFFICIENTNET_B0_TABLE,
    activation="swish",
    normalization="inception",
    padding="same",
    kernel_initializer=CONV_INITIALIZER,
    dense_initializer=DENSE_INITIALIZER,
)
# timm's efficientnet_lite0 (the layout of the ImageNet Lite0 weights reachable
# offline): PyTorch padding and BatchNorm epsilon, ImageNet mean/std.
EFFICIENTNET_LITE = InvertedResidualArchitecture(
    table=EFFICIENTNET_LITE_TABLE,
    activation="relu6",
    normalization="imagenet",
    padding="symmetric",
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    scale_stem=False,
    head_scaling="fixed",
    kernel_initializer=CONV_INITIALIZER,
    dense_initializer=DENSE_INITIALIZER,
)


_CONDCONV_TABLE_1 = "CondConv Table 1"
# EfficientNets scale by compound coefficients, not by a free width multiplier.
FIXED_WIDTH = dict(alpha=1.0, alphas=None, mod_capacity=None)

efficientnet_b0 = variant(
    build_inverted_residual_network, "efficientnet_b0", "efficientnet",
    "EfficientNet-B0 (Tan & Le, 2019), as keras.applications.EfficientNetB0.",
    paper=(PaperFigure(391e6, _CONDCONV_TABLE_1),),
    fixed=dict(architecture=EFFICIENTNET, **FIXED_WIDTH, depth=1.0, **STATIC_KNOBS),
    defaults=dict(dropout_rate=0.2, drop_connect_rate=0.2),
)
efficientnet_b1 = variant(
    build_inverted_residual_network, "efficientnet_b1", "efficientnet",
    "EfficientNet-B1: depth 1.1 at 240x240, as keras.applications.EfficientNetB1.",
    default_size=240,
    paper=(PaperFigure(700e6, "CondConv Appendix A (EfficientNet-B1)", size=240),),
    fixed=dict(architecture=dataclasses.replace(EFFICIENTNET, default_size=240),
               **FIXED_WIDTH, depth=1.1, **STATIC_KNOBS),
    defaults=dict(dropout_rate=0.2, drop_connect_rate=0.2),
)
efficientnet_lite0 = variant(
    build_inverted_residual_network, "efficientnet_lite0", "efficientnet",
    "EfficientNet-Lite0 in timm's layout (no SE, ReLU6, symmetric padding).",
    fixed=dict(architecture=EFFICIENTNET_LITE, **FIXED_WIDTH, depth=1.0, **STATIC_KNOBS),
    defaults=dict(dropout_rate=0.2, drop_connect_rate=0.2),
)
condconv_efficientnet_b0 = variant(
    build_inverted_residual_network, "condconv_efficientnet_b0", "efficientnet",
    "CondConv-EfficientNet-B0 (official efficientnet-condconv-b0-{4e,8e}; timm "
    "tf_efficientnet_cc_b0_{4e,8e}).",
    paper=(PaperFigure(413e6, _CONDCONV_TABLE_1),),
    fixed=dict(architecture=CONDCONV_EFFICIENTNET, conversion=CONDCONV_LAST_THREE_GROUPS,
               **FIXED_WIDTH, depth=1.0),
    defaults=dict(num_experts=8, dropout_rate=0.25, drop_connect_rate=0.2),
)
condconv_efficientnet_b0_depth = variant(
    build_inverted_residual_network, "condconv_efficientnet_b0_depth", "efficientnet",
    "CondConv-EfficientNet-B0-depth: B0 with depth coefficient 1.1 "
    "(official efficientnet-condconv-b0-8e-depth).",
    paper=(PaperFigure(614e6, "CondConv Appendix A (B0-depth)"),),
    fixed=dict(architecture=CONDCONV_EFFICIENTNET, conversion=CONDCONV_LAST_THREE_GROUPS,
               **FIXED_WIDTH, depth=1.1),
    defaults=dict(num_experts=8, dropout_rate=0.25, drop_connect_rate=0.2),
)
condconv_efficientnet_b1 = variant(
    build_inverted_residual_network, "condconv_efficientnet_b1", "efficientnet",
    "CondConv-EfficientNet-B1 (timm tf_efficientnet_cc_b1_8e).",
    default_size=240,
    fixed=dict(architecture=dataclasses.replace(CONDCONV_EFFICIENTNET, default_size=240),
               conversion=CONDCONV_LAST_THREE_GROUPS, **FIXED_WIDTH, depth=1.1),
    defaults=dict(num_experts=8, dropout_rate=0.25, drop_connect_rate=0.2),
)
condconv_efficientnet_lite0 = variant(
    build_inverted_residual_network, "condconv_efficientnet_lite0", "efficientnet",
    "CondConv-EfficientNet-Lite0: Lite0 with its last three block groups CondConv.",
    fixed=dict(architecture=EFFICIENTNET_LITE, conversion=CONDCONV_LAST_THREE_GROUPS,
               **FIXED_WIDTH, depth=1.0),
    defaults=dict(num_experts=8, dropout_rate=0.2, drop_connect_rate=0.2),
)
