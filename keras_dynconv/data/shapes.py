"""A generated detection dataset with exact boxes: coloured shapes on a textured ground.

For training a detector end to end on a CPU in minutes, with no download. Each
image holds 1 to `max_objects` filled rectangles, ellipses and triangles (four
orientations) in saturated colours, on a gradient between two greyish colours
with mild noise. Shapes never share a pixel and their boxes overlap by IoU 0.2
at most, so every shape is fully visible; its box is the tight bounding box of
its pixels. Pure NumPy, deterministic from the seed; the `tf.data` pipeline
imports TensorFlow when called.
"""

import math
import numbers

import numpy as np

from keras_dynconv.data._checks import check_positive_int
from keras_dynconv.data.box_formats import check_detection_arguments

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")
# Boxes of one image overlap by at most this IoU.
MAX_IOU = 0.2
# Placements tried per shape before the image keeps fewer shapes.
MAX_TRIES = 50
# The smallest shape side, in pixels: enough for a triangle to have pixels.
MIN_SIDE_PIXELS = 3


def generate_shapes(num_images, *, image_size=300, max_objects=4, min_size=0.1, max_size=0.5,
                    seed=0):
    """Images of coloured shapes and their boxes.

    Args:
        num_images: number of images `N`.
        image_size: side `S` of the square images.
        max_objects: each image has between 1 and `max_objects` shapes (fewer
            when no free place is found).
        min_size, max_size: range of a shape's height and width (drawn
            independently), as fractions of `S`.
        seed: NumPy seed: the same seed, the same images (`None`: new ones).

    Returns:
        `(images, boxes, classes)`: uint8 `[N, S, S, 3]` RGB; a list of `N`
        float32 `[n_i, 4]` normalised `[ymin, xmin, ymax, xmax]` (edges of the
        shape's first and past-the-last pixel rows and columns, divided by `S`);
        a list of `N` int32 `[n_i]` indices into `SHAPE_CLASSES`.

    Example:

    >>> from keras_dynconv.data import generate_shapes
    >>> images, boxes, classes = generate_shapes(2, image_size=64, seed=0)
    >>> images.shape, images.dtype
    ((2, 64, 64, 3), dtype('uint8'))
    >>> boxes[0].shape[1], classes[0].dtype
    (4, dtype('int32'))
    """
    check_positive_int("num_images", num_images)
    check_positive_int("image_size", image_size)
    check_positive_int("max_objects", max_objects)
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not 0 < value <= 1):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a fraction of the image "
                f"side in (0, 1]. Received {name}={value!r}"
            )
    if min_size > max_size:
        raise ValueError(
            "Expected `min_size <= max_size`. Received "
            f"min_size={min_size!r}, max_size={max_size!r}"
        )
    if min_size * image_size < MIN_SIDE_PIXELS:
        raise ValueError(
            f"Shapes need at least {MIN_SIDE_PIXELS} pixels a side: `min_size * "
            f"image_size` must be >= {MIN_SIDE_PIXELS}. Received min_size={min_size!r}, "
            f"image_size={image_size!r}"
        )
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, image_size, image_size, 3), np.uint8)
    boxes, classes = [], []
    for index in range(num_images):
        _background(rng, images[index])
        occupied = np.zeros((image_size, image_size), bool)
        image_boxes, image_classes = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            placed = _place_shape(rng, image_size, min_size, max_size, occupied, image_boxes)
            if placed is None:
                continue
            label, mask, (top, left), box = placed
            window = (slice(top, top + mask.shape[0]), slice(left, left + mask.shape[1]))
            images[index][window][mask] = _saturated_colour(rng)
            occupied[window] |= mask
            image_boxes.append(box)
            image_classes.append(label)
        boxes.append(np.asarray(image_boxes, np.float32).reshape(-1, 4) / image_size)
        classes.append(np.asarray(image_classes, np.int32))
    return images, boxes, classes


def _background(rng, out):
    """Fills uint8 `out` `[S, S, 3]` with a linear gradient between two greyish
    colours at a random angle, plus noise.

    Greyish (channels within 25 of a grey in [60, 190]) and noise of at most 6
    keep every background channel within [29, 221]; each shape colour has a 0:
    no background pixel has a shape's colour.
    """
    size = out.shape[0]
    greys = rng.uniform(60.0, 190.0, size=(2, 1))
    colours = greys + rng.uniform(-25.0, 25.0, size=(2, 3))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    steps = np.linspace(0.0, 1.0, size, dtype=np.float32)
    ramp = math.cos(angle) * steps[None, :] + math.sin(angle) * steps[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    for channel in range(3):  # whole planes: ~5x faster than broadcasting over RGB
        start, end = colours[0, channel], colours[1, channel]
        out[:, :, channel] = start + 0.5 + ramp * np.float32(end - start)  # rounds
    # uint8 arithmetic wraps modulo 256, and the values stay within [29, 221]:
    # adding the noise's two's complement adds the noise.
    out += rng.integers(-6, 7, size=out.shape, dtype=np.int8).view(np.uint8)


def _saturated_colour(rng):
    """Full saturation, random hue, value in [0.75, 1]: one channel is always 0."""
    hue, value = rng.uniform(0.0, 1.0), rng.uniform(0.75, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * hue) % 6.0
    rgb = value * (1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.rint(255.0 * rgb).astype(np.uint8)


def _shape_mask(label, top, left, height, width, orientation, size):
    """Pixels of a shape in its box `top, left, height, width` (float pixels).

    Returns `(mask, (row0, col0))`: a bool mask over the pixels the box touches,
    and the image position of its first pixel. A pixel belongs to the shape when
    its centre does.
    """
    row0, col0 = max(int(math.floor(top)), 0), max(int(math.floor(left)), 0)
    row1 = min(int(math.ceil(top + height)), size)
    col1 = min(int(math.ceil(left + width)), size)
    u = ((np.arange(row0, row1) + 0.5 - top) / height)[:, None]
    v = ((np.arange(col0, col1) + 0.5 - left) / width)[None, :]
    inside = (u >= 0.0) & (u <= 1.0) & (v >= 0.0) & (v <= 1.0)
    if SHAPE_CLASSES[label] == "rectangle":
        mask = inside
    elif SHAPE_CLASSES[label] == "ellipse":
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    else:  # a triangle pointing up, down, left or right
        across, along = (v, u) if orientation < 2 else (u, v)
        along = along if orientation % 2 == 0 else 1.0 - along
        mask = inside & (np.abs(across - 0.5) <= along / 2.0)
    return mask, (row0, col0)


def _place_shape(rng, size, min_size, max_size, occupied, placed_boxes):
    """`(label, mask, (row0, col0), box_pixels)` of a shape that fits, else None."""
    for _ in range(MAX_TRIES):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        height, width = rng.uniform(min_size, max_size, size=2) * size
        top, left = rng.uniform(0.0, size - height), rng.uniform(0.0, size - width)
        orientation = int(rng.integers(4))
        mask, (row0, col0) = _shape_mask(label, top, left, height, width, orientation, size)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        box = (row0 + rows[0], col0 + cols[0], row0 + rows[-1] + 1, col0 + cols[-1] + 1)
        if any(_iou(box, other) > MAX_IOU for other in placed_boxes):
            continue
        window = occupied[row0:row0 + mask.shape[0], col0:col0 + mask.shape[1]]
        if np.any(window & mask):
            continue
        return label, mask, (row0, col0), box
    return None


def _iou(a, b):
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[3], b[3]) - max(a[1], b[1])
    if height <= 0 or width <= 0:
        return 0.0
    intersection = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union


def shapes_detection_dataset(
    num_images,
    *,
    image_size=300,
    batch_size=16,
    training=False,
    bounding_box_format="xyxy",
    max_objects=4,
    max_boxes=None,
    seed=0,
    augment=True,
    drop_remainder=None,
):
    """A `tf.data.Dataset` of generated shapes with the element structure of
    `coco_detection_dataset`'s training batches.

    Elements are `(images float32 [B, S, S, 3] in [0, 255], {"boxes": float32
    [B, max_boxes, 4] in bounding_box_format, "classes": int32 [B, max_boxes]})`,
    class ids indexing `SHAPE_CLASSES` and -1 in the padding rows. Training
    shuffles every epoch and, with `augment`, flips images and boxes at random;
    evaluation keeps the generated order, unaugmented.

    Args:
        num_images: number of generated images.
        image_size: side `S` of the images.
        batch_size: examples per batch.
        training: shuffle and augment.
        bounding_box_format: one of `BOUNDING_BOX_FORMATS`.
        max_objects: at most this many shapes per image (see `generate_shapes`).
        max_boxes: rows of the padded targets; default `max_objects`.
        seed: generation, shuffling and flips: give the training and the
            evaluation set different seeds, or they hold the same images.
        augment: random horizontal flips when training.
        drop_remainder: drop the last partial batch; default: `training`.

    Returns:
        A prefetched `tf.data.Dataset` of `(images, targets)` batches.

    Example:

    ```python
    from keras_dynconv import data

    train = data.shapes_detection_dataset(2000, image_size=160, training=True, seed=0)
    val = data.shapes_detection_dataset(200, image_size=160, seed=1)
    num_classes = len(data.SHAPE_CLASSES)
    ```
    """
    if max_boxes is None:
        max_boxes = max_objects
    check_detection_arguments(image_size=image_size, batch_size=batch_size,
                              bounding_box_format=bounding_box_format, max_boxes=max_boxes)
    images, boxes, classes = generate_shapes(
        num_images, image_size=image_size, max_objects=max_objects, seed=seed
    )
    if drop_remainder is None:
        drop_remainder = bool(training)
    return _pipeline(images, boxes, classes, image_size=image_size, batch_size=batch_size,
                     training=bool(training), augment=bool(augment),
                     bounding_box_format=bounding_box_format, max_boxes=max_boxes,
                     max_objects=max_objects, seed=seed, drop_remainder=drop_remainder)


def _pipeline(images, boxes, classes, *, image_size, batch_size, training, augment,
              bounding_box_format, max_boxes, max_objects, seed, drop_remainder):
    import tensorflow as tf

    from keras_dynconv.data import batching
    from keras_dynconv.data import box_augment
    from keras_dynconv.data import detection_batching

    counts = np.array([len(c) for c in classes], np.int32)
    padded_boxes = np.zeros((len(images), max_objects, 4), np.float32)
    padded_classes = np.full((len(images), max_objects), -1, np.int32)
    for index, count in enumerate(counts):
        padded_boxes[index, :count] = boxes[index]
        padded_classes[index, :count] = classes[index]
    dataset = tf.data.Dataset.from_tensor_slices((images, padded_boxes, padded_classes, counts))
    if training:
        # Generated sets are small: the buffer holds all of it, a full shuffle.
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def example(image, image_boxes, image_classes, count, flip_seed=None):
        image_boxes, image_classes = image_boxes[:count], image_classes[:count]
        if flip_seed is not None:
            image, image_boxes = box_augment.random_horizontal_flip(image, image_boxes, flip_seed)
        return detection_batching.finish_example(
            image, image_boxes, image_classes, image_size=image_size,
            bounding_box_format=bounding_box_format, max_boxes=max_boxes,
        )

    if training and augment:
        dataset = batching.with_seeds(dataset, seed).map(
            lambda values, flip_seed: example(*values, flip_seed),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return batching.batch_and_finish(
        dataset, batch_size=batch_size, drop_remainder=drop_remainder, mixup_alpha=0.0,
        seed=seed, deterministic=seed is not None or not training,
    )
