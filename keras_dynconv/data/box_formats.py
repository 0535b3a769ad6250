"""Bounding-box formats of `keras.utils.bounding_boxes`, and the detection pipelines' checks.

The pipelines keep boxes as TFDS stores them, normalised `[ymin, xmin, ymax, xmax]`,
and convert them last. The conversion is written in TensorFlow ops: inside
`tf.data`, `keras.ops` would return JAX arrays or torch tensors under those
backends.

Importing this module does not import TensorFlow (the conversion imports it).
"""

from keras_dynconv.data._checks import check_choice
from keras_dynconv.data._checks import check_positive_int

# The names `keras.utils.bounding_boxes.convert_format` takes. Absolute formats are
# in pixels of the pipeline's output image; "rel_" formats are fractions of it.
BOUNDING_BOX_FORMATS = (
    "xyxy",
    "yxyx",
    "xywh",
    "center_xywh",
    "center_yxhw",
    "rel_xyxy",
    "rel_yxyx",
    "rel_xywh",
    "rel_center_xywh",
)


def check_detection_arguments(*, image_size, batch_size, bounding_box_format, max_boxes):
    """ValueErrors naming the argument, for what every detection pipeline takes."""
    check_positive_int("image_size", image_size)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_boxes", max_boxes)
    check_choice("bounding_box_format", bounding_box_format, BOUNDING_BOX_FORMATS)


def from_rel_yxyx(boxes, bounding_box_format, height, width):
    """Normalised `[..., 4]` yxyx boxes -> `bounding_box_format` for an image of
    `height` x `width` pixels (TensorFlow ops, float32).

    Example:

    >>> boxes = [[0.125, 0.25, 0.5, 0.75]]
    >>> from_rel_yxyx(boxes, "xywh", height=80, width=40).numpy().tolist()
    [[10.0, 10.0, 20.0, 30.0]]
    >>> from_rel_yxyx(boxes, "rel_center_xywh", height=80, width=40).numpy().tolist()
    [[0.5, 0.3125, 0.5, 0.375]]
    """
    import tensorflow as tf

    check_choice("bounding_box_format", bounding_box_format, BOUNDING_BOX_FORMATS)
    ymin, xmin, ymax, xmax = tf.unstack(tf.convert_to_tensor(boxes, tf.float32), 4, axis=-1)
    base = bounding_box_format.removeprefix("rel_")
    if base == bounding_box_format:
        height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        ymin, ymax = ymin * height, ymax * height
        xmin, xmax = xmin * width, xmax * width
    box_height, box_width = ymax - ymin, xmax - xmin
    center_y, center_x = (ymin + ymax) / 2.0, (xmin + xmax) / 2.0
    coordinates = {
        "xyxy": (xmin, ymin, xmax, ymax),
        "yxyx": (ymin, xmin, ymax, xmax),
        "xywh": (xmin, ymin, box_width, box_height),
        "center_xywh": (center_x, center_y, box_width, box_height),
        "center_yxhw": (center_y, center_x, box_height, box_width),
    }[base]
    return tf.stack(coordinates, axis=-1)
