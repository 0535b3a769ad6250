"""Per-class non-maximum suppression in `keras.ops`, with static shapes.

keras-cv's NonMaxSuppression does not run on every backend and its multi-class
version is TensorFlow-only, so this is our own: the reference's
`batch_multiclass_non_max_suppression` (TF Object Detection API) as fixed-size tensor
programs that jit on TensorFlow, JAX and PyTorch.

Greedy NMS runs on each class's `pre_nms_top_k` highest-scoring boxes. Within them
its decisions are exactly the reference's, which runs on all boxes: a box is only
ever suppressed by a higher-scoring one. A box ranked below `pre_nms_top_k` in its
class is never returned (the reference could return it if enough boxes above it
were suppressed); raise `pre_nms_top_k` to get closer, at O(k^2) memory per class.
"""

from keras import ops

from keras_dynconv.detection.targets import pairwise_iou


def _greedy_keep(iou, candidates, iou_threshold):
    """Greedy NMS over score-sorted candidates: `[..., K]` bool of the boxes kept.

    Box i is kept if it is a candidate and no kept box before it overlaps it by more
    than `iou_threshold`: one pass over i, each step vectorised over everything else.
    """
    num_boxes = candidates.shape[-1]
    overlaps = iou > iou_threshold  # [..., K, K]
    positions = ops.arange(num_boxes)

    def visit(index, keep):
        earlier = positions < index
        suppressors = ops.logical_and(keep, earlier)
        column = ops.take(overlaps, index, axis=-1)  # [..., K]: overlap of j with index
        suppressed = ops.any(ops.logical_and(suppressors, column), axis=-1)
        keep_index = ops.logical_and(ops.take(candidates, index, axis=-1), ~suppressed)
        return ops.where(positions == index, ops.expand_dims(keep_index, -1), keep)

    return ops.fori_loop(0, num_boxes, visit, candidates)


def multiclass_non_max_suppression(
    boxes,
    scores,
    iou_threshold=0.6,
    score_threshold=1e-8,
    max_detections=100,
    max_detections_per_class=100,
    pre_nms_top_k=100,
):
    """Per-class greedy NMS, then the best `max_detections` over all classes.

    Args:
        boxes: `[B, N, 4]` yxyx, shared by the classes (SSD boxes are class-agnostic).
        scores: `[B, N, C]` class probabilities.
        iou_threshold: a box overlapping a kept box of its class by more than this
            is dropped.
        score_threshold: boxes scoring at most this are never returned.
        max_detections: per image, over all classes.
        max_detections_per_class: per image and class.
        pre_nms_top_k: boxes per class that NMS looks at (see the module docstring).

    Returns:
        A dict: `"boxes"` `[B, max_detections, 4]` yxyx, `"classes"` int32 and
        `"scores"` `[B, max_detections]` sorted by score, and `"num_detections"`
        int32 `[B]`. Rows past `num_detections` have box 0, class -1 and score 0.

    Example:
    >>> detections = multiclass_non_max_suppression(boxes, scores, iou_threshold=0.6,
    ...                                             max_detections=100)  # doctest: +SKIP
    """
    num_boxes, num_classes = boxes.shape[1], scores.shape[2]
    top_k = min(pre_nms_top_k, num_boxes)
    per_class_scores = ops.transpose(ops.cast(scores, "float32"), (0, 2, 1))  # [B, C, N]
    top_scores, top_indices = ops.top_k(per_class_scores, top_k, sorted=True)  # [B, C, K]
    batch = ops.shape(boxes)[0]
    flat_indices = ops.reshape(top_indices, (batch, num_classes * top_k, 1))
    candidates_boxes = ops.take_along_axis(
        ops.cast(boxes, "float32"), ops.broadcast_to(flat_indices, (batch, num_classes * top_k, 4)),
        axis=1,
    )
    candidates_boxes = ops.reshape(candidates_boxes, (batch, num_classes, top_k, 4))
    candidates = top_scores > score_threshold
    keep = _greedy_keep(
        pairwise_iou(candidates_boxes, candidates_boxes), candidates, iou_threshold
    )
    # Within a class, kept boxes are already in score order: the first
    # max_detections_per_class of them are the class's best.
    kept_rank = ops.cumsum(ops.cast(keep, "int32"), axis=-1)
    keep = ops.logical_and(keep, kept_rank <= max_detections_per_class)

    kept_scores = ops.where(keep, top_scores, -1.0)
    kept_scores = ops.reshape(kept_scores, (batch, num_classes * top_k))
    num_outputs = min(max_detections, num_classes * top_k)
    best_scores, best = ops.top_k(kept_scores, num_outputs, sorted=True)
    valid = best_scores > -1.0
    best_boxes = ops.take_along_axis(
        ops.reshape(candidates_boxes, (batch, num_classes * top_k, 4)),
        ops.broadcast_to(ops.expand_dims(best, -1), (batch, num_outputs, 4)),
        axis=1,
    )
    classes = ops.cast(best // top_k, "int32")
    outputs = {
        "boxes": ops.where(ops.expand_dims(valid, -1), best_boxes, 0.0),
        "classes": ops.where(valid, classes, -1),
        "scores": ops.where(valid, best_scores, 0.0),
        "num_detections": ops.sum(ops.cast(valid, "int32"), axis=-1),
    }
    if num_outputs < max_detections:
        padding = max_detections - num_outputs
        outputs = {
            "boxes": ops.pad(outputs["boxes"], ((0, 0), (0, padding), (0, 0))),
            "classes": ops.pad(outputs["classes"], ((0, 0), (0, padding)), constant_values=-1),
            "scores": ops.pad(outputs["scores"], ((0, 0), (0, padding))),
            "num_detections": outputs["num_detections"],
        }
    return outputs
