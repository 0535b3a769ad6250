"""SSD losses in `keras.ops`: smooth L1 for boxes, sigmoid focal or sigmoid
cross-entropy (optionally with hard negative mining) for classes.

The defaults are the `ssd_mobilenet_v1_300x300_coco14_sync` configuration of the TF
Object Detection API: focal loss (alpha 0.75, gamma 2), smooth L1 with delta 1
divided by the code size 4, both normalised by the number of matched anchors.
"""

from keras import ops

from keras_dynconv.detection.targets import as_float32

CLASSIFICATION_LOSSES = ("focal", "sigmoid")


def smooth_l1(predictions, targets, delta=1.0):
    """Huber loss per element: `0.5 x^2 / delta` for |x| < delta, `|x| - 0.5 delta` else.

    Example:
    >>> keras.ops.convert_to_numpy(smooth_l1(np.array([0.5, 3.0]), np.zeros(2))).tolist()
    [0.125, 2.5]
    """
    error = ops.abs(as_float32(predictions) - as_float32(targets))
    return ops.where(error < delta, 0.5 * ops.square(error) / delta, error - 0.5 * delta)


def sigmoid_cross_entropy(logits, targets):
    """`-z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x))`, stable for large |x|.

    Example:
    >>> loss = sigmoid_cross_entropy(np.array([0.0, 10.0]), np.array([1.0, 1.0]))
    >>> [round(float(value), 4) for value in keras.ops.convert_to_numpy(loss)]
    [0.6931, 0.0]
    """
    logits, targets = as_float32(logits), as_float32(targets)
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def sigmoid_focal_loss(logits, targets, alpha=0.75, gamma=2.0):
    """Focal loss (Lin et al., 2017) per element, as the reference's
    SigmoidFocalClassificationLoss: `(1 - p_t)^gamma * alpha_t * CE`.

    Example:
    >>> loss = sigmoid_focal_loss(np.array([0.0]), np.array([1.0]))  # 0.75 * 0.5**2 * log 2
    >>> round(float(keras.ops.convert_to_numpy(loss)[0]), 3)
    0.13
    """
    logits, targets = as_float32(logits), as_float32(targets)
    probabilities = ops.sigmoid(logits)
    p_t = targets * probabilities + (1 - targets) * (1 - probabilities)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    return ops.power(1 - p_t, gamma) * alpha_t * sigmoid_cross_entropy(logits, targets)


def hard_negative_mask(anchor_losses, positive, ratio=3, min_negatives=3):
    """Positives plus, per image, the `ratio` x #positives hardest negatives.

    SSD's hard negative mining (Liu et al., 2016): negatives ranked by their
    classification loss; at least `min_negatives` per image, as the reference's
    HardExampleMiner (`min_negatives_per_image`).
    """
    positive = ops.convert_to_tensor(positive)
    negative_losses = ops.where(positive, -1.0, as_float32(anchor_losses))
    order = ops.argsort(-negative_losses, axis=-1)
    rank = ops.argsort(order, axis=-1)
    num_positive = ops.sum(ops.cast(positive, "int32"), axis=-1, keepdims=True)
    num_negative = ops.maximum(num_positive * ratio, min_negatives)
    hard = ops.logical_and(rank < num_negative, ops.logical_not(positive))
    return ops.logical_or(positive, hard)


def ssd_loss(
    box_deltas,
    class_logits,
    box_targets,
    class_targets,
    positive,
    classification_loss="focal",
    focal_alpha=0.75,
    focal_gamma=2.0,
    hard_negative_ratio=None,
    localization_weight=1.0,
    classification_weight=1.0,
):
    """`(total, localization, classification)` losses of a batch.

    Both terms are sums over the batch divided by its number of matched anchors (at
    least 1), as `normalize_loss_by_num_matches`; the box term is also divided by 4
    (`normalize_loc_loss_by_codesize`).

    Args:
        box_deltas, class_logits: the network's `[B, A, 4]` and `[B, A, C]` outputs.
        box_targets, class_targets, positive: from `ssd_targets`.
        classification_loss: "focal" or "sigmoid" (cross-entropy).
        focal_alpha, focal_gamma: of the focal loss.
        hard_negative_ratio: None (every anchor counts) or the negatives kept per
            positive, e.g. 3 as in SSD.
        localization_weight, classification_weight: weights of the two terms.

    Example:
    >>> loss = ssd_loss(box_deltas, class_logits, box_targets, class_targets)  # doctest: +SKIP
    """
    box_deltas, class_logits = as_float32(box_deltas), as_float32(class_logits)
    box_targets, class_targets = as_float32(box_targets), as_float32(class_targets)
    positive = ops.convert_to_tensor(positive)
    positive_weights = ops.cast(positive, "float32")
    normalizer = ops.maximum(ops.sum(positive_weights), 1.0)

    box_errors = ops.sum(smooth_l1(box_deltas, box_targets), axis=-1) / 4.0
    localization = ops.sum(box_errors * positive_weights) / normalizer

    if classification_loss == "focal":
        per_class = sigmoid_focal_loss(class_logits, class_targets, focal_alpha, focal_gamma)
    elif classification_loss == "sigmoid":
        per_class = sigmoid_cross_entropy(class_logits, class_targets)
    else:
        raise ValueError(
            "Invalid value for argument `classification_loss`. Expected one of "
            f"{list(CLASSIFICATION_LOSSES)}. Received "
            f"classification_loss={classification_loss!r}"
        )
    anchor_losses = ops.sum(per_class, axis=-1)
    if hard_negative_ratio is not None:
        kept = hard_negative_mask(ops.stop_gradient(anchor_losses), positive, hard_negative_ratio)
        anchor_losses = anchor_losses * ops.cast(kept, "float32")
    classification = ops.sum(anchor_losses) / normalizer

    localization = localization_weight * localization
    classification = classification_weight * classification
    return localization + classification, localization, classification
