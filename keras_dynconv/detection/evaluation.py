"""COCO mAP of a detector, computed by pycocotools from a dataset in memory.

`coco_metrics` scores per-image ground truth and detections given as NumPy arrays
(boxes "xyxy" in pixels), whatever produced them. `evaluate_coco` runs a detector
over a dataset of `(images, {"boxes", "classes", ...})` batches, converts its
boxes and the ground truth to pixels of the original images, and calls it.

Two choices differ from a bare pycocotools run:

- A statistic with no ground truth to measure (a size range or a class with no
  box; COCOeval reports -1) is NaN, so it cannot pass for a score in a mean or a
  plot.
- No detection at all is not an error (pycocotools' `loadRes` raises on an empty
  list): every statistic that has ground truth is 0.0, and a warning says so.
"""

import contextlib
import io
import itertools
import math
import numbers
import warnings

import keras
import numpy as np

from keras_dynconv.data.box_formats import BOUNDING_BOX_FORMATS
from keras_dynconv.layers import validation

# COCOeval.stats, in its order: AP over IoU .50:.95, at .50 and .75, per object
# size, then the recall with at most 1, 10, 100 detections per image, per size.
METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError(
            "COCO evaluation needs pycocotools: pip install 'keras-dynconv[detection]'"
        ) from error
    return COCO, COCOeval


def _quiet(verbose):
    """pycocotools prints every step: keep it for verbose >= 2 only."""
    if verbose >= 2:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(io.StringIO())


def _verbosity(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            "Invalid value for argument `verbose`. Expected an integer >= 0. "
            f"Received verbose={value!r}"
        )
    return int(value)


def _host(value):
    """NumPy from a backend tensor or a tf.data batch's `tf.Tensor` (JAX and torch
    models take NumPy, not `tf.Tensor`s)."""
    if type(value).__module__.startswith("tensorflow"):
        return value.numpy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _class_index(value):
    """Class ids as int64 (float labels from a padded pipeline too)."""
    return np.asarray(value).reshape(-1).astype(np.int64)


def _image_record(record, taken):
    image_id = record["image_id"]
    if isinstance(image_id, np.ndarray):
        image_id = image_id.item()
    if isinstance(image_id, bool) or not isinstance(image_id, numbers.Integral):
        raise ValueError(
            f"Invalid ground truth: `image_id` must be an integer. Received {image_id!r}"
        )
    image_id = int(image_id)
    if image_id in taken:
        raise ValueError(
            f"Invalid ground truth: image_id {image_id} occurs twice. Each image is "
            "evaluated once: is the dataset repeated (`dataset.repeat()`)?"
        )
    taken.add(image_id)
    image = {"id": image_id}
    if record.get("image_shape") is not None:
        height, width = np.asarray(record["image_shape"]).reshape(-1)[:2]
        image.update(height=int(height), width=int(width))
    return image


def _boxes_and_classes(record, kind, image_id):
    boxes = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4)
    classes = _class_index(record["classes"])
    if len(classes) != len(boxes):
        raise ValueError(
            f"Invalid {kind} for image {image_id}: {len(boxes)} boxes but "
            f"{len(classes)} classes."
        )
    return boxes, classes


def _check_classes(classes, num_classes, kind, image_id):
    if num_classes is not None and len(classes) and classes.max() >= num_classes:
        raise ValueError(
            f"Invalid {kind} for image {image_id}: class {int(classes.max())} with "
            f"num_classes={num_classes} (classes are 0 .. num_classes - 1, -1 pads)."
        )


def _ground_truth_annotations(ground_truth, num_classes):
    images, annotations, taken = [], [], set()
    for record in ground_truth:
        image = _image_record(record, taken)
        images.append(image)
        boxes, classes = _boxes_and_classes(record, "ground truth", image["id"])
        crowd = record.get("is_crowd")
        crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool).reshape(-1)
        if len(crowd) != len(boxes):
            raise ValueError(
                f"Invalid ground truth for image {image['id']}: {len(boxes)} boxes "
                f"but {len(crowd)} is_crowd flags."
            )
        keep = classes >= 0  # class -1 pads to the batch's fixed box count
        boxes, classes, crowd = boxes[keep], classes[keep], crowd[keep]
        _check_classes(classes, num_classes, "ground truth", image["id"])
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        if len(boxes) and (widths.min() < 0 or heights.min() < 0):
            raise ValueError(
                f"Invalid ground truth for image {image['id']}: a box with x2 < x1 or "
                "y2 < y1. Boxes are 'xyxy' [x1, y1, x2, y2]: is the format right?"
            )
        for box, class_id, is_crowd, width, height in zip(boxes, classes, crowd, widths, heights):
            annotations.append({
                # COCOeval stores the matched ground truth's id, 0 meaning "none".
                "id": len(annotations) + 1,
                "image_id": image["id"],
                "category_id": int(class_id) + 1,
                "bbox": [float(box[0]), float(box[1]), float(width), float(height)],
                # Box area: small, medium and large are box sizes here, while COCO's
                # own ground truth uses the segmentation's area.
                "area": float(width * height),
                "iscrowd": int(is_crowd),
            })
    return images, annotations


def _detection_annotations(detections, image_ids, num_classes):
    annotations = []
    for record in detections:
        image_id = int(np.asarray(record["image_id"]).item())
        if image_id not in image_ids:
            raise ValueError(
                f"Invalid detections: image_id {image_id} is not in the ground truth."
            )
        boxes, classes = _boxes_and_classes(record, "detections", image_id)
        scores = np.asarray(record["scores"], dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(
                f"Invalid detections for image {image_id}: {len(boxes)} boxes but "
                f"{len(scores)} scores."
            )
        keep = classes >= 0
        boxes, classes, scores = boxes[keep], classes[keep], scores[keep]
        _check_classes(classes, num_classes, "detections", image_id)
        # An untrained box regressor can swap corners: such a box covers nothing.
        widths = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
        heights = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
        for box, class_id, score, width, height in zip(boxes, classes, scores, widths, heights):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(class_id) + 1,
                "bbox": [float(box[0]), float(box[1]), float(width), float(height)],
                "area": float(width * height),
                "score": float(score),
                "iscrowd": 0,
            })
    return annotations


def _coco(COCO, images, annotations, categories):
    # Built from dicts rather than `loadRes`, which refuses an empty result list.
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    coco.createIndex()
    return coco


def _nan_for_missing(value):
    """COCOeval's -1 ("nothing to measure") as NaN."""
    return float("nan") if value == -1 else float(value)


def _per_class_ap(coco_eval, class_keys):
    # precision: [IoU thresholds, recall thresholds, classes, areas, max detections];
    # area 0 is "all", the last max detections 100, as the summary's AP.
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for index, key in enumerate(class_keys):
        values = precision[:, :, index]
        values = values[values > -1]
        per_class[key] = float(values.mean()) if values.size else float("nan")
    return per_class


def coco_metrics(
    ground_truth,
    detections,
    *,
    num_classes=None,
    class_names=None,
    return_per_class=False,
    verbose=0,
):
    """COCO box AP and AR (COCOeval's 12 statistics) of detections, from memory.

    Args:
        ground_truth: one dict per image: `"image_id"` (int, unique), `"boxes"`
            `[M, 4]` "xyxy" pixels, `"classes"` `[M]` (0 .. num_classes - 1; -1
            rows are padding and skipped), optional `"is_crowd"` `[M]` (crowd
            regions: detections inside them are neither right nor wrong), optional
            `"image_shape"` (height, width). Every image counts, with or without
            boxes: detections on an image without boxes are false positives.
        detections: dicts `"image_id"`, `"boxes"` `[N, 4]` "xyxy" pixels,
            `"classes"` `[N]` (-1 skipped), `"scores"` `[N]`; images may be left
            out (no detection).
        num_classes: the categories (class c is COCO category c + 1, as COCO ids
            start at 1); default: the largest class seen + 1.
        class_names: names of the classes, the keys of the per-class APs.
        return_per_class: add `"AP_per_class"`: `{name (or index): AP@[.5:.95]}`.
        verbose: 2 prints pycocotools' steps and summary table.

    Returns:
        `{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
        "ARm", "ARl": float}`: NaN where there is no ground truth to measure
        (COCOeval's -1), 0.0 for every other statistic when there is no detection
        (with a warning).

    Example:
    >>> truth = [{"image_id": 0, "boxes": [[0, 0, 10, 10], [20, 20, 40, 40]],
    ...           "classes": [0, 0]}]
    >>> found = [{"image_id": 0, "boxes": [[0, 0, 10, 10]], "classes": [0],
    ...           "scores": [0.9]}]
    >>> coco_metrics(truth, found)["AR100"]
    0.5
    """
    COCO, COCOeval = _pycocotools()
    verbose = _verbosity(verbose)
    if num_classes is not None:
        num_classes = validation.positive_int("num_classes", num_classes)
    ground_truth, detections = list(ground_truth), list(detections)
    images, gt_annotations = _ground_truth_annotations(ground_truth, num_classes)
    if not images:
        raise ValueError("Invalid ground truth: no image to evaluate.")
    dt_annotations = _detection_annotations(detections, {image["id"] for image in images}, num_classes)
    if num_classes is None:
        seen = [a["category_id"] for a in gt_annotations + dt_annotations]
        num_classes = max(seen, default=1)
    if class_names is not None:
        class_names = list(class_names)
        if len(class_names) != num_classes:
            raise ValueError(
                f"Invalid value for argument `class_names`: expected {num_classes} "
                f"names (num_classes). Received {len(class_names)}."
            )
    if not dt_annotations and gt_annotations:
        warnings.warn(
            "COCO evaluation: no detections; every AP and AR with ground truth is 0.0.",
            stacklevel=2,
        )
    categories = [{"id": index + 1, "name": str(index)} for index in range(num_classes)]
    with _quiet(verbose):
        coco_gt = _coco(COCO, images, gt_annotations, categories)
        coco_dt = _coco(COCO, images, dt_annotations, categories)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    metrics = {
        name: _nan_for_missing(value) for name, value in zip(METRIC_NAMES, coco_eval.stats)
    }
    if return_per_class:
        keys = class_names if class_names is not None else list(range(num_classes))
        metrics["AP_per_class"] = _per_class_ap(coco_eval, keys)
    return metrics


def _to_pixel_xyxy(boxes, bounding_box_format, input_size, image_shapes):
    """`[B, N, 4]` boxes of the model's format as "xyxy" float64 pixels of the
    original images (`image_shapes` `[B, 2]` height, width) or, without them, of
    the model's input (`input_size` = its height, width)."""
    height, width = input_size
    boxes = keras.utils.bounding_boxes.convert_format(
        np.asarray(boxes, dtype=np.float32), source=bounding_box_format, target="xyxy",
        height=height, width=width,
    )
    boxes = np.asarray(keras.ops.convert_to_numpy(boxes), dtype=np.float64)
    if image_shapes is not None:
        image_shapes = np.asarray(image_shapes, dtype=np.float64).reshape(-1, 2)
        scale_y = image_shapes[:, 0] / height
        scale_x = image_shapes[:, 1] / width
        boxes = boxes * np.stack([scale_x, scale_y, scale_x, scale_y], axis=-1)[:, None, :]
    return boxes


def _split_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "Invalid `dataset`: expected batches `(images, y)`, y a dict with "
            f"'boxes' and 'classes'. Received a batch of type {type(batch).__name__}."
        )
    images, y = batch[0], batch[1]
    if not isinstance(y, dict) or "boxes" not in y or "classes" not in y:
        keys = sorted(y) if isinstance(y, dict) else type(y).__name__
        raise ValueError(
            "Invalid `dataset`: the targets of a batch must be a dict with 'boxes' "
            f"and 'classes' (optional 'image_id', 'image_shape', 'is_crowd'). "
            f"Received {keys}."
        )
    return _host(images), {key: _host(value) for key, value in y.items()}


def _num_batches(dataset, max_batches):
    try:
        length = len(dataset)  # unknown for generators and some tf.data pipelines
    except TypeError:
        length = None
    if length is not None and length < 0:
        length = None
    if max_batches is None:
        return length
    return max_batches if length is None else min(length, max_batches)


def _batch_records(model, images, y, bounding_box_format, first_id):
    batch_size = images.shape[0]
    input_size = images.shape[1:3]
    image_shapes = y.get("image_shape")
    image_ids = y.get("image_id")
    if image_ids is None:
        image_ids = np.arange(first_id, first_id + batch_size)
    image_ids = np.asarray(image_ids).reshape(-1)
    gt_boxes = _to_pixel_xyxy(y["boxes"], bounding_box_format, input_size, image_shapes)
    outputs = model.predict_on_batch(images)
    outputs = {key: _host(value) for key, value in outputs.items()}
    dt_boxes = _to_pixel_xyxy(outputs["boxes"], bounding_box_format, input_size, image_shapes)
    counts = outputs.get("num_detections")
    if counts is None:
        counts = np.full(batch_size, outputs["classes"].shape[1])
    ground_truth, detections = [], []
    for index in range(batch_size):
        image_id = int(image_ids[index])
        truth = {"image_id": image_id, "boxes": gt_boxes[index], "classes": y["classes"][index]}
        if y.get("is_crowd") is not None:
            truth["is_crowd"] = y["is_crowd"][index]
        if image_shapes is not None:
            truth["image_shape"] = image_shapes[index]
        ground_truth.append(truth)
        count = int(counts[index])
        detections.append({
            "image_id": image_id,
            "boxes": dt_boxes[index, :count],
            "classes": outputs["classes"][index, :count],
            "scores": outputs["scores"][index, :count],
        })
    return ground_truth, detections


def evaluate_coco(
    model,
    dataset,
    *,
    bounding_box_format=None,
    max_batches=None,
    verbose=1,
    class_names=None,
    return_per_class=False,
):
    """COCO box mAP of a detector on a dataset, with pycocotools (`coco_metrics`).

    The ground truth is the dataset's own: every image of it counts, boxes or not.
    Boxes are measured in pixels of the original image when the batches carry its
    `"image_shape"` (so COCO's small, medium and large mean what they do on COCO),
    else in pixels of the model's input.

    Args:
        model: a detector: `predict_on_batch(images)` returns `{"boxes" [B, N, 4],
            "classes" [B, N] (-1 pads), "scores" [B, N], "num_detections" [B]}`;
            its `num_classes` attribute, when it has one, fixes the categories.
        dataset: a finite tf.data dataset (or any iterable) of batches `(images,
            y)`: images `[B, H, W, 3]` as the model takes them, `y = {"boxes"
            [B, M, 4], "classes" [B, M] (-1 pads)}` and optionally `"image_id"`
            `[B]` (default: running index; must be unique), `"image_shape"` `[B, 2]`
            (original height, width before resizing to H x W) and `"is_crowd"`
            `[B, M]`.
        bounding_box_format: of the dataset's and the model's boxes; default
            `model.bounding_box_format`. "rel_" formats are fractions of H x W.
        max_batches: evaluate the first batches only.
        verbose: 0 silent, 1 progress bar, 2 also pycocotools' output.
        class_names, return_per_class: see `coco_metrics`.

    Returns:
        `{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
        "ARm", "ARl": float}` (and `"AP_per_class"` when asked): NaN where there is
        no ground truth (COCOeval's -1); 0.0 with a warning when the model detects
        nothing.

    Example:
    >>> metrics = evaluate_coco(detector, validation_batches, verbose=0)
    >>> sorted(metrics)[:3]
    ['AP', 'AP50', 'AP75']
    """
    if bounding_box_format is None:
        bounding_box_format = getattr(model, "bounding_box_format", None)
        if bounding_box_format is None:
            raise ValueError(
                "Invalid value for argument `bounding_box_format`: the model has no "
                "`bounding_box_format` attribute; pass the format of its boxes."
            )
    bounding_box_format = validation.one_of(
        "bounding_box_format", str(bounding_box_format).lower(), BOUNDING_BOX_FORMATS
    )
    if max_batches is not None:
        max_batches = validation.positive_int("max_batches", max_batches)
    verbose = _verbosity(verbose)
    _pycocotools()  # fail before running the model over the dataset

    progress = keras.utils.Progbar(_num_batches(dataset, max_batches)) if verbose else None
    ground_truth, detections = [], []
    # islice stops before pulling one batch too many from the pipeline.
    for step, batch in enumerate(itertools.islice(dataset, max_batches)):
        images, y = _split_batch(batch)
        truth, found = _batch_records(model, images, y, bounding_box_format, len(ground_truth))
        ground_truth += truth
        detections += found
        if progress is not None:
            progress.update(step + 1)
    num_classes = getattr(model, "num_classes", None)
    return coco_metrics(
        ground_truth,
        detections,
        num_classes=num_classes,
        class_names=class_names,
        return_per_class=return_per_class,
        verbose=verbose,
    )


def format_metrics(metrics, keys=("AP", "AP50", "AP75")):
    """A one-line summary, e.g. `"AP 0.312 - AP50 0.501 - AP75 0.330"`.

    Example:
    >>> format_metrics({"AP": 0.5, "AP50": 1.0, "AP75": float("nan")})
    'AP 0.500 - AP50 1.000 - AP75 nan'
    """
    parts = []
    for key in keys:
        value = metrics[key]
        parts.append(f"{key} nan" if math.isnan(value) else f"{key} {value:.3f}")
    return " - ".join(parts)
