"""Object detection: SSD anchors, box coding, matching, losses, NMS and the detector.

Everything that runs in a train or predict step is `keras.ops` with static shapes,
so `SSDDetector` trains with `model.fit` and predicts on TensorFlow, JAX and
PyTorch alike. The zoo builds detectors (`keras_dynconv.zoo.ssd300_mobilenet_v1`,
`condconv_ssd300_mobilenet_v1`); input pipelines are in `keras_dynconv.data`
(`coco_detection_dataset`, `shapes_detection_dataset`).

Example:

```python
from keras_dynconv import zoo
from keras_dynconv.detection import evaluate_coco

detector = zoo.condconv_ssd300_mobilenet_v1(alpha=0.5, classes=80)
detector.compile(optimizer="sgd")
detector.fit(train_dataset)  # (images, {"boxes": [B, M, 4], "classes": [B, M]})
detections = detector.predict(images)  # boxes, classes, scores, num_detections
metrics = evaluate_coco(detector, test_dataset)  # pycocotools: AP, AP50, AP75, ...
```
"""

from keras_dynconv.detection.anchors import AnchorConfig
from keras_dynconv.detection.anchors import generate_anchors
from keras_dynconv.detection.callbacks import COCOEvaluation
from keras_dynconv.detection.detector import SSDDetector
from keras_dynconv.detection.evaluation import METRIC_NAMES
from keras_dynconv.detection.evaluation import coco_metrics
from keras_dynconv.detection.evaluation import evaluate_coco
from keras_dynconv.detection.evaluation import format_metrics
from keras_dynconv.detection.losses import hard_negative_mask
from keras_dynconv.detection.losses import sigmoid_cross_entropy
from keras_dynconv.detection.losses import sigmoid_focal_loss
from keras_dynconv.detection.losses import smooth_l1
from keras_dynconv.detection.losses import ssd_loss
from keras_dynconv.detection.nms import multiclass_non_max_suppression
from keras_dynconv.detection.targets import BOX_VARIANCE
from keras_dynconv.detection.targets import decode_boxes
from keras_dynconv.detection.targets import encode_boxes
from keras_dynconv.detection.targets import match_anchors
from keras_dynconv.detection.targets import pairwise_iou
from keras_dynconv.detection.targets import ssd_targets

__all__ = [
    "AnchorConfig",
    "BOX_VARIANCE",
    "COCOEvaluation",
    "METRIC_NAMES",
    "SSDDetector",
    "coco_metrics",
    "decode_boxes",
    "encode_boxes",
    "evaluate_coco",
    "evaluate_coco",
    "format_metrics",
    "generate_anchors",
    "hard_negative_mask",
    "match_anchors",
    "multiclass_non_max_suppression",
    "pairwise_iou",
    "sigmoid_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_l1",
    "ssd_loss",
    "ssd_targets",
]
