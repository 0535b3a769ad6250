"""COCO mAP through pycocotools (evaluate_coco, coco_metrics) and its callback.

A fake detector looks its detections up in a constant table, by an image index
written into the pixels, so every case is known exactly and no real detector is
needed; it predicts through `predict_on_batch` on every backend.
"""

import math
import sys

import keras
import numpy as np
import pytest
from keras import ops

pytest.importorskip("pycocotools")

from keras_dynconv.detection.callbacks import COCOEvaluation  # noqa: E402
from keras_dynconv.detection.evaluation import METRIC_NAMES  # noqa: E402
from keras_dynconv.detection.evaluation import coco_metrics  # noqa: E402
from keras_dynconv.detection.evaluation import evaluate_coco  # noqa: E402

SIZE = 64  # the fake detector's input size
BATCH = 4


class TableDetector(keras.Model):
    """Detections of image i = row i of constant tables; i is pixel (0, 0, 0)."""

    def __init__(self, boxes, classes, scores, counts=None, bounding_box_format="xyxy",
                 num_classes=3, **kwargs):
        super().__init__(**kwargs)
        self.bounding_box_format = bounding_box_format
        self.num_classes = num_classes
        self.boxes_table = np.asarray(boxes, np.float32)
        self.classes_table = np.asarray(classes, np.int32)
        self.scores_table = np.asarray(scores, np.float32)
        if counts is None:
            counts = (self.classes_table >= 0).sum(axis=1)
        self.counts_table = np.asarray(counts, np.int32)

    def call(self, images):
        index = ops.cast(images[:, 0, 0, 0], "int32")

        def lookup(table):
            return ops.take(ops.convert_to_tensor(table), index, axis=0)

        return {
            "boxes": lookup(self.boxes_table),
            "classes": lookup(self.classes_table),
            "scores": lookup(self.scores_table),
            "num_detections": lookup(self.counts_table),
        }


class TrainableTableDetector(TableDetector):
    """A TableDetector with one weight and a loss on it: enough for `fit`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset = self.add_weight(shape=(), initializer="ones", name="offset")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return ops.square(self.offset)


def _pad(rows, width, fill):
    """Lists of per-image rows as one array padded to `width` rows with `fill`."""
    shape = (len(rows), width) + np.shape(fill)
    table = np.empty(shape, np.float64)
    table[...] = fill
    for index, row in enumerate(rows):
        if len(row):
            table[index, : len(row)] = row
    return table


def _images(count):
    images = np.zeros((count, SIZE, SIZE, 3), np.float32)
    images[:, 0, 0, 0] = np.arange(count)
    return images


def _batches(boxes, classes, batch_size=BATCH, **extras):
    """`[(images, y)]` of the ground truth tables; extras are more y keys [n, ...]."""
    images = _images(len(boxes))
    batches = []
    for start in range(0, len(boxes), batch_size):
        part = slice(start, start + batch_size)
        y = {"boxes": np.asarray(boxes[part], np.float32),
             "classes": np.asarray(classes[part], np.int32)}
        y.update({key: np.asarray(value)[part] for key, value in extras.items()})
        batches.append((images[part], y))
    return batches


def _scene(num_images=8, max_boxes=5, num_classes=3, seed=0):
    """Random ground truth `[n, max_boxes, 4]` xyxy pixels and classes (-1 pads);
    some images have no box."""
    rng = np.random.default_rng(seed)
    boxes = np.zeros((num_images, max_boxes, 4))
    classes = -np.ones((num_images, max_boxes), np.int64)
    for image in range(num_images):
        count = 0 if image % 4 == 3 else rng.integers(1, max_boxes + 1)
        x1y1 = rng.uniform(0, SIZE - 24, (count, 2))
        wh = rng.uniform(6, 40, (count, 2))
        boxes[image, :count] = np.concatenate([x1y1, np.minimum(x1y1 + wh, SIZE)], -1)
        classes[image, :count] = rng.integers(0, num_classes, count)
    return boxes, classes


def _perfect(boxes, classes):
    return dict(boxes=boxes, classes=classes, scores=(classes >= 0).astype(np.float32))


def _noisy(boxes, classes, seed=1):
    """Jittered ground truth plus random false positives, random scores."""
    rng = np.random.default_rng(seed)
    num_images, max_boxes = classes.shape
    found_boxes, found_classes, found_scores = [], [], []
    for image in range(num_images):
        valid = classes[image] >= 0
        jittered = boxes[image, valid] + rng.normal(0, 3, (valid.sum(), 4))
        extra = rng.uniform(0, SIZE - 20, (2, 2))
        false = np.concatenate([extra, extra + rng.uniform(5, 20, (2, 2))], -1)
        found_boxes.append(np.concatenate([jittered, false]))
        found_classes.append(np.concatenate([classes[image, valid], rng.integers(0, 3, 2)]))
        found_scores.append(rng.uniform(0.05, 1, len(found_classes[-1])))
    width = max_boxes + 2
    return dict(
        boxes=_pad(found_boxes, width, np.zeros(4)),
        classes=_pad(found_classes, width, -1).astype(np.int32),
        scores=_pad(found_scores, width, 0.0),
    )


def _evaluate(detections, batches, **kwargs):
    kwargs.setdefault("verbose", 0)
    return evaluate_coco(TableDetector(**detections), batches, **kwargs)


def _nan(value):
    return isinstance(value, float) and math.isnan(value)


# Hand-made cases: one 64x64 image, class 0.
def _one_image(gt_boxes, found_boxes, found_scores, gt_classes=None, found_classes=None):
    gt_classes = [0] * len(gt_boxes) if gt_classes is None else gt_classes
    found_classes = [0] * len(found_boxes) if found_classes is None else found_classes
    batches = _batches(np.asarray([gt_boxes], np.float32), np.asarray([gt_classes]))
    detections = dict(boxes=[found_boxes], classes=[found_classes], scores=[found_scores])
    return detections, batches


def test_perfect_detections_score_one_and_rows_past_num_detections_are_ignored():
    # Exactly 1.0: COCOeval's precision tp / (tp + fp + eps) is 1 - 2e-16 for a
    # class with a single box, 1.0 from the second on; every class here has several.
    boxes, classes = _scene()
    detections = _perfect(boxes, classes)
    # Confident wrong boxes after the valid rows must not count.
    counts = (classes >= 0).sum(axis=1)
    garbage = dict(boxes=np.concatenate([boxes, np.tile([[[1.0, 1.0, 9.0, 9.0]]], (8, 3, 1))], 1),
                   classes=np.concatenate([classes, np.zeros((8, 3), np.int64)], 1),
                   scores=np.concatenate([detections["scores"], np.ones((8, 3))], 1))
    metrics = evaluate_coco(TableDetector(**garbage, counts=counts), _batches(boxes, classes), verbose=0)
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == 1.0
    assert metrics["AR100"] == 1.0
    assert all(isinstance(value, float) for value in metrics.values())


def test_detections_on_the_wrong_images_or_classes_score_low():
    boxes, classes = _scene()
    perfect = _perfect(boxes, classes)
    batches = _batches(boxes, classes)
    shifted = {key: np.roll(value, 1, axis=0) for key, value in perfect.items()}
    assert _evaluate(shifted, batches)["AP"] < 0.3
    permuted = dict(perfect, classes=np.where(classes >= 0, (classes + 1) % 3, -1))
    assert _evaluate(permuted, batches)["AP"] < 0.3


def test_one_of_two_boxes_found_exactly():
    detections, batches = _one_image(
        [[0, 0, 20, 20], [30, 30, 60, 60]], [[0, 0, 20, 20]], [0.9]
    )
    metrics = _evaluate(detections, batches)
    assert metrics["AR100"] == metrics["AR1"] == 0.5
    # Precision 1 up to recall 0.5, none beyond: 51 of the 101 recall points.
    for key in ("AP", "AP50", "AP75"):
        assert metrics[key] == pytest.approx(51 / 101)


def test_a_detection_with_iou_062_counts_at_iou_50_not_75():
    detections, batches = _one_image([[0, 0, 50, 50]], [[0, 0, 50, 31]], [0.8])
    metrics = _evaluate(detections, batches)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == 0.0
    # Matched at the IoU thresholds .50, .55 and .60 of ten.
    assert metrics["AP"] == pytest.approx(0.3)


def test_no_detections_give_zero_where_there_is_ground_truth_and_nan_elsewhere():
    detections, batches = _one_image([[0, 0, 10, 10], [20, 20, 30, 30]], [], [])
    with pytest.warns(UserWarning, match="no detections"):
        metrics = _evaluate(dict(detections, boxes=np.zeros((1, 0, 4))), batches)
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
        assert metrics[key] == 0.0, key
    # Only small boxes: nothing to measure for medium and large (COCOeval's -1).
    for key in ("APm", "APl", "ARm", "ARl"):
        assert _nan(metrics[key]), key


def test_no_ground_truth_at_all_gives_nan():
    batches = _batches(np.zeros((2, 1, 4)), -np.ones((2, 1)))
    detections = dict(boxes=[[[0, 0, 9, 9]], [[0, 0, 9, 9]]], classes=[[0], [1]], scores=[[1.0], [1.0]])
    metrics = _evaluate(detections, batches)
    assert all(_nan(metrics[key]) for key in METRIC_NAMES)


def test_detections_on_images_without_ground_truth_are_false_positives():
    # Image 0: one box, found with score 0.5. Image 1: no box, a detection at 0.9.
    batches = _batches(np.asarray([[[0, 0, 20, 20]], [[0, 0, 0, 0]]]), np.asarray([[0], [-1]]))
    detections = dict(boxes=[[[0, 0, 20, 20]], [[5, 5, 25, 25]]], classes=[[0], [0]],
                      scores=[[0.5], [0.9]])
    metrics = _evaluate(detections, batches)
    # The false positive ranks first: precision 1/2 at every recall.
    assert metrics["AP"] == metrics["AP50"] == pytest.approx(0.5)
    assert metrics["AR100"] == 1.0


@pytest.mark.parametrize(
    "image_shape, size_range",
    [(None, "m"), ((32, 32), "s"), ((16, 128), "s"), ((64, 256), "m"), ((256, 256), "l")],
)
def test_image_shape_rescales_to_original_pixels(image_shape, size_range):
    # 40 x 40 = 1600 pixels of the model's input: medium (32^2 .. 96^2).
    box = [10, 10, 50, 50]
    detections, batches = _one_image([box], [box], [1.0])
    if image_shape is not None:
        batches[0][1]["image_shape"] = np.asarray([image_shape])
    metrics = _evaluate(detections, batches)
    assert metrics["AP"] == pytest.approx(1.0)
    for other in "sml":
        if other == size_range:
            assert metrics["AP" + other] == pytest.approx(1.0)
        else:
            assert _nan(metrics["AP" + other]), other


def _to_format(boxes, bounding_box_format):
    """xyxy pixels [..., 4] in another format, by hand (not through Keras)."""
    x1, y1, x2, y2 = np.moveaxis(np.asarray(boxes, np.float64), -1, 0)
    relative = bounding_box_format.startswith("rel_")
    if relative:
        x1, y1, x2, y2 = x1 / SIZE, y1 / SIZE, x2 / SIZE, y2 / SIZE
    columns = {
        "xyxy": (x1, y1, x2, y2),
        "yxyx": (y1, x1, y2, x2),
        "xywh": (x1, y1, x2 - x1, y2 - y1),
        "center_xywh": ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1),
    }[bounding_box_format.replace("rel_", "")]
    return np.stack(columns, -1)


@pytest.mark.parametrize(
    "bounding_box_format", ["yxyx", "rel_xyxy", "rel_yxyx", "xywh", "center_xywh", "rel_xywh"]
)
def test_every_box_format_gives_the_same_metrics(bounding_box_format):
    boxes, classes = _scene(seed=3)
    detections = _noisy(boxes, classes)
    reference = _evaluate(detections, _batches(boxes, classes))
    assert 0.2 < reference["AP"] < 0.95
    converted = dict(detections, boxes=_to_format(detections["boxes"], bounding_box_format))
    metrics = evaluate_coco(
        TableDetector(**converted, bounding_box_format=bounding_box_format),
        _batches(_to_format(boxes, bounding_box_format), classes),
        verbose=0,
    )
    for key in METRIC_NAMES:
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6, nan_ok=True), key


def test_bounding_box_format_argument_overrides_the_model():
    detections, batches = _one_image([[0, 0, 20, 20], [30, 30, 60, 60]], [[0, 0, 20, 20]], [0.9])
    detector = TableDetector(**detections, bounding_box_format="yxyx")
    assert evaluate_coco(detector, batches, bounding_box_format="xyxy", verbose=0)["AR100"] == 0.5


def test_detections_in_crowd_regions_are_ignored():
    gt = [[0, 0, 20, 20], [30, 30, 64, 64]]
    found = [[0, 0, 20, 20], [40, 40, 50, 50]]  # the second inside the crowd region
    detections, batches = _one_image(gt, found, [0.5, 0.9])
    batches[0][1]["is_crowd"] = np.asarray([[False, True]])
    assert _evaluate(detections, batches)["AP"] == pytest.approx(1.0)
    del batches[0][1]["is_crowd"]  # a plain box: a false positive ranked first, a miss
    assert _evaluate(detections, batches)["AP"] < 0.3


def test_max_batches_reads_only_the_first_batches():
    boxes, classes = _scene(num_images=12, seed=2)
    perfect = _perfect(boxes, classes)
    counts = np.where(np.arange(12) < BATCH, (classes >= 0).sum(axis=1), 0)
    detections = dict(perfect, counts=counts)  # finds the first batch's boxes only
    batches = _batches(boxes, classes)
    pulled = []

    def stream():
        for batch in batches:
            pulled.append(1)
            yield batch

    metrics = evaluate_coco(TableDetector(**detections), stream(), max_batches=1, verbose=0)
    assert metrics["AP"] == pytest.approx(1.0)
    assert len(pulled) == 1
    assert evaluate_coco(TableDetector(**detections), batches, verbose=0)["AP"] < 0.6


def test_per_class_ap_with_names_and_nan_for_a_class_without_boxes():
    # Class 0: its box found exactly. Class 1: one of two found. Class 2: no box.
    gt = [[0, 0, 20, 20], [30, 0, 50, 20], [0, 30, 30, 60]]
    detections, batches = _one_image(gt, [[0, 0, 20, 20], [30, 0, 50, 20]], [0.9, 0.8],
                                     gt_classes=[0, 1, 1], found_classes=[0, 1])
    metrics = _evaluate(detections, batches, class_names=["cat", "dog", "owl"],
                        return_per_class=True)
    per_class = metrics["AP_per_class"]
    assert list(per_class) == ["cat", "dog", "owl"]
    assert per_class["cat"] == pytest.approx(1.0)
    assert per_class["dog"] == pytest.approx(51 / 101)
    assert _nan(per_class["owl"])
    assert metrics["AP"] == pytest.approx((1 + 51 / 101) / 2)
    by_index = _evaluate(detections, batches, return_per_class=True)["AP_per_class"]
    assert list(by_index) == [0, 1, 2]


def test_tf_data_batches_with_image_ids():
    tf = pytest.importorskip("tensorflow")
    boxes, classes = _scene(seed=4)
    image_ids = np.arange(8) * 10 + 7
    dataset = tf.data.Dataset.from_tensor_slices((
        _images(8),
        {"boxes": boxes.astype(np.float32), "classes": classes.astype(np.int32),
         "image_id": image_ids, "image_shape": np.full((8, 2), 480),
         "is_crowd": np.zeros(classes.shape, bool)},
    )).batch(BATCH)
    metrics = evaluate_coco(TableDetector(**_perfect(boxes, classes)), dataset, verbose=1)
    assert metrics["AP"] == 1.0
    with pytest.raises(ValueError, match="image_id 7 occurs twice"):
        evaluate_coco(TableDetector(**_perfect(boxes, classes)), dataset.repeat(2), verbose=0)


def test_coco_metrics_from_plain_lists():
    truth = [{"image_id": 0, "boxes": [[0, 0, 10, 10], [20, 20, 40, 40]], "classes": [0, 0]},
             {"image_id": 1, "boxes": np.zeros((0, 4)), "classes": []}]
    found = [{"image_id": 0, "boxes": [[0, 0, 10, 10]], "classes": [0], "scores": [0.9]}]
    assert coco_metrics(truth, found)["AR100"] == 0.5
    with pytest.raises(ValueError, match="image_id 3 is not in the ground truth"):
        coco_metrics(truth, [dict(found[0], image_id=3)])
    with pytest.raises(ValueError, match="class 4 with num_classes=2"):
        coco_metrics(truth, [dict(found[0], classes=[4])], num_classes=2)
    with pytest.raises(ValueError, match="x2 < x1"):
        coco_metrics([dict(truth[0], boxes=[[10, 0, 0, 10], [20, 20, 40, 40]])], found)
    with pytest.raises(ValueError, match="`class_names`"):
        coco_metrics(truth, found, num_classes=2, class_names=["one"])
    with pytest.raises(ValueError, match="no image"):
        coco_metrics([], [])


def test_bad_arguments():
    detections, batches = _one_image([[0, 0, 20, 20]], [[0, 0, 20, 20]], [0.9])
    detector = TableDetector(**detections)
    with pytest.raises(ValueError, match="bounding_box_format"):
        evaluate_coco(detector, batches, bounding_box_format="corners", verbose=0)
    with pytest.raises(ValueError, match="max_batches"):
        evaluate_coco(detector, batches, max_batches=0, verbose=0)
    with pytest.raises(ValueError, match="must be a dict with 'boxes'"):
        evaluate_coco(detector, [(batches[0][0], batches[0][1]["classes"])], verbose=0)
    plain = keras.Sequential([keras.layers.Identity()])
    with pytest.raises(ValueError, match="no `bounding_box_format` attribute"):
        evaluate_coco(plain, batches, verbose=0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        COCOEvaluation(batches, every_n_epochs=0)
    with pytest.raises(ValueError, match="keys"):
        COCOEvaluation(batches, keys=("AP", "mAP"))


def test_missing_pycocotools_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    detections, batches = _one_image([[0, 0, 20, 20]], [[0, 0, 20, 20]], [0.9])
    with pytest.raises(ImportError, match=r"pip install 'keras-dynconv\[detection\]'"):
        evaluate_coco(TableDetector(**detections), batches, verbose=0)


def test_callback_logs_every_n_epochs(capsys):
    detections, batches = _one_image([[0, 0, 20, 20], [30, 30, 60, 60]], [[0, 0, 20, 20]], [0.9])
    callback = COCOEvaluation(batches, every_n_epochs=2, keys=("AP", "AR100"), verbose=1)
    callback.set_model(TableDetector(**detections))
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0} and callback.history == []
    callback.on_epoch_end(1, logs)
    assert logs["val_AP"] == pytest.approx(51 / 101)
    assert logs["val_AR100"] == 0.5
    assert "val_AP50" not in logs
    assert callback.history[0]["epoch"] == 1 and callback.history[0]["AP75"] == pytest.approx(51 / 101)
    assert "Epoch 2: COCO AP 0.505 - AR100 0.500" in capsys.readouterr().out


def test_callback_inside_fit_feeds_history_and_checkpoint(tmp_path):
    boxes, classes = _scene(num_images=8, seed=5)
    detector = TrainableTableDetector(**_perfect(boxes, classes))
    detector.compile(optimizer="sgd")
    coco = COCOEvaluation(_batches(boxes, classes), max_batches=1)
    path = str(tmp_path / "best.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(
        path, monitor="val_AP", mode="max", save_best_only=True, save_weights_only=True
    )
    history = detector.fit(
        _images(8), {"boxes": boxes.astype(np.float32), "classes": classes.astype(np.int32)},
        batch_size=BATCH, epochs=2, verbose=0, callbacks=[coco, checkpoint],
    )
    assert history.history["val_AP"] == [1.0, 1.0]
    assert history.history["val_AP50"] == [1.0, 1.0]
    assert len(coco.history) == 2
    assert (tmp_path / "best.weights.h5").exists()
