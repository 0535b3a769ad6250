"""The end of every detection example: resize, box format, padding to static shapes.

Each example becomes `(image, {"boxes": [M, 4], "classes": [M]})` with a fixed
`M = max_boxes`, so that batches have static shapes: padding rows have zero
boxes and class -1 (the `SSDDetector` convention), and objects beyond
`max_boxes` are dropped (the first ones are kept). The image is resized to
`S x S` without keeping its aspect ratio, bilinearly, as the TF Object Detection
API's `fixed_shape_resizer` for SSD.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf

from keras_dynconv.data.box_formats import from_rel_yxyx

PADDING_CLASS = -1


def resize_image(image, image_size):
    """`[H, W, 3]` image -> float32 `[S, S, 3]` in [0, 255], bilinear (no resize
    when it is already `S x S`)."""
    image = tf.convert_to_tensor(image)
    if image.shape[0] == image_size and image.shape[1] == image_size:
        return tf.cast(image, tf.float32)
    # Bilinear interpolation stays within the input's range: no clipping needed.
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return tf.ensure_shape(image, [image_size, image_size, 3])


def pad_objects(values, max_boxes, padding_value):
    """First `max_boxes` rows of `values` (`[N, ...]`), padded with `padding_value`
    to exactly `max_boxes` rows.

    Example:

    >>> pad_objects([3, 1], max_boxes=4, padding_value=-1).numpy().tolist()
    [3, 1, -1, -1]
    """
    values = tf.convert_to_tensor(values)[:max_boxes]
    rows = max_boxes - tf.shape(values)[0]
    paddings = [[0, rows]] + [[0, 0]] * (values.shape.rank - 1)
    padded = tf.pad(values, paddings, constant_values=tf.cast(padding_value, values.dtype))
    return tf.ensure_shape(padded, [max_boxes] + values.shape.as_list()[1:])


def finish_example(image, boxes, classes, *, image_size, bounding_box_format, max_boxes):
    """Resized image and padded targets of one example.

    Args:
        image: `[H, W, 3]` image (any dtype with values in [0, 255]).
        boxes: float32 `[N, 4]` normalised `[ymin, xmin, ymax, xmax]`; clipped
            to the image here.
        classes: integer `[N]` class ids.
        image_size: side `S` of the output image.
        bounding_box_format: one of `box_formats.BOUNDING_BOX_FORMATS`, in
            pixels of the `S x S` output for the absolute ones.
        max_boxes: rows `M` of the padded targets.

    Returns:
        `(image float32 [S, S, 3], {"boxes": float32 [M, 4], "classes": int32 [M]})`.

    Example:

    >>> import tensorflow as tf
    >>> image, targets = finish_example(
    ...     tf.zeros([40, 60, 3], tf.uint8), [[0.5, 0.0, 1.0, 0.5]], [7],
    ...     image_size=300, bounding_box_format="xyxy", max_boxes=3)
    >>> targets["boxes"].numpy().tolist()
    [[0.0, 150.0, 150.0, 300.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    >>> targets["classes"].numpy().tolist()
    [7, -1, -1]
    """
    boxes = tf.clip_by_value(tf.reshape(tf.cast(boxes, tf.float32), [-1, 4]), 0.0, 1.0)
    boxes = from_rel_yxyx(boxes, bounding_box_format, image_size, image_size)
    targets = {
        "boxes": pad_objects(boxes, max_boxes, 0.0),
        "classes": pad_objects(tf.cast(classes, tf.int32), max_boxes, PADDING_CLASS),
    }
    return resize_image(image, image_size), targets


def keep_boxes_with_area(boxes, *values):
    """Drops zero-area boxes (and the matching rows of `values`).

    Training only: a box without pixels has no appearance to learn and breaks the
    log-scale size encoding of SSD targets.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return (tf.boolean_mask(boxes, keep),) + tuple(tf.boolean_mask(v, keep) for v in values)
