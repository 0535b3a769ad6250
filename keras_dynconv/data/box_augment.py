"""Detection augmentations that move the boxes with the image: SSD random crop, flip.

Follows the TF Object Detection API (tensorflow/models `research/object_detection/
core/preprocessor.py`): `ssd_random_crop` picks one of seven `random_crop_image`
operations uniformly; each samples a crop with `sample_distorted_bounding_box`
(100 attempts, the whole image when none succeeds), keeps the boxes that are not
completely outside the crop and have at least `overlap_thresh` of their area
inside it, moves them into the crop's frame and clips them to [0, 1]; with
probability `random_coef` the image is left as it is. The random ops are
stateless (a `[2]` int seed reproduces them) and in TensorFlow: they run inside
`tf.data` on every Keras backend.

Boxes are normalised `[ymin, xmin, ymax, xmax]` (TFDS' format), `[N, 4]` float32;
N may be 0.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf

# The SSD paper's crops (Liu et al. 2016) as the TF OD API's defaults: one
# operation per minimum coverage, its overlap threshold equal to it.
MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
OVERLAP_THRESH = MIN_OBJECT_COVERED
ASPECT_RATIO_RANGE = (0.5, 2.0)
AREA_RANGE = (0.1, 1.0)
RANDOM_COEF = 0.15
MAX_ATTEMPTS = 100


def crop_boxes(boxes, window, overlap_thresh):
    """Boxes seen through a crop `window` (normalised `[ymin, xmin, ymax, xmax]`).

    Returns `(boxes, keep)`: all boxes in the window's frame, clipped to [0, 1],
    and a bool `[N]` mask of those to keep: not completely outside the window,
    with intersection / own area >= `overlap_thresh` (zero-area boxes are never
    kept, as the reference's 0 / 0).

    Example:

    >>> boxes, keep = crop_boxes([[0.0, 0.0, 0.5, 0.5], [0.375, 0.375, 0.625, 0.625]],
    ...                          [0.5, 0.5, 1.0, 1.0], overlap_thresh=0.2)
    >>> keep.numpy().tolist()
    [False, True]
    >>> boxes.numpy()[1].tolist()
    [0.0, 0.0, 0.25, 0.25]
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    window = tf.convert_to_tensor(window, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    win_ymin, win_xmin, win_ymax, win_xmax = tf.unstack(window)
    outside = (
        (ymin >= win_ymax) | (xmin >= win_xmax) | (ymax <= win_ymin) | (xmax <= win_xmin)
    )
    overlap_height = tf.maximum(tf.minimum(ymax, win_ymax) - tf.maximum(ymin, win_ymin), 0.0)
    overlap_width = tf.maximum(tf.minimum(xmax, win_xmax) - tf.maximum(xmin, win_xmin), 0.0)
    # 0 / 0 is NaN, and NaN >= t is False: degenerate boxes go, as in the reference.
    coverage = overlap_height * overlap_width / ((ymax - ymin) * (xmax - xmin))
    keep = tf.logical_not(outside) & (coverage >= overlap_thresh)
    height, width = win_ymax - win_ymin, win_xmax - win_xmin
    moved = (boxes - tf.stack([win_ymin, win_xmin, win_ymin, win_xmin])) / tf.stack(
        [height, width, height, width]
    )
    return tf.clip_by_value(moved, 0.0, 1.0), keep


def _strict_random_crop(image, boxes, classes, min_object_covered, seed):
    """One sampled crop with `overlap_thresh = min_object_covered` (the SSD ops)."""
    begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.clip_by_value(boxes, 0.0, 1.0)[:, None, :],
        seed=seed,
        min_object_covered=min_object_covered,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE,
        max_attempts=MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    new_boxes, keep = crop_boxes(boxes, tf.reshape(window, [4]), min_object_covered)
    image = tf.ensure_shape(tf.slice(image, begin, size), [None, None, image.shape[-1]])
    return image, tf.boolean_mask(new_boxes, keep), tf.boolean_mask(classes, keep)


def ssd_random_crop(image, boxes, classes, seed):
    """The SSD random crop of the TF Object Detection API (`ssd_random_crop`).

    One of seven operations, uniformly: a crop covering at least 0, 0.1, 0.3,
    0.5, 0.7, 0.9 or 1.0 of some box (area 10%-100% of the image, aspect ratio
    1/2-2), keeping the boxes with at least that fraction of their area inside;
    each leaves the image uncropped with probability 0.15.

    Args:
        image: `[H, W, C]` tensor, any dtype.
        boxes: float32 `[N, 4]` normalised `[ymin, xmin, ymax, xmax]`.
        classes: `[N]` tensor (int32 class ids); any per-box values follow the
            boxes.
        seed: int `[2]` seed (stateless: the same seed, the same crop).

    Returns:
        `(image, boxes, classes)`: the crop, the kept boxes in its frame clipped
        to [0, 1], their classes. Uncropped, all three are returned unchanged.

    Example:

    >>> import tensorflow as tf
    >>> image = tf.zeros([60, 80, 3], tf.uint8)
    >>> image, boxes, classes = ssd_random_crop(
    ...     image, [[0.1, 0.1, 0.6, 0.5]], [3], seed=[0, 1])
    >>> boxes.shape[1], image.shape[2]
    (4, 3)
    """
    image = tf.convert_to_tensor(image)
    boxes = tf.reshape(tf.convert_to_tensor(boxes, tf.float32), [-1, 4])
    classes = tf.convert_to_tensor(classes)
    select_seed, skip_seed, crop_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    index = tf.random.stateless_uniform(
        [], select_seed, maxval=len(MIN_OBJECT_COVERED), dtype=tf.int32
    )
    # All seven operations differ only in this number: one graph serves them.
    min_object_covered = tf.gather(tf.constant(MIN_OBJECT_COVERED, tf.float32), index)
    crop = tf.random.stateless_uniform([], skip_seed) > RANDOM_COEF
    return tf.cond(
        crop,
        lambda: _strict_random_crop(image, boxes, classes, min_object_covered, crop_seed),
        lambda: (image, boxes, classes),
    )


def flip_boxes_left_right(boxes):
    """`[ymin, xmin, ymax, xmax]` -> `[ymin, 1 - xmax, ymax, 1 - xmin]`."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.convert_to_tensor(boxes, tf.float32), 4, axis=-1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def random_horizontal_flip(image, boxes, seed):
    """Flips the image and its normalised boxes left-right with probability 0.5.

    `seed`: int `[2]` (stateless). The TF OD API's `random_horizontal_flip`.

    Example:

    >>> import tensorflow as tf
    >>> image = tf.zeros([4, 6, 3])
    >>> image, boxes = random_horizontal_flip(image, [[0.0, 0.0, 0.5, 0.25]], [0, 0])
    >>> boxes.numpy().tolist() in ([[0.0, 0.0, 0.5, 0.25]], [[0.0, 0.75, 0.5, 1.0]])
    True
    """
    image = tf.convert_to_tensor(image)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    flip = tf.random.stateless_uniform([], seed) > 0.5
    return tf.cond(
        flip,
        lambda: (tf.reverse(image, axis=[1]), flip_boxes_left_right(boxes)),
        lambda: (image, boxes),
    )
