"""Box coding, IoU and anchor matching: padded ground truth -> SSD targets.

Everything is `keras.ops`, batched and free of data-dependent shapes, so it runs
inside a jitted train step on every backend. Boxes are normalised
`[ymin, xmin, ymax, xmax]` (the detector converts from the user's format first);
anchors are normalised `[yc, xc, h, w]` (`keras_dynconv.detection.anchors`).
"""

from keras import ops
from keras.utils import bounding_boxes

# The TF Object Detection API's faster_rcnn_box_coder scales 10, 10, 5, 5 written as
# SSD's variances (delta / variance == delta * scale).
BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)


def as_float32(values):
    """A float32 backend tensor from arrays, lists or tensors of any backend."""
    return ops.cast(ops.convert_to_tensor(values), "float32")


def encode_boxes(boxes, anchors, variance=BOX_VARIANCE):
    """`[ty, tx, th, tw]` of `boxes` (`[..., N, 4]` yxyx) relative to `anchors` `[N, 4]`.

    `ty = (yc - yc_a) / h_a / variance[0]`, `th = log(h / h_a) / variance[2]`, as the
    faster_rcnn_box_coder.

    Example:
    >>> deltas = encode_boxes(np.array([[0.4, 0.4, 0.6, 0.6]]), np.array([[0.5, 0.5, 0.2, 0.2]]))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(deltas), 0.0, atol=1e-5))  # the anchor itself
    True
    """
    return bounding_boxes.encode_box_to_deltas(
        as_float32(anchors), as_float32(boxes), anchor_format="center_yxhw", box_format="yxyx",
        encoding_format="center_yxhw", variance=variance,
    )


def decode_boxes(deltas, anchors, variance=BOX_VARIANCE):
    """Inverse of `encode_boxes`: yxyx boxes from `[..., N, 4]` deltas.

    Example:
    >>> anchors = np.array([[0.5, 0.5, 0.2, 0.2]])  # center y, x, height, width
    >>> boxes = np.array([[0.35, 0.4, 0.6, 0.65]])
    >>> decoded = decode_boxes(encode_boxes(boxes, anchors), anchors)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(decoded), boxes, atol=1e-6))
    True
    """
    return bounding_boxes.decode_deltas_to_boxes(
        as_float32(anchors), as_float32(deltas), anchor_format="center_yxhw", box_format="yxyx",
        encoded_format="center_yxhw", variance=variance,
    )


def box_area(boxes):
    """Areas of yxyx boxes; empty or inverted boxes have area 0."""
    heights = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    widths = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return heights * widths


def pairwise_iou(boxes1, boxes2):
    """IoU of every box in `boxes1` `[..., N, 4]` with every one in `boxes2` `[..., M, 4]`.

    Leading dimensions broadcast; returns `[..., N, M]`. Pairs with no area give 0.

    Example:
    >>> iou = pairwise_iou(np.array([[0.0, 0.0, 1.0, 1.0]]),
    ...                    np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 1.0, 1.5]]))
    >>> [round(float(value), 3) for value in keras.ops.convert_to_numpy(iou)[0]]
    [1.0, 0.333]
    """
    first = ops.expand_dims(boxes1, -2)
    second = ops.expand_dims(boxes2, -3)
    top_left = ops.maximum(first[..., :2], second[..., :2])
    bottom_right = ops.minimum(first[..., 2:], second[..., 2:])
    intersection = ops.prod(ops.maximum(bottom_right - top_left, 0.0), axis=-1)
    union = ops.expand_dims(box_area(boxes1), -1) + ops.expand_dims(box_area(boxes2), -2)
    union = union - intersection
    return ops.where(union > 0, intersection / ops.maximum(union, 1e-12), 0.0)


def match_anchors(anchor_boxes, gt_boxes, gt_valid, threshold=0.5, force_match=True):
    """The ground truth each anchor is matched to, or -1.

    The TF Object Detection API's argmax_matcher with `matched_threshold =
    unmatched_threshold = threshold` and `force_match_for_each_row`: an anchor takes
    the ground truth it overlaps most if that IoU is at least `threshold`; then
    every valid ground truth takes its best anchor, whatever the IoU (when two
    claim the same anchor the lower index wins, as in the reference).

    Args:
        anchor_boxes: `[A, 4]` yxyx.
        gt_boxes: `[B, M, 4]` yxyx.
        gt_valid: `[B, M]` bool, False for padding.
        threshold: IoU needed for a match.
        force_match: give every ground truth its best anchor.

    Returns:
        int32 `[B, A]`, indices into M, -1 for background.

    Example:
    >>> anchors = np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [0, .5, .5, 1]], "float32")
    >>> ground_truth = np.array([[0, 0, .5, .5], [.5, .5, 1, 1]], "float32")
    >>> matches = match_anchors(anchors, ground_truth, np.array([True, True]))
    >>> keras.ops.convert_to_numpy(matches).tolist()  # the third anchor overlaps nothing
    [[0, 1, -1]]
    """
    iou = pairwise_iou(gt_boxes, ops.expand_dims(anchor_boxes, 0))  # [B, M, A]
    iou = ops.where(ops.expand_dims(gt_valid, -1), iou, -1.0)
    best_gt = ops.cast(ops.argmax(iou, axis=1), "int32")
    matches = ops.where(ops.max(iou, axis=1) >= threshold, best_gt, -1)
    if not force_match:
        return matches
    num_anchors = ops.shape(anchor_boxes)[0]
    best_anchor = ops.argmax(iou, axis=2)  # [B, M]
    claims = ops.one_hot(best_anchor, num_anchors) * ops.cast(
        ops.expand_dims(gt_valid, -1), "float32"
    )  # [B, M, A]
    claimed = ops.max(claims, axis=1) > 0
    claimant = ops.cast(ops.argmax(claims, axis=1), "int32")
    return ops.where(claimed, claimant, matches)


def _gather_rows(values, indices):
    """`values[b, indices[b, a]]` for `[B, M, ...]` values and `[B, A]` indices."""
    trailing = values.shape[2:]
    index = ops.reshape(indices, tuple(ops.shape(indices)) + (1,) * len(trailing))
    index = ops.broadcast_to(index, tuple(ops.shape(indices)) + tuple(trailing))
    return ops.take_along_axis(values, index, axis=1)


def ssd_targets(
    anchors, gt_boxes, gt_classes, num_classes, threshold=0.5, variance=BOX_VARIANCE
):
    """Training targets of every anchor from padded ground truth.

    Args:
        anchors: `[A, 4]` normalised `[yc, xc, h, w]`.
        gt_boxes: `[B, M, 4]` normalised yxyx.
        gt_classes: `[B, M]` int, -1 for padding. Boxes with no area are ignored
            as padding is: they overlap no anchor.
        num_classes: number of foreground classes.
        threshold, variance: of the matcher and the box coder.

    Returns:
        `(box_targets [B, A, 4], class_targets [B, A, num_classes], positive [B, A])`:
        encoded boxes of matched anchors (0 elsewhere), one-hot classes (all zero
        for background, as the reference's `encode_background_as_zeros`), and
        which anchors are matched.

    Example:
    >>> anchors = generate_anchors([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)],
    ...                            (300, 300))  # doctest: +SKIP
    >>> targets = ssd_targets(anchors, boxes, classes, num_classes=90)  # doctest: +SKIP
    """
    gt_classes = ops.cast(gt_classes, "int32")
    gt_valid = ops.logical_and(gt_classes >= 0, box_area(gt_boxes) > 0)
    anchor_boxes = bounding_boxes.convert_format(anchors, "center_yxhw", "yxyx")
    matches = match_anchors(anchor_boxes, gt_boxes, gt_valid, threshold=threshold)
    positive = matches >= 0
    safe_matches = ops.maximum(matches, 0)
    matched_boxes = _gather_rows(gt_boxes, safe_matches)
    box_targets = encode_boxes(matched_boxes, anchors, variance)
    box_targets = ops.where(ops.expand_dims(positive, -1), box_targets, 0.0)
    matched_classes = _gather_rows(gt_classes, safe_matches)
    class_targets = ops.one_hot(matched_classes, num_classes) * ops.cast(
        ops.expand_dims(positive, -1), "float32"
    )
    return box_targets, class_targets, positive
