"""MobileNetV2 and its CondConv, dynamic, sparse dynamic and Mixture-of-Depths versions."""

from keras_dynconv.zoo.conversion import STATIC_KNOBS
from keras_dynconv.zoo.conversion import Conversion
from keras_dynconv.zoo.inverted_residual import InvertedResidualArchitecture
from keras_dynconv.zoo.inverted_residual import build_inverted_residual_network
from keras_dynconv.zoo.registry import PaperFigure
from keras_dynconv.zoo.registry import variant

# Sandler et al. (2018), Table 2 (t, c, n, s); keras.applications.MobileNetV2.
MOBILENET_V2_TABLE = (
    "ds_r1_k3_s1_e1_c16",
    "ir_r2_k3_s2_e6_c24",
    "ir_r3_k3_s2_e6_c32",
    "ir_r4_k3_s2_e6_c64",
    "ir_r3_k3_s1_e6_c96",
    "ir_r3_k3_s2_e6_c160",
    "ir_r1_k3_s1_e6_c320",
)
# The width multipliers keras.applications publishes weights for.
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)

# keras.applications.MobileNetV2: ReLU6, BN eps 1e-3 momentum 0.999, (x - 127.5) / 127.5.
MOBILENET_V2 = InvertedResidualArchitecture(
    table=MOBILENET_V2_TABLE,
    activation="relu6",
    normalization="inception",
    padding="same",
    bn_momentum=0.999,
    head_scaling="grow_only",
)

# CondConv paper, Appendix A: the final 6 inverted residual blocks and the classifier.
CONDCONV_MOBILENET_V2 = Conversion(kind="condconv", first_block=-6, classifier=True)
# SD-Conv, Sec. 5: every convolution except the first (the head 1x1 conv included);
# the classifier stays static. DY-Conv's attention reduction is 4, SD-Conv's 16.
DYNAMIC_ALL_CONVS = Conversion(kind="dynamic", num_experts=4, head_conv=True, reduction=4)
SPARSE_ALL_CONVS = Conversion(kind="sparse", num_experts=4, head_conv=True, reduction=16)

_SD_CONV_TABLE_2 = "SD-Conv Table 2a"
_FAMILY = "mobilenet_v2"
_WIDTH = dict(alphas=MOBILENET_V2_ALPHAS, depth=1.0, drop_connect_rate=0.0)

mobilenet_v2 = variant(
    build_inverted_residual_network, "mobilenet_v2", _FAMILY,
    "MobileNetV2 (Sandler et al., 2018), as keras.applications.MobileNetV2.",
    paper=(PaperFigure(301e6, "CondConv Table 1"), PaperFigure(300e6, _SD_CONV_TABLE_2)),
    fixed=dict(architecture=MOBILENET_V2, mod_capacity=None, **_WIDTH, **STATIC_KNOBS),
    defaults=dict(dropout_rate=0.0),
)
condconv_mobilenet_v2 = variant(
    build_inverted_residual_network, "condconv_mobilenet_v2", _FAMILY,
    "CondConv-MobileNetV2: last 6 blocks and the classifier CondConv (Appendix A).",
    paper=(PaperFigure(329e6, "CondConv Table 1"),),
    fixed=dict(architecture=MOBILENET_V2, conversion=CONDCONV_MOBILENET_V2, mod_capacity=None,
               **_WIDTH),
    defaults=dict(num_experts=8, dropout_rate=0.0),
)
dynamic_mobilenet_v2 = variant(
    build_inverted_residual_network, "dynamic_mobilenet_v2", _FAMILY,
    "DY-MobileNetV2 (Chen et al., 2020): every conv but the stem dynamic, K = 4.",
    paper=(PaperFigure(312.9e6, _SD_CONV_TABLE_2),),
    fixed=dict(architecture=MOBILENET_V2, conversion=DYNAMIC_ALL_CONVS, mod_capacity=None,
               routing=None, **_WIDTH),
    defaults=dict(num_experts=4, dropout_rate=0.0),
)
sparse_dynamic_mobilenet_v2 = variant(
    build_inverted_residual_network, "sparse_dynamic_mobilenet_v2", _FAMILY,
    "SD-MobileNetV2 (He et al., SD-Conv): DY-MobileNetV2 with learned sparse masks.",
    fixed=dict(architecture=MOBILENET_V2, conversion=SPARSE_ALL_CONVS, mod_capacity=None,
               routing=None, **_WIDTH),
    defaults=dict(num_experts=4, dropout_rate=0.0),
)
mobilenet_v2_mod = variant(
    build_inverted_residual_network, "mobilenet_v2_mod", _FAMILY,
    "MobileNetV2-MoD (CNN Mixture-of-Depths): every second repeated block is a MoD "
    "block with capacity c = 16.",
    fixed=dict(architecture=MOBILENET_V2, **_WIDTH, **STATIC_KNOBS),
    defaults=dict(mod_capacity=16, dropout_rate=0.0),
)
