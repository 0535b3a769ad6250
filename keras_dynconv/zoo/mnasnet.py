"""MnasNet-A1 and CondConv-MnasNet-A1."""

from keras_dynconv.zoo.conversion import STATIC_KNOBS
from keras_dynconv.zoo.conversion import CONDCONV_LAST_THREE_GROUPS
from keras_dynconv.zoo.inverted_residual import InvertedResidualArchitecture
from keras_dynconv.zoo.inverted_residual import build_inverted_residual_network
from keras_dynconv.zoo.registry import PaperFigure
from keras_dynconv.zoo.registry import variant

# Tan et al. (2019), Fig. 7; timm's _gen_mnasnet_a1 (semnasnet_100).
MNASNET_A1_TABLE = (
    "ds_r1_k3_s1_e1_c16_noskip",
    "ir_r2_k3_s2_e6_c24",
    "ir_r3_k5_s2_e3_c40_se0.25",
    "ir_r4_k3_s2_e6_c80",
    "ir_r2_k3_s1_e6_c112_se0.25",
    "ir_r3_k5_s2_e6_c160_se0.25",
    "ir_r1_k3_s1_e6_c320",
)

# timm's semnasnet_100: ReLU, PyTorch padding and BatchNorm, ImageNet mean/std.
MNASNET_A1 = InvertedResidualArchitecture(
    table=MNASNET_A1_TABLE,
    activation="relu",
    normalization="imagenet",
    padding="symmetric",
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    head_scaling="fixed",
)
_FIXED = dict(alpha=1.0, alphas=None, depth=1.0, mod_capacity=None)

mnasnet_a1 = variant(
    build_inverted_residual_network, "mnasnet_a1", "mnasnet",
    "MnasNet-A1 (Tan et al., 2019), as timm's semnasnet_100.",
    paper=(PaperFigure(312e6, "CondConv Table 1"),),
    fixed=dict(architecture=MNASNET_A1, **_FIXED, **STATIC_KNOBS),
    defaults=dict(dropout_rate=0.2, drop_connect_rate=0.2),
)
condconv_mnasnet_a1 = variant(
    build_inverted_residual_network, "condconv_mnasnet_a1", "mnasnet",
    "CondConv-MnasNet-A1: the final 3 block groups CondConv (Appendix A).",
    paper=(PaperFigure(325e6, "CondConv Table 1"),),
    fixed=dict(architecture=MNASNET_A1, conversion=CONDCONV_LAST_THREE_GROUPS, **_FIXED),
    defaults=dict(num_experts=8, dropout_rate=0.2, drop_connect_rate=0.2),
)
