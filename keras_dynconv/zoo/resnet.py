"""ResNet-50 and its CondConv, dynamic, sparse dynamic and Mixture-of-Depths versions."""

import keras

from keras_dynconv import layers as dynamic_layers
from keras_dynconv.layers import validation
from keras_dynconv.zoo import arguments
from keras_dynconv.zoo.conversion import STATIC_KNOBS
from keras_dynconv.zoo.conversion import Conversion
from keras_dynconv.zoo.conversion import LayerFactory
from keras_dynconv.zoo.registry import PaperFigure
from keras_dynconv.zoo.registry import variant

# Bottleneck blocks per stage (stage widths 64, 128, 256, 512; expansion 4).
RESNET50_STAGES = (3, 4, 6, 3)
# CNN Mixture-of-Depths, Sec. 4: deeper ResNets whose every second block is MoD,
# compared there with torchvision's ResNet-50 (v1.5 downsampling, our default for them).
RESNET75_STAGES = (3, 4, 14, 3)
RESNET86_STAGES = (3, 4, 18, 3)
STAGE_FILTERS = (64, 128, 256, 512)
EXPANSION = 4
DOWNSAMPLING = ("conv1x1", "conv3x3")

# CondConv paper, Appendix A: the final 3 residual blocks and the classifier; the
# projection shortcut stays static (its 8x cost would put the model at 4229M
# MADDs, not the paper's 4213M).
CONDCONV_RESNET50 = Conversion(kind="condconv", first_block=-3, classifier=True)
# SD-Conv, Sec. 5: every convolution but the stem, projection shortcuts included.
DYNAMIC_ALL_CONVS = Conversion(kind="dynamic", num_experts=4, shortcut=True, reduction=4)
SPARSE_ALL_CONVS = Conversion(kind="sparse", num_experts=4, shortcut=True, reduction=16)


def _mod_bottleneck(channels, bn_epsilon, name):
    """The bottleneck a MoD block runs on its k channels: k -> k/4 -> k, no residual."""
    mid = max(channels // EXPANSION, 1)

    def batch_norm(suffix):
        return dynamic_layers.BatchNormalization(epsilon=bn_epsilon, name=f"{name}_{suffix}")

    return keras.Sequential(
        [
            dynamic_layers.Conv2D(mid, 1, name=f"{name}_1_conv"),
            batch_norm("1_bn"),
            keras.layers.ReLU(name=f"{name}_1_relu"),
            dynamic_layers.Conv2D(mid, 3, padding="same", name=f"{name}_2_conv"),
            batch_norm("2_bn"),
            keras.layers.ReLU(name=f"{name}_2_relu"),
            dynamic_layers.Conv2D(channels, 1, name=f"{name}_3_conv"),
            batch_norm("3_bn"),
        ],
        name=name,
    )


def bottleneck_block(
    inputs, factory, filters, stride, name, downsampling="conv1x1", dynamic=False
):
    """keras.applications' ResNet bottleneck (conv biases, BN eps 1.001e-5).

    `downsampling`: "conv1x1" strides the first 1x1 conv (the original ResNet and
    keras.applications), "conv3x3" the 3x3 conv (ResNet v1.5: torchvision, timm and
    the TF TPU ResNet the CondConv paper builds on).
    """
    routing = factory.block_routing(inputs, f"{name}_routing") if dynamic else None
    dynamic_args = dict(dynamic=dynamic, routing_weights=routing)
    output_filters = EXPANSION * filters
    if stride != 1 or inputs.shape[-1] != output_filters:
        shortcut_dynamic = dynamic and factory.conversion.shortcut
        shortcut = factory.conv(
            inputs, output_filters, 1, f"{name}_0_conv", strides=stride, use_bias=True,
            dynamic=shortcut_dynamic, routing_weights=routing if shortcut_dynamic else None,
        )
        shortcut = factory.batch_norm(shortcut, f"{name}_0_bn")
    else:
        shortcut = inputs
    first_stride, middle_stride = (stride, 1) if downsampling == "conv1x1" else (1, stride)
    x = factory.conv(
        inputs, filters, 1, f"{name}_1_conv", strides=first_stride, use_bias=True, **dynamic_args
    )
    x = factory.batch_norm(x, f"{name}_1_bn")
    x = keras.layers.ReLU(name=f"{name}_1_relu")(x)
    x = factory.conv(
        x, filters, 3, f"{name}_2_conv", strides=middle_stride, use_bias=True, **dynamic_args
    )
    x = factory.batch_norm(x, f"{name}_2_bn")
    x = keras.layers.ReLU(name=f"{name}_2_relu")(x)
    x = factory.conv(x, output_filters, 1, f"{name}_3_conv", use_bias=True, **dynamic_args)
    x = factory.batch_norm(x, f"{name}_3_bn")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_resnet(
    *,
    stages=RESNET50_STAGES,
    conversion=Conversion(),
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet50",
    num_experts=None,
    routing=None,
    strategy=None,
    downsampling="conv1x1",
    mod_capacity=None,
    dropout_rate=0.0,
    include_preprocessing=True,
    normalization=None,
):
    """Builds a bottleneck ResNet as keras.applications.ResNet50 does.

    Args:
        stages: bottleneck blocks per stage.
        conversion: which blocks are dynamic (see `Conversion`).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in `keras.applications`; raw [0, 255] RGB in
            (converted inside the model to BGR minus the ImageNet mean, "caffe" mode).
        num_experts, routing, strategy: override the conversion's.
        downsampling: "conv1x1" (keras.applications) or "conv3x3" (ResNet v1.5).
        mod_capacity: when set, every second block of a stage (never the first) is a
            CNN Mixture-of-Depths block with capacity c (64 in the paper).
        dropout_rate: before the classifier.
        include_preprocessing: normalise inside the model.
        normalization: input normalisation (`preprocessing.NORMALIZATIONS` key);
            None for the reference's ("caffe"). Pretrained weights set it.
    """
    validation.one_of("downsampling", downsampling, DOWNSAMPLING)
    conversion = conversion.with_overrides(
        num_experts=num_experts, routing=routing, strategy=strategy
    )
    application = arguments.ApplicationArguments(
        name, include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation,
    )
    image, inputs = application.inputs(default_size=224)
    factory = LayerFactory(conversion, padding="symmetric", bn_epsilon=1.001e-5)
    x = arguments.preprocess(image, normalization or "caffe", include_preprocessing)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = dynamic_layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = factory.batch_norm(x, "conv1_bn")
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = arguments.pyramid_level(x, 1)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = dynamic_layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    num_blocks = sum(stages)
    index = 0
    for stage, (filters, repeats) in enumerate(zip(STAGE_FILTERS, stages)):
        for repeat in range(repeats):
            name_prefix = f"conv{stage + 2}_block{repeat + 1}"
            if mod_capacity and repeat % 2 == 1:
                inner = _mod_bottleneck(x.shape[-1] // mod_capacity, 1.001e-5, f"{name_prefix}_inner")
                # The ReLU after the block is its activation: torch writes the output once.
                x = dynamic_layers.MoDBlock(
                    inner, capacity=mod_capacity, activation="relu", name=f"{name_prefix}_mod"
                )(x)
            else:
                x = bottleneck_block(
                    x, factory, filters, 2 if repeat == 0 and stage > 0 else 1, name_prefix,
                    downsampling=downsampling,
                    dynamic=conversion.converts_block(index, num_blocks),
                )
            index += 1
        x = arguments.pyramid_level(x, stage + 2)
    return application.finish(x, inputs, factory, dropout_rate)


_FAMILY = "resnet"
_STATIC = dict(mod_capacity=None, **STATIC_KNOBS)

resnet50 = variant(
    build_resnet, "resnet50", _FAMILY,
    "ResNet-50 (He et al., 2016), as keras.applications.ResNet50.",
    paper=(
        PaperFigure(3.8e9, "SD-Conv Table 2b"),
        PaperFigure(4093e6, "CondConv Table 1 (v1.5)", overrides=(("downsampling", "conv3x3"),)),
    ),
    fixed=dict(stages=RESNET50_STAGES, **_STATIC),
)
condconv_resnet50 = variant(
    build_resnet, "condconv_resnet50", _FAMILY,
    "CondConv-ResNet-50: the final 3 residual blocks and the classifier (Appendix A), "
    "with the paper's v1.5 downsampling.",
    paper=(PaperFigure(4213e6, "CondConv Table 1"),),
    fixed=dict(stages=RESNET50_STAGES, conversion=CONDCONV_RESNET50, mod_capacity=None),
    defaults=dict(num_experts=8, downsampling="conv3x3"),
)
dynamic_resnet50 = variant(
    build_resnet, "dynamic_resnet50", _FAMILY,
    "DY-ResNet-50 (Chen et al., 2020): every conv but the stem dynamic, K = 4.",
    paper=(PaperFigure(4.0e9, "SD-Conv Table 2b"),),
    fixed=dict(stages=RESNET50_STAGES, conversion=DYNAMIC_ALL_CONVS, mod_capacity=None,
               routing=None),
    defaults=dict(num_experts=4),
)
sparse_dynamic_resnet50 = variant(
    build_resnet, "sparse_dynamic_resnet50", _FAMILY,
    "SD-ResNet-50 (SD-Conv): DY-ResNet-50 with learned sparse masks.",
    fixed=dict(stages=RESNET50_STAGES, conversion=SPARSE_ALL_CONVS, mod_capacity=None,
               routing=None),
    defaults=dict(num_experts=4),
)
resnet75_mod = variant(
    build_resnet, "resnet75_mod", _FAMILY,
    "ResNet75-MoD (CNN Mixture-of-Depths): stages (3, 4, 14, 3), every second block MoD.",
    fixed=dict(stages=RESNET75_STAGES, **STATIC_KNOBS),
    defaults=dict(mod_capacity=64, downsampling="conv3x3"),
)
resnet86_mod = variant(
    build_resnet, "resnet86_mod", _FAMILY,
    "ResNet86-MoD (CNN Mixture-of-Depths): stages (3, 4, 18, 3), every second block MoD.",
    fixed=dict(stages=RESNET86_STAGES, **STATIC_KNOBS),
    defaults=dict(mod_capacity=64, downsampling="conv3x3"),
)
