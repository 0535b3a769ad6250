"""SSD detection: anchors, box coding, matching, losses, NMS and the detector.

References are written here in NumPy from the TF Object Detection API's definitions
(ssd_anchor_generator, faster_rcnn_box_coder, argmax_matcher, greedy NMS), not from
our code. Tolerances: 1e-6 on anchors (float32 of float64 values), 1e-5 relative on
box codes and losses (float32 arithmetic).
"""

import math

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

from keras_dynconv import zoo
from keras_dynconv.detection import AnchorConfig
from keras_dynconv.detection import SSDDetector
from keras_dynconv.detection import decode_boxes
from keras_dynconv.detection import encode_boxes
from keras_dynconv.detection import generate_anchors
from keras_dynconv.detection import hard_negative_mask
from keras_dynconv.detection import match_anchors
from keras_dynconv.detection import multiclass_non_max_suppression
from keras_dynconv.detection import pairwise_iou
from keras_dynconv.detection import sigmoid_focal_loss
from keras_dynconv.detection import smooth_l1
from keras_dynconv.detection import ssd_loss
from keras_dynconv.detection import ssd_targets

SSD300_MAPS = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


# --- anchors --------------------------------------------------------------------------
def test_ssd300_has_1917_anchors_per_map_as_the_reference():
    anchors = generate_anchors(SSD300_MAPS, (300, 300))
    assert anchors.shape == (1917, 4) and anchors.dtype == np.float32
    assert AnchorConfig().boxes_per_position(6) == [3, 6, 6, 6, 6, 6]
    assert [h * w * n for (h, w), n in zip(SSD300_MAPS, [3, 6, 6, 6, 6, 6])] == [
        1083, 600, 150, 54, 24, 6
    ]


def test_anchor_centres_and_sizes_by_hand():
    anchors = generate_anchors(SSD300_MAPS, (300, 300))
    # First map, first cell: (0.1, 1:1), (0.2, 2:1), (0.2, 1:2) centred at 0.5 / 19.
    centre = 0.5 / 19
    r2 = math.sqrt(2.0)
    expected = [
        [centre, centre, 0.1, 0.1],
        [centre, centre, 0.2 / r2, 0.2 * r2],
        [centre, centre, 0.2 * r2, 0.2 / r2],
    ]
    np.testing.assert_allclose(anchors[:3], expected, atol=1e-6)
    # First map, cell (row 0, column 1): the column moves x only.
    np.testing.assert_allclose(anchors[3], [centre, 1.5 / 19, 0.1, 0.1], atol=1e-6)
    # Second map (scale 0.35) starts at index 1083: five ratios, then sqrt(0.35 * 0.5).
    second = anchors[1083:1089]
    np.testing.assert_allclose(second[:, :2], [[0.05, 0.05]] * 6, atol=1e-6)
    ratios = [1.0, 2.0, 0.5, 3.0, 0.3333]
    heights = [0.35 / math.sqrt(r) for r in ratios] + [math.sqrt(0.35 * 0.5)]
    widths = [0.35 * math.sqrt(r) for r in ratios] + [math.sqrt(0.35 * 0.5)]
    np.testing.assert_allclose(second[:, 2], heights, atol=1e-6)
    np.testing.assert_allclose(second[:, 3], widths, atol=1e-6)
    # The 1x1 map: scale 0.95 centred, interpolated box sqrt(0.95 * 1.0).
    np.testing.assert_allclose(anchors[-6], [0.5, 0.5, 0.95, 0.95], atol=1e-6)
    np.testing.assert_allclose(anchors[-1, 2:], [math.sqrt(0.95)] * 2, atol=1e-6)


def test_anchors_on_a_wide_image_are_square_in_pixels():
    anchors = generate_anchors([(2, 4)], (200, 400), AnchorConfig(reduce_boxes_in_lowest_layer=False))
    one_to_one = anchors[0]
    assert one_to_one[2] * 200 == pytest.approx(one_to_one[3] * 400)
    assert anchors.shape == (2 * 4 * 6, 4)


def test_anchor_config_errors_and_round_trip():
    with pytest.raises(ValueError, match="min_scale"):
        AnchorConfig(min_scale=0.9, max_scale=0.2)
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorConfig(aspect_ratios=(1.0, -2.0))
    with pytest.raises(ValueError, match="feature_map_sizes"):
        generate_anchors([], (300, 300))
    config = AnchorConfig(aspect_ratios=(1.0, 2.0))
    assert AnchorConfig.from_config(config.get_config()) == config


# --- box coding -----------------------------------------------------------------------
def _reference_encode(boxes, anchors):
    """faster_rcnn_box_coder with scales 10, 10, 5, 5 (boxes yxyx, anchors yc xc h w)."""
    ya, xa, ha, wa = anchors.T
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    y, x = boxes[:, 0] + h / 2, boxes[:, 1] + w / 2
    return np.stack(
        [(y - ya) / ha * 10, (x - xa) / wa * 10, np.log(h / ha) * 5, np.log(w / wa) * 5],
        axis=-1,
    )


def test_box_coding_matches_the_reference_and_round_trips(rng):
    anchors = generate_anchors([(5, 5)], (300, 300))
    corners = np.sort(rng.uniform(0, 1, size=(len(anchors), 2, 2)), axis=1)
    boxes = np.concatenate([corners[:, 0], corners[:, 1]], axis=-1).astype("float32")
    boxes[:, 2:] += 0.01  # no empty box
    deltas = to_numpy(encode_boxes(boxes, anchors))
    np.testing.assert_allclose(deltas, _reference_encode(boxes, anchors), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(to_numpy(decode_boxes(deltas, anchors)), boxes, atol=1e-5)
    # Batched boxes decode against the same anchors.
    batched = to_numpy(decode_boxes(np.stack([deltas, deltas]), anchors))
    np.testing.assert_allclose(batched[1], boxes, atol=1e-5)


# --- IoU and matching -----------------------------------------------------------------
def test_pairwise_iou_by_hand():
    first = np.array([[0, 0, 2, 2], [0, 0, 0, 0]], "float32")
    second = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], "float32")
    expected = [[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(to_numpy(pairwise_iou(first, second)), expected, atol=1e-6)


def test_matcher_threshold_force_match_padding_and_ties():
    anchors = np.array(
        [
            [0.0, 0.0, 0.5, 0.5],  # 0
            [0.0, 0.0, 0.4, 0.5],  # 1: IoU 0.8 with gt 0
            [0.5, 0.5, 1.0, 1.0],  # 2
            [0.5, 0.0, 1.0, 0.5],  # 3
        ],
        "float32",
    )
    gt = np.array(
        [
            [[0.0, 0.0, 0.5, 0.5],  # exactly anchor 0; anchor 1 also passes 0.5
             [0.6, 0.6, 0.7, 0.7],  # tiny: IoU 0.04 with anchor 2, matched by force
             [0.0, 0.0, 0.0, 0.0]],  # padding
            [[0.5, 0.0, 1.0, 0.5],  # anchor 3 ...
             [0.5, 0.0, 1.0, 0.45],  # ... is also this one's best: lower index wins
             [0.0, 0.0, 0.0, 0.0]],
        ],
        "float32",
    )
    valid = np.array([[True, True, False], [True, True, False]])
    matches = to_numpy(match_anchors(anchors, gt, valid))
    np.testing.assert_array_equal(matches, [[0, 0, 1, -1], [-1, -1, -1, 0]])
    without_force = to_numpy(match_anchors(anchors, gt, valid, force_match=False))
    np.testing.assert_array_equal(without_force, [[0, 0, -1, -1], [-1, -1, -1, 0]])
    nothing = to_numpy(match_anchors(anchors, gt, np.zeros_like(valid)))
    assert (nothing == -1).all()


def test_targets_one_hot_classes_padding_and_empty_ground_truth():
    anchors = generate_anchors([(2, 2)], (100, 100), AnchorConfig(reduce_boxes_in_lowest_layer=False))
    corners = np.concatenate([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], -1)
    gt = np.zeros((2, 3, 4), "float32")
    gt[0, 0] = corners[7]
    classes = np.array([[2, -1, -1], [-1, -1, -1]], "int32")
    box_targets, class_targets, positive = map(
        to_numpy, ssd_targets(anchors, gt, classes, num_classes=3)
    )
    assert positive[0, 7] and not positive[1].any()
    np.testing.assert_array_equal(class_targets[0, 7], [0, 0, 1])
    assert class_targets[~positive].sum() == 0
    np.testing.assert_allclose(box_targets[0, 7], 0.0, atol=1e-5)  # the box is the anchor
    assert np.all(box_targets[~positive] == 0)


# --- losses -----------------------------------------------------------------------------
def test_focal_and_smooth_l1_match_their_formulas(rng):
    logits = rng.normal(0, 3, size=(4, 5)).astype("float32")
    targets = (rng.uniform(size=(4, 5)) < 0.3).astype("float32")
    p = 1 / (1 + np.exp(-logits.astype("float64")))
    ce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    p_t = np.where(targets == 1, p, 1 - p)
    alpha_t = np.where(targets == 1, 0.75, 0.25)
    expected = (1 - p_t) ** 2 * alpha_t * ce
    np.testing.assert_allclose(to_numpy(sigmoid_focal_loss(logits, targets)), expected, rtol=1e-5, atol=1e-7)
    errors = np.array([-2.0, -0.5, 0.0, 0.3, 1.5], "float32")
    np.testing.assert_allclose(
        to_numpy(smooth_l1(errors, np.zeros(5, "float32"))), [1.5, 0.125, 0.0, 0.045, 1.0], atol=1e-6
    )


def test_hard_negative_mining_keeps_the_hardest_three_per_positive():
    losses = np.array([[0.1, 5.0, 0.2, 4.0, 3.0, 2.0, 1.0, 0.3]], "float32")
    positive = np.array([[False, True, False, False, False, False, False, False]])
    kept = to_numpy(hard_negative_mask(losses, positive, ratio=3))
    np.testing.assert_array_equal(kept, [[False, True, False, True, True, True, False, False]])
    none_positive = to_numpy(hard_negative_mask(losses, np.zeros_like(positive), ratio=3))
    assert none_positive.sum() == 3  # min_negatives per image


def test_ssd_loss_normalises_by_matches(rng):
    deltas = rng.normal(size=(2, 6, 4)).astype("float32")
    logits = rng.normal(size=(2, 6, 3)).astype("float32")
    box_targets = rng.normal(size=(2, 6, 4)).astype("float32")
    positive = np.zeros((2, 6), bool)
    positive[0, 1] = positive[1, 4] = True
    class_targets = np.zeros((2, 6, 3), "float32")
    class_targets[0, 1, 2] = class_targets[1, 4, 0] = 1
    total, localization, classification = map(
        float, map(to_numpy, ssd_loss(deltas, logits, box_targets, class_targets, positive))
    )
    error = np.abs(deltas - box_targets)
    huber = np.where(error < 1, 0.5 * error**2, error - 0.5).sum(-1) / 4
    assert localization == pytest.approx((huber * positive).sum() / 2, rel=1e-5)
    focal = to_numpy(sigmoid_focal_loss(logits, class_targets)).sum()
    assert classification == pytest.approx(focal / 2, rel=1e-5)
    assert total == pytest.approx(localization + classification, rel=1e-6)
    with pytest.raises(ValueError, match="classification_loss"):
        ssd_loss(deltas, logits, box_targets, class_targets, positive, classification_loss="softmax")


# --- NMS --------------------------------------------------------------------------------
def _reference_nms(boxes, scores, iou_threshold, score_threshold, max_total, max_per_class):
    """Greedy per-class NMS over all boxes, then the best max_total (NumPy)."""
    def iou(a, b):
        top_left = np.maximum(a[:2], b[:2])
        bottom_right = np.minimum(a[2:], b[2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None))
        union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
        return inter / union if union > 0 else 0.0

    detections = []
    for label in range(scores.shape[1]):
        order = np.argsort(-scores[:, label], kind="stable")
        kept = []
        for index in order:
            if scores[index, label] <= score_threshold or len(kept) == max_per_class:
                break
            if all(iou(boxes[index], boxes[k]) <= iou_threshold for k in kept):
                kept.append(index)
        detections += [(scores[k, label], label, k) for k in kept]
    detections.sort(key=lambda d: -d[0])
    return detections[:max_total]


def test_nms_equals_a_numpy_reference(rng):
    # Clusters of jittered boxes, so NMS really suppresses, with distinct scores.
    centres = rng.uniform(0.2, 0.8, size=(6, 2))
    boxes = []
    for _ in range(2):
        jitter = rng.normal(0, 0.03, size=(6, 5, 2))
        half = rng.uniform(0.05, 0.15, size=(6, 5, 2))
        c = centres[:, None] + jitter
        boxes.append(np.concatenate([c - half, c + half], -1).reshape(30, 4))
    boxes = np.stack(boxes).astype("float32")
    scores = rng.permutation(2 * 30 * 3).reshape(2, 30, 3).astype("float32") / 180
    outputs = {k: to_numpy(v) for k, v in multiclass_non_max_suppression(
        boxes, scores, iou_threshold=0.5, score_threshold=0.1, max_detections=20,
        max_detections_per_class=5, pre_nms_top_k=30,
    ).items()}
    for image in range(2):
        expected = _reference_nms(boxes[image], scores[image], 0.5, 0.1, 20, 5)
        count = outputs["num_detections"][image]
        assert count == len(expected)
        np.testing.assert_allclose(outputs["scores"][image, :count], [d[0] for d in expected], atol=1e-7)
        np.testing.assert_array_equal(outputs["classes"][image, :count], [d[1] for d in expected])
        np.testing.assert_allclose(
            outputs["boxes"][image, :count], boxes[image][[d[2] for d in expected]], atol=1e-7
        )
        assert (outputs["classes"][image, count:] == -1).all()
        assert (outputs["scores"][image, count:] == 0).all()


def test_nms_pads_when_few_candidates():
    boxes = np.array([[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]], "float32")
    scores = np.array([[[0.9], [0.0]]], "float32")
    outputs = multiclass_non_max_suppression(boxes, scores, max_detections=10, score_threshold=0.05)
    assert to_numpy(outputs["boxes"]).shape == (1, 10, 4)
    assert int(to_numpy(outputs["num_detections"])[0]) == 1
    np.testing.assert_array_equal(to_numpy(outputs["classes"])[0, :3], [0, -1, -1])


# --- the detector -----------------------------------------------------------------------
SMALL = (96, 96, 3)


@pytest.fixture
def detector():
    return zoo.condconv_ssd300_mobilenet_v1(
        alpha=0.25, classes=3, num_experts=2, input_shape=SMALL
    )


def _ground_truth():
    boxes = np.zeros((2, 4, 4), "float32")
    classes = -np.ones((2, 4), "int32")
    boxes[0, :2] = [[8, 10, 50, 60], [40, 40, 90, 80]]
    classes[0, :2] = [0, 2]
    boxes[1, 0] = [-20, 30, 60, 130]  # partly outside the image: clipped
    classes[1, 0] = 1
    return {"boxes": boxes, "classes": classes}


@pytest.mark.architecture
def test_ssd300_builders_make_the_reference_maps():
    model = zoo.ssd300_mobilenet_v1(alpha=0.25)
    assert model.feature_map_sizes == SSD300_MAPS
    assert model.anchors.shape == (1917, 4) and model.image_size == (300, 300)
    outputs = model.network.output
    assert tuple(outputs["box_deltas"].shape) == (None, 1917, 4)
    assert tuple(outputs["class_logits"].shape) == (None, 1917, 80)
    dynamic = zoo.condconv_ssd300_mobilenet_v1(alpha=0.25, num_experts=2)
    names = [layer.name for layer in dynamic.network.layers]
    # Four extra blocks with one shared routing each, after the backbone's eight.
    assert sum(n.startswith("extra") and n.endswith("_routing") for n in names) == 4
    assert sum(n.endswith("_routing") for n in names) == 12
    extra = dynamic.network.get_layer("extra1_3x3")
    assert extra.num_experts == 2 and extra.filters == 128  # 512 x 0.25


def test_fit_lowers_the_loss_and_predict_returns_detections(detector, rng):
    images = rng.uniform(0, 255, size=(2,) + SMALL).astype("float32")
    targets = _ground_truth()
    detector.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    history = detector.fit(images, targets, batch_size=2, epochs=8, verbose=0).history
    assert set(history) == {"loss", "box_loss", "classification_loss"}
    assert history["loss"][-1] < 0.7 * history["loss"][0], history["loss"]
    assert all(math.isfinite(v) for v in history["loss"])
    detections = detector.predict(images, verbose=0)
    assert set(detections) == {"boxes", "classes", "scores", "num_detections"}
    assert detections["boxes"].shape == (2, 100, 4)
    scores = detections["scores"]
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # sorted
    boxes = detections["boxes"]
    assert boxes.min() >= 0 and boxes.max() <= 96  # pixels of the input
    count = detections["num_detections"]
    assert ((detections["classes"] >= 0).sum(axis=1) == count).all()


def test_empty_ground_truth_boxes_outside_the_image_and_bad_targets(detector, rng):
    images = rng.uniform(0, 255, size=(2,) + SMALL).astype("float32")
    # As many boxes as _ground_truth's: eager JAX compiles each new shape once.
    empty = {"boxes": np.zeros((2, 4, 4), "float32"), "classes": -np.ones((2, 4), "int32")}
    outputs = detector(images)
    loss = float(to_numpy(detector.compute_loss(images, empty, outputs)))
    assert math.isfinite(loss) and loss > 0
    assert float(to_numpy(detector.localization_loss_tracker.result())) == 0.0

    # Boxes wholly outside the image have no area once clipped: they count as padding.
    padded = _ground_truth()
    outside = {key: value.copy() for key, value in padded.items()}
    outside["boxes"][0, 2] = [100, 10, 140, 50]  # right of the 96-pixel image
    outside["boxes"][1, 1] = [-50, -40, -10, -5]  # above and left of it
    outside["classes"][0, 2] = outside["classes"][1, 1] = 1
    expected = float(to_numpy(detector.compute_loss(images, padded, outputs)))
    loss = float(to_numpy(detector.compute_loss(images, outside, outputs)))
    assert math.isfinite(loss)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)

    with pytest.raises(ValueError, match="'boxes'"):
        detector.compute_loss(images, {"classes": empty["classes"]}, outputs)
    with pytest.raises(ValueError, match="max_boxes, 4"):
        detector.compute_loss(images, {"boxes": np.zeros((2, 4, 5)), "classes": empty["classes"]}, outputs)
    with pytest.raises(ValueError, match="96x96 images"):
        detector(rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32"))


def test_detector_round_trips_through_keras_files(detector, rng, tmp_path):
    images = rng.uniform(0, 255, size=(2,) + SMALL).astype("float32")
    expected = detector.predict(images, verbose=0)
    path = tmp_path / "ssd.keras"
    detector.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, SSDDetector)
    settings = {k: v for k, v in detector.get_config().items() if k != "network"}
    assert {k: v for k, v in reloaded.get_config().items() if k != "network"} == settings
    actual = reloaded.predict(images, verbose=0)
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-6)
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    weights = tmp_path / "ssd.weights.h5"
    detector.save_weights(weights)
    again = zoo.condconv_ssd300_mobilenet_v1(
        alpha=0.25, classes=3, num_experts=2, input_shape=SMALL, weights=str(weights)
    )
    np.testing.assert_allclose(
        again.predict(images, verbose=0)["scores"], expected["scores"], atol=1e-6
    )


def test_relative_box_format_gives_the_same_loss(rng):
    pixel = zoo.ssd300_mobilenet_v1(alpha=0.25, classes=3, input_shape=SMALL)
    relative = SSDDetector.from_config({**pixel.get_config(), "bounding_box_format": "rel_yxyx"})
    relative.set_weights(pixel.get_weights())
    images = rng.uniform(0, 255, size=(2,) + SMALL).astype("float32")
    targets = _ground_truth()
    xyxy = targets["boxes"]
    rel_yxyx = np.stack([xyxy[..., 1], xyxy[..., 0], xyxy[..., 3], xyxy[..., 2]], -1) / 96
    outputs = pixel(images)
    expected = float(to_numpy(pixel.compute_loss(images, targets, outputs)))
    actual = float(to_numpy(relative.compute_loss(
        images, {**targets, "boxes": rel_yxyx.astype("float32")}, outputs
    )))
    assert actual == pytest.approx(expected, rel=1e-5)


def test_detector_argument_errors():
    with pytest.raises(ValueError, match="bounding_box_format"):
        zoo.ssd300_mobilenet_v1(alpha=0.25, input_shape=SMALL, bounding_box_format="xyz")
    with pytest.raises(ValueError, match="fixed input size"):
        zoo.ssd300_mobilenet_v1(alpha=0.25, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="alpha"):
        zoo.ssd300_mobilenet_v1(alpha=0.3)


# 70 s of XLA compiling on the 2-core CI machine; JAX compiles the same steps with XLA
# in the default suite (test_fit_lowers_the_loss_and_predict_returns_detections).
@pytest.mark.large
@pytest.mark.skipif(BACKEND != "tensorflow", reason="jit_compile=True is TensorFlow's XLA switch")
def test_train_and_predict_steps_compile_with_xla(detector, rng):
    images = rng.uniform(0, 255, size=(2,) + SMALL).astype("float32")
    detector.compile(optimizer="sgd", jit_compile=True)
    detector.fit(images, _ground_truth(), batch_size=2, epochs=1, verbose=0)
    assert detector.predict(images, verbose=0)["boxes"].shape == (2, 100, 4)


def test_backbone_weights_load_into_the_detector(tmp_path):
    backbone = zoo.mobilenet_v1(include_top=False, alpha=0.25, input_shape=SMALL)
    path = str(tmp_path / "backbone.weights.h5")
    backbone.save_weights(path)
    detector = zoo.ssd300_mobilenet_v1(
        alpha=0.25, classes=3, input_shape=SMALL, backbone_weights=path
    )
    for name in ("conv1", "block11_pw", "block13_pw_bn"):
        expected = backbone.get_layer(name).get_weights()
        actual = detector.network.get_layer(name).get_weights()
        for left, right in zip(expected, actual):
            np.testing.assert_array_equal(left, right)


@pytest.mark.orchestration
def test_shapes_example_runs_end_to_end(tmp_path, repo_root):
    """examples/detect_shapes.py in its fast mode: fit, COCO callback, evaluation, files."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "detect_shapes", f"{repo_root}/examples/detect_shapes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(["--fast", "--output", str(tmp_path)])
    assert 0.0 <= metrics["AP50"] <= 1.0
    assert set(metrics["AP_per_class"]) == {"rectangle", "ellipse", "triangle"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "val_AP" in saved["history"] and saved["backend"] == BACKEND
    assert (tmp_path / "detector.weights.h5").exists()
