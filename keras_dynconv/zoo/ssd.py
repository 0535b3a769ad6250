"""SSD300 with a MobileNetV1 or CondConv-MobileNetV1 feature extractor (CondConv Table 2).

The TF Object Detection API's `ssd_mobilenet_v1_300x300_coco14_sync` model, which the
CondConv paper's detection experiments follow: predictions from Conv2d_11_pointwise
(stride 16) and Conv2d_13_pointwise (stride 32) of MobileNetV1 and from four extra
feature layers (a 1x1 convolution at half depth, then a 3x3 stride-2 one, each with
batch norm and ReLU6), a 1x1 box predictor and class predictor on each map. At
300x300 the maps are 19, 10, 5, 3, 2 and 1 wide: 1917 anchors. The CondConv variant
uses CondConv-MobileNetV1 and makes the extra layers CondConv as well (Sec. 4.2).
"""

import dataclasses

import keras

from keras_dynconv.detection.anchors import AnchorConfig
from keras_dynconv import layers as dynamic_layers
from keras_dynconv.detection.detector import SSDDetector
from keras_dynconv.layers import validation
from keras_dynconv.zoo import arguments as application_arguments
from keras_dynconv.zoo.conversion import STATIC_KNOBS
from keras_dynconv.zoo.conversion import Conversion
from keras_dynconv.zoo.conversion import LayerFactory
from keras_dynconv.zoo.features import pyramid_outputs
from keras_dynconv.zoo.mobilenet_v1 import MOBILENET_V1_ALPHAS
from keras_dynconv.zoo.model import ZooModel
from keras_dynconv.zoo.registry import PaperFigure
from keras_dynconv.zoo.registry import get_model
from keras_dynconv.zoo.registry import variant


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """One predictor feature map: a backbone pyramid level, or a new extra layer."""

    source: str = None  # "P4": the backbone's last stride-16 feature map
    depth: int = None  # of an extra layer, before the width multiplier


# The reference's feature_map_layout: from_layer Conv2d_11_pointwise and
# Conv2d_13_pointwise, then extra layers of depth 512, 256, 256, 128.
SSD_MOBILENET_V1_LAYOUT = (
    FeatureMap(source="P4"),
    FeatureMap(source="P5"),
    FeatureMap(depth=512),
    FeatureMap(depth=256),
    FeatureMap(depth=256),
    FeatureMap(depth=128),
)
# The reference's min_depth: no extra layer is thinner than this at small widths.
MIN_DEPTH = 16
# Prior probability 0.01 of every class at initialisation (class_prediction_bias_init).
CLASS_PRIOR_BIAS = -4.6


def _extra_layers(x, layout, factory, alpha, min_depth, dynamic):
    """The extra feature maps after the backbone's last one."""
    maps = []
    for index, feature_map in enumerate(layout):
        depth = max(int(feature_map.depth * alpha), min_depth)
        bottleneck = max(int(feature_map.depth // 2 * alpha), min_depth)
        name = f"extra{index + 1}"
        routing = factory.block_routing(x, f"{name}_routing") if dynamic else None
        x = factory.conv(x, bottleneck, 1, f"{name}_1x1", dynamic=dynamic, routing_weights=routing)
        x = factory.batch_norm(x, f"{name}_1x1_bn")
        x = keras.layers.ReLU(6.0, name=f"{name}_1x1_relu")(x)
        x = factory.conv(
            x, depth, 3, f"{name}_3x3", strides=2, dynamic=dynamic, routing_weights=routing
        )
        x = factory.batch_norm(x, f"{name}_3x3_bn")
        x = keras.layers.ReLU(6.0, name=f"{name}_3x3_relu")(x)
        maps.append(x)
    return maps


def _predictions(feature_maps, boxes_per_position, classes):
    """1x1 box and class predictors on every map, flattened in anchor order."""
    box_deltas, class_logits = [], []
    initializer = keras.initializers.RandomNormal(stddev=0.01)
    for index, (feature_map, boxes) in enumerate(zip(feature_maps, boxes_per_position)):
        deltas = dynamic_layers.Conv2D(
            boxes * 4, 1, kernel_initializer=initializer, name=f"box_predictor{index}"
        )(feature_map)
        box_deltas.append(keras.layers.Reshape((-1, 4), name=f"box_deltas{index}")(deltas))
        logits = dynamic_layers.Conv2D(
            boxes * classes, 1, kernel_initializer=initializer,
            bias_initializer=keras.initializers.Constant(CLASS_PRIOR_BIAS),
            name=f"class_predictor{index}",
        )(feature_map)
        class_logits.append(
            keras.layers.Reshape((-1, classes), name=f"class_logits{index}")(logits)
        )

    def join(tensors, name):
        if len(tensors) == 1:
            return keras.layers.Identity(name=name)(tensors[0])
        return keras.layers.Concatenate(axis=1, name=name)(tensors)

    return {
        "box_deltas": join(box_deltas, "box_deltas"),
        "class_logits": join(class_logits, "class_logits"),
    }


def build_ssd_mobilenet_v1(
    *,
    backbone="mobilenet_v1",
    conversion=Conversion(),
    weights=None,
    backbone_weights=None,
    input_tensor=None,
    input_shape=None,
    classes=80,
    name="ssd300_mobilenet_v1",
    alpha=1.0,
    num_experts=None,
    routing=None,
    strategy=None,
    min_depth=MIN_DEPTH,
    layout=SSD_MOBILENET_V1_LAYOUT,
    anchor_config=AnchorConfig(),
    bounding_box_format="xyxy",
    classification_loss="focal",
    hard_negative_ratio=None,
    iou_threshold=0.6,
    score_threshold=1e-8,
    max_detections=100,
):
    """Builds an SSD detector on (CondConv-)MobileNetV1 as an `SSDDetector`.

    Args:
        backbone: the zoo name of the feature extractor ("mobilenet_v1" or
            "condconv_mobilenet_v1").
        conversion: which extra layers are dynamic (see `Conversion`).
        weights: None or the path of a `.weights.h5` file of this detector.
        backbone_weights: weights of the backbone, as its builder takes them:
            None, a path, or a registered name ("imagenet" for MobileNetV1,
            "imagenet-upcycled" for CondConv-MobileNetV1: ImageNet MobileNetV1
            copied into every expert).
        input_tensor, input_shape: as in `keras.applications`; default
            (300, 300, 3). The size must be fixed: anchors are made for it.
        classes: foreground classes (80 for TFDS' coco/2017 labels; 90 for the
            reference's COCO category ids).
        alpha: width multiplier of the backbone and the extra layers.
        num_experts, routing, strategy: CondConv settings of the dynamic layers.
        min_depth: the extra layers' smallest depth (the reference's 16).
        layout: the predictor feature maps (`SSD_MOBILENET_V1_LAYOUT`).
        anchor_config: an `AnchorConfig`.
        bounding_box_format, classification_loss, hard_negative_ratio,
        iou_threshold, score_threshold, max_detections: see `SSDDetector`.

    Inputs are raw [0, 255] RGB images, as for the classification zoo.
    """
    validation.one_of("alpha", alpha, MOBILENET_V1_ALPHAS)
    min_depth = validation.positive_int("min_depth", min_depth)
    conversion = conversion.with_overrides(
        num_experts=num_experts, routing=routing, strategy=strategy
    )
    application = application_arguments.ApplicationArguments(
        name, include_top=True, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape,
        classes=classes,
    )
    image, inputs = application.inputs(default_size=300)
    expert_arguments = {} if conversion.is_static else dict(
        num_experts=conversion.num_experts, routing=conversion.routing,
        strategy=conversion.strategy,
    )
    feature_extractor = get_model(
        backbone, include_top=False, weights=backbone_weights, input_tensor=image,
        alpha=alpha, **expert_arguments,
    )
    pyramid = pyramid_outputs(feature_extractor)
    sources = [pyramid[m.source] for m in layout if m.source is not None]
    extras = [m for m in layout if m.source is None]
    factory = LayerFactory(
        conversion, bn_momentum=0.97,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.03),
    )
    feature_maps = sources + _extra_layers(
        sources[-1], extras, factory, alpha, min_depth, dynamic=not conversion.is_static
    )
    feature_map_sizes = [tuple(feature_map.shape[1:3]) for feature_map in feature_maps]
    boxes_per_position = anchor_config.boxes_per_position(len(feature_maps))
    network = ZooModel(
        inputs, _predictions(feature_maps, boxes_per_position, classes),
        name=f"{name}_network",
    )
    detector = SSDDetector(
        network, classes, feature_map_sizes,
        anchor_config=anchor_config,
        bounding_box_format=bounding_box_format,
        classification_loss=classification_loss,
        hard_negative_ratio=hard_negative_ratio,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        max_detections=max_detections,
        name=name,
    )
    if weights is not None:
        detector.load_weights(weights)
    return detector


_TABLE_2 = "CondConv Table 2 (90 COCO classes)"


def _table_2(madds_by_alpha):
    return tuple(
        PaperFigure(
            madds, f"{_TABLE_2}, {alpha}x", size=300,
            overrides=(("alpha", alpha), ("classes", 90)),
        )
        for alpha, madds in madds_by_alpha
    )


ssd300_mobilenet_v1 = variant(
    build_ssd_mobilenet_v1, "ssd300_mobilenet_v1", "ssd_mobilenet_v1",
    "SSD300 with a MobileNetV1 feature extractor (TF Object Detection API, "
    "ssd_mobilenet_v1_300x300_coco14_sync).",
    default_size=300,
    paper=_table_2(((0.5, 352e6), (0.75, 730e6), (1.0, 1230e6))),
    fixed=dict(backbone="mobilenet_v1", conversion=Conversion(), **STATIC_KNOBS),
    task="detection",
)
condconv_ssd300_mobilenet_v1 = variant(
    build_ssd_mobilenet_v1, "condconv_ssd300_mobilenet_v1", "ssd_mobilenet_v1",
    "SSD300 with a CondConv-MobileNetV1 feature extractor and CondConv extra feature "
    "layers (CondConv paper, Sec. 4.2).",
    default_size=300,
    paper=_table_2(((0.5, 363e6), (0.75, 755e6), (1.0, 1280e6))),
    fixed=dict(
        backbone="condconv_mobilenet_v1",
        conversion=Conversion(kind="condconv", num_experts=8),
    ),
    defaults=dict(num_experts=8),
    task="detection",
)
