"""MobileNetV1 and CondConv-MobileNetV1."""

import keras

from keras_dynconv.layers import validation
from keras_dynconv.zoo import arguments
from keras_dynconv.zoo.block_table import parse_block_string
from keras_dynconv.zoo.conversion import STATIC_KNOBS
from keras_dynconv.zoo.conversion import Conversion
from keras_dynconv.zoo.conversion import LayerFactory
from keras_dynconv.zoo.registry import PaperFigure
from keras_dynconv.zoo.registry import variant

# Howard et al. (2017), Table 1: 13 depthwise-separable blocks after a 3x3 stem.
MOBILENET_V1_TABLE = (
    "ds_r1_k3_s1_c64",
    "ds_r1_k3_s2_c128",
    "ds_r1_k3_s1_c128",
    "ds_r1_k3_s2_c256",
    "ds_r1_k3_s1_c256",
    "ds_r1_k3_s2_c512",
    "ds_r5_k3_s1_c512",
    "ds_r1_k3_s2_c1024",
    "ds_r1_k3_s1_c1024",
)
# The width multipliers keras.applications publishes weights for.
MOBILENET_V1_ALPHAS = (0.25, 0.5, 0.75, 1.0)
STEM_FILTERS = 32

# CondConv paper, Appendix A: the convolutions from the sixth separable block on and
# the classifier; routing shared by the depthwise and pointwise conv of a block.
CONDCONV_MOBILENET_V1 = Conversion(kind="condconv", first_block=5, classifier=True)


def build_mobilenet_v1(
    *,
    conversion=Conversion(),
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="mobilenet_v1",
    alpha=1.0,
    num_experts=None,
    routing=None,
    strategy=None,
    dropout_rate=1e-3,
    padding="same",
    include_preprocessing=True,
    normalization=None,
):
    """Builds MobileNetV1 as keras.applications.MobileNet does, optionally CondConv.

    Args:
        conversion: which blocks are dynamic (see `Conversion`).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`; raw [0, 255] RGB in.
        alpha: width multiplier, one of 0.25, 0.5, 0.75, 1.0 (channels `int(c * alpha)`
            as in keras.applications).
        num_experts, routing, strategy: override the conversion's.
        dropout_rate: before the classifier (keras.applications' default 1e-3).
        padding: "same" (TF, as keras.applications) or "symmetric".
        include_preprocessing: normalise [0, 255] inputs to [-1, 1] inside the model.
        normalization: input normalisation (`preprocessing.NORMALIZATIONS` key);
            None for the reference's ("inception"). Pretrained weights set it.
    """
    validation.one_of("alpha", alpha, MOBILENET_V1_ALPHAS)
    conversion = conversion.with_overrides(
        num_experts=num_experts, routing=routing, strategy=strategy
    )
    application = arguments.ApplicationArguments(
        name, include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation,
    )
    image, inputs = application.inputs(default_size=224)
    factory = LayerFactory(conversion, padding=padding)
    x = arguments.preprocess(image, normalization or "inception", include_preprocessing)
    x = factory.conv(x, int(STEM_FILTERS * alpha), 3, "conv1", strides=2)
    x = factory.batch_norm(x, "conv1_bn")
    x = keras.layers.ReLU(6.0, name="conv1_relu")(x)

    blocks = [
        group for group in map(parse_block_string, MOBILENET_V1_TABLE)
        for _ in range(group.repeats)
    ]
    level = 1
    for index, group in enumerate(blocks):
        if group.stride == 2:
            x = arguments.pyramid_level(x, level)
            level += 1
        dynamic = conversion.converts_block(index, len(blocks))
        block_name = f"block{index + 1}"
        routing_weights = factory.block_routing(x, f"{block_name}_routing") if dynamic else None
        x = factory.depthwise(
            x, group.kernel_size, f"{block_name}_dw", strides=group.stride,
            dynamic=dynamic, routing_weights=routing_weights,
        )
        x = factory.batch_norm(x, f"{block_name}_dw_bn")
        x = keras.layers.ReLU(6.0, name=f"{block_name}_dw_relu")(x)
        x = factory.conv(
            x, int(group.filters * alpha), 1, f"{block_name}_pw",
            dynamic=dynamic, routing_weights=routing_weights,
        )
        x = factory.batch_norm(x, f"{block_name}_pw_bn")
        x = keras.layers.ReLU(6.0, name=f"{block_name}_pw_relu")(x)
    x = arguments.pyramid_level(x, level)
    return application.finish(x, inputs, factory, dropout_rate)


mobilenet_v1 = variant(
    build_mobilenet_v1, "mobilenet_v1", "mobilenet_v1",
    "MobileNetV1 (Howard et al., 2017), as keras.applications.MobileNet.",
    paper=(
        PaperFigure(567e6, "CondConv Table 1"),
        PaperFigure(41.2e6, "CondConv Fig. 2 (0.25x)", overrides=(("alpha", 0.25),)),
    ),
    fixed=STATIC_KNOBS,
)
condconv_mobilenet_v1 = variant(
    build_mobilenet_v1, "condconv_mobilenet_v1", "mobilenet_v1",
    "CondConv-MobileNetV1: from the 6th separable block on plus the classifier "
    "(Appendix A).",
    paper=(
        PaperFigure(600e6, "CondConv Table 1"),
        PaperFigure(
            55.7e6, "CondConv Fig. 2 / Table 3 (0.25x, 32 experts)",
            overrides=(("alpha", 0.25), ("num_experts", 32)),
        ),
    ),
    fixed=dict(conversion=CONDCONV_MOBILENET_V1),
    defaults=dict(num_experts=8),
)
