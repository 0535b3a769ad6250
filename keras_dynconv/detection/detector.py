"""`SSDDetector`: a single-shot detector that trains with `model.fit` and predicts boxes.

The network maps raw images to per-anchor box deltas and class logits; this model
adds what turns that into a detector: anchors, targets and the loss for `fit`,
decoding and NMS for `predict`. All of it is `keras.ops`, so the train and predict
steps compile on TensorFlow, JAX and PyTorch alike.
"""

import keras
from keras import ops
from keras.utils import bounding_boxes

from keras_dynconv.data.box_formats import BOUNDING_BOX_FORMATS
from keras_dynconv.detection.anchors import AnchorConfig
from keras_dynconv.detection.anchors import generate_anchors
from keras_dynconv.detection.losses import CLASSIFICATION_LOSSES
from keras_dynconv.detection.losses import ssd_loss
from keras_dynconv.detection.nms import multiclass_non_max_suppression
from keras_dynconv.detection.targets import BOX_VARIANCE
from keras_dynconv.detection.targets import decode_boxes
from keras_dynconv.detection.targets import ssd_targets
from keras_dynconv.layers import validation


@keras.saving.register_keras_serializable(package="keras_dynconv")
class SSDDetector(keras.Model):
    """Single-shot multibox detector (Liu et al., 2016) around a box-predicting network.

    Train it with `fit` on `(images, {"boxes": [B, M, 4], "classes": [B, M]})`:
    ground truth padded to M boxes per image, class -1 marking padding, boxes in
    `bounding_box_format`. Boxes outside the image are clipped to it; boxes left
    with no area are ignored. `predict` returns a dict:

    - `"boxes"`: float32 `[B, max_detections, 4]` in `bounding_box_format` (by
      default "xyxy": pixels of the model's input image, i.e. of the image after it
      was resized to the model's input size),
    - `"classes"`: int32 `[B, max_detections]`, -1 after the last detection,
    - `"scores"`: float32 `[B, max_detections]`, sigmoid class scores, 0 after the
      last detection,
    - `"num_detections"`: int32 `[B]`.

    Args:
        network: a functional model from images `[B, H, W, 3]` (fixed H, W) to
            `{"box_deltas": [B, A, 4], "class_logits": [B, A, num_classes]}`, the
            anchors of each feature map in `generate_anchors`' order.
        num_classes: foreground classes (background is "no class": every sigmoid
            low, as the reference's `encode_background_as_zeros`).
        feature_map_sizes: `[(height, width), ...]` of the predictor maps.
        anchor_config: an `AnchorConfig` (or its config dict).
        bounding_box_format: of the ground truth and of the predicted boxes.
        box_variance: of the box coder (0.1, 0.1, 0.2, 0.2 = scales 10, 10, 5, 5).
        matched_threshold: IoU for an anchor to match a ground-truth box.
        classification_loss, focal_alpha, focal_gamma, hard_negative_ratio,
        localization_weight, classification_weight: see `ssd_loss`.
        iou_threshold, score_threshold, max_detections, max_detections_per_class,
        pre_nms_top_k: see `multiclass_non_max_suppression`.

    Example:

    ```python
    detector = keras_dynconv.zoo.condconv_ssd300_mobilenet_v1(alpha=0.5, classes=80)
    detector.compile(optimizer="sgd")
    detector.fit(train_dataset, epochs=10)
    detections = detector.predict(images)  # {"boxes", "classes", "scores", ...}
    ```
    """

    def __init__(
        self,
        network,
        num_classes,
        feature_map_sizes,
        anchor_config=None,
        bounding_box_format="xyxy",
        box_variance=BOX_VARIANCE,
        matched_threshold=0.5,
        classification_loss="focal",
        focal_alpha=0.75,
        focal_gamma=2.0,
        hard_negative_ratio=None,
        localization_weight=1.0,
        classification_weight=1.0,
        iou_threshold=0.6,
        score_threshold=1e-8,
        max_detections=100,
        max_detections_per_class=100,
        pre_nms_top_k=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.image_size = self._input_size(network)
        self.num_classes = validation.positive_int("num_classes", num_classes)
        self.feature_map_sizes = [tuple(int(s) for s in size) for size in feature_map_sizes]
        if isinstance(anchor_config, dict):
            anchor_config = AnchorConfig.from_config(anchor_config)
        self.anchor_config = anchor_config or AnchorConfig()
        self.bounding_box_format = validation.one_of(
            "bounding_box_format", bounding_box_format, BOUNDING_BOX_FORMATS
        )
        self.box_variance = tuple(float(v) for v in box_variance)
        if len(self.box_variance) != 4 or min(self.box_variance) <= 0:
            raise ValueError(
                f"`box_variance` must be 4 positive numbers. Received {box_variance}"
            )
        self.matched_threshold = float(matched_threshold)
        self.classification_loss = validation.one_of(
            "classification_loss", classification_loss, CLASSIFICATION_LOSSES
        )
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.hard_negative_ratio = (
            None if hard_negative_ratio is None
            else validation.positive_int("hard_negative_ratio", hard_negative_ratio)
        )
        self.localization_weight = float(localization_weight)
        self.classification_weight = float(classification_weight)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)
        self.max_detections = validation.positive_int("max_detections", max_detections)
        self.max_detections_per_class = validation.positive_int(
            "max_detections_per_class", max_detections_per_class
        )
        self.pre_nms_top_k = validation.positive_int("pre_nms_top_k", pre_nms_top_k)

        self.anchors = generate_anchors(
            self.feature_map_sizes, self.image_size, self.anchor_config
        )
        self._check_network_outputs()
        self.localization_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.classification_loss_tracker = keras.metrics.Mean(name="classification_loss")
        # Every variable lives in the (built) network: weights can load right away.
        self.built = True

    @staticmethod
    def _input_size(network):
        shape = tuple(network.input_shape)
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            raise ValueError(
                "An SSD needs a fixed input size (its anchors depend on it). The "
                f"network's input shape is {shape}; build it with "
                "`input_shape=(height, width, 3)`."
            )
        return int(shape[1]), int(shape[2])

    def _check_network_outputs(self):
        outputs = self.network.output
        if not isinstance(outputs, dict) or set(outputs) != {"box_deltas", "class_logits"}:
            raise ValueError(
                "The network must output a dict with keys 'box_deltas' and "
                f"'class_logits'. Received {outputs}"
            )
        num_anchors = len(self.anchors)
        expected = {
            "box_deltas": (num_anchors, 4),
            "class_logits": (num_anchors, self.num_classes),
        }
        for key, shape in expected.items():
            if tuple(outputs[key].shape[1:]) != shape:
                raise ValueError(
                    f"The network's '{key}' have shape {tuple(outputs[key].shape)}, but "
                    f"{self.feature_map_sizes} feature maps with "
                    f"{self.anchor_config.boxes_per_position(len(self.feature_map_sizes))}"
                    f" boxes per position and {self.num_classes} classes make "
                    f"(batch,) + {shape}"
                )

    # --- forward ------------------------------------------------------------------
    def call(self, images, training=None):
        """Raw outputs: `{"box_deltas": [B, A, 4], "class_logits": [B, A, C]}`."""
        self._check_image_shape(images)
        return self.network(images, training=training)

    def _check_image_shape(self, images):
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(
                f"Expected a batch of RGB images [batch, height, width, 3]. Received "
                f"shape {shape}"
            )
        if shape[1:3] != self.image_size and None not in shape[1:3]:
            raise ValueError(
                f"This SSD takes {self.image_size[0]}x{self.image_size[1]} images (its "
                f"anchors are made for that size); received {shape[1]}x{shape[2]}. "
                "Resize the images (keras_dynconv.data's detection pipelines do), or "
                "build the detector with `input_shape=(height, width, 3)`."
            )

    # --- boxes between the user's format and normalised yxyx ----------------------
    def _to_normalized(self, boxes):
        height, width = self.image_size
        boxes = bounding_boxes.convert_format(
            ops.cast(boxes, "float32"), self.bounding_box_format, "rel_yxyx",
            height=height, width=width,
        )
        return ops.clip(boxes, 0.0, 1.0)

    def _from_normalized(self, boxes):
        height, width = self.image_size
        return bounding_boxes.convert_format(
            boxes, "rel_yxyx", self.bounding_box_format, height=height, width=width
        )

    # --- training -----------------------------------------------------------------
    def _ground_truth(self, y):
        if not isinstance(y, dict) or not {"boxes", "classes"} <= set(y):
            raise ValueError(
                "SSDDetector trains on (images, {'boxes': [B, M, 4], 'classes': [B, M]}) "
                f"with class -1 marking padding. Received targets {y!r:.200}"
            )
        boxes, classes = y["boxes"], y["classes"]
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4 or len(classes.shape) != 2:
            raise ValueError(
                "Expected ground truth 'boxes' of shape [batch, max_boxes, 4] and "
                f"'classes' of shape [batch, max_boxes]. Received {tuple(boxes.shape)} "
                f"and {tuple(classes.shape)}"
            )
        return self._to_normalized(boxes), classes

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if sample_weight is not None:
            raise ValueError(
                "SSDDetector does not take sample weights: give images without boxes "
                "all-padding ground truth instead."
            )
        if y_pred is None:
            y_pred = self(x, training=training)
        boxes, classes = self._ground_truth(y)
        box_targets, class_targets, positive = ssd_targets(
            ops.convert_to_tensor(self.anchors), boxes, classes, self.num_classes,
            threshold=self.matched_threshold, variance=self.box_variance,
        )
        total, localization, classification = ssd_loss(
            y_pred["box_deltas"], y_pred["class_logits"], box_targets, class_targets,
            positive,
            classification_loss=self.classification_loss,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            hard_negative_ratio=self.hard_negative_ratio,
            localization_weight=self.localization_weight,
            classification_weight=self.classification_weight,
        )
        self.localization_loss_tracker.update_state(localization)
        self.classification_loss_tracker.update_state(classification)
        if self.losses:
            total = total + ops.sum(ops.stack([ops.cast(l, "float32") for l in self.losses]))
        return total

    # --- prediction ---------------------------------------------------------------
    def decode_predictions(self, raw_outputs):
        """Boxes, classes, scores and num_detections from `call`'s raw outputs."""
        boxes = decode_boxes(
            ops.cast(raw_outputs["box_deltas"], "float32"),
            ops.convert_to_tensor(self.anchors), self.box_variance,
        )
        boxes = ops.clip(boxes, 0.0, 1.0)
        scores = ops.sigmoid(ops.cast(raw_outputs["class_logits"], "float32"))
        detections = multiclass_non_max_suppression(
            boxes, scores,
            iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold,
            max_detections=self.max_detections,
            max_detections_per_class=self.max_detections_per_class,
            pre_nms_top_k=self.pre_nms_top_k,
        )
        valid = ops.expand_dims(detections["classes"] >= 0, -1)
        detections["boxes"] = ops.where(
            valid, self._from_normalized(detections["boxes"]), 0.0
        )
        return detections

    def predict_step(self, *args):
        # The JAX trainer's predict_step is (state, data) -> (outputs, state).
        outputs = super().predict_step(*args)
        if isinstance(outputs, tuple):
            return self.decode_predictions(outputs[0]), outputs[1]
        return self.decode_predictions(outputs)

    # --- serialisation ------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "network": keras.saving.serialize_keras_object(self.network),
            "num_classes": self.num_classes,
            "feature_map_sizes": [list(size) for size in self.feature_map_sizes],
            "anchor_config": self.anchor_config.get_config(),
            "bounding_box_format": self.bounding_box_format,
            "box_variance": list(self.box_variance),
            "matched_threshold": self.matched_threshold,
            "classification_loss": self.classification_loss,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "hard_negative_ratio": self.hard_negative_ratio,
            "localization_weight": self.localization_weight,
            "classification_weight": self.classification_weight,
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "max_detections": self.max_detections,
            "max_detections_per_class": self.max_detections_per_class,
            "pre_nms_top_k": self.pre_nms_top_k,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
