"""Decode-and-crop of encoded images, as the EfficientNet / CondConv TPU input pipeline.

Training: Inception-style random resized crop (area 8%-100%, aspect ratio 3/4-4/3)
then horizontal flip; evaluation: a central square crop of `S / (S + crop_padding)`
of the shorter side. Both resize bicubically to `S x S` and return float32 RGB in
[0, 255]. Follows tensorflow/tpu `models/official/efficientnet/preprocessing.py`,
with stateless random ops so that a seed reproduces the crops.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf

CROP_PADDING = 32


def _crop_and_resize(image_bytes, window_fn, image_size):
    """Decodes only the window `window_fn(shape)` of a JPEG; other formats in full."""

    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(image_bytes))
        # Decoding just the crop is what makes ImageNet's large JPEGs affordable.
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        window = window_fn(tf.shape(image))
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image = tf.image.resize(image, [image_size, image_size], method="bicubic")
    # Bicubic overshoots at edges; the models expect [0, 255].
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def center_crop_window(shape, image_size, crop_padding=CROP_PADDING):
    """`[y, x, h, w]` of the central square of `image_size / (image_size + crop_padding)`
    of the shorter side (224 of 256 for `image_size=224`)."""
    height, width = shape[0], shape[1]
    fraction = image_size / (image_size + crop_padding)
    size = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    size = tf.maximum(size, 1)
    return tf.stack([(height - size + 1) // 2, (width - size + 1) // 2, size, size])


def random_crop_window(shape, seed, image_size, crop_padding=CROP_PADDING):
    """`[y, x, h, w]` of an Inception-style random crop of an image of `shape`."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([shape[0], shape[1], 3]),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    # After max_attempts failures the sampler returns the whole image; the reference
    # then takes the evaluation crop instead.
    failed = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
    return tf.where(failed, center_crop_window(shape, image_size, crop_padding), window)


def preprocess_for_eval(image_bytes, image_size, crop_padding=CROP_PADDING):
    """Encoded image -> float32 `[S, S, 3]` in [0, 255]: central crop, bicubic resize.

    Example:

    >>> import tensorflow as tf
    >>> png = tf.io.encode_png(tf.zeros([48, 64, 3], tf.uint8))
    >>> preprocess_for_eval(png, image_size=32).shape
    TensorShape([32, 32, 3])
    """
    return _crop_and_resize(
        image_bytes, lambda shape: center_crop_window(shape, image_size, crop_padding), image_size
    )


def preprocess_for_train(image_bytes, image_size, seed, crop_padding=CROP_PADDING):
    """Encoded image -> float32 `[S, S, 3]` in [0, 255]: random resized crop and flip.

    `seed`: int tensor of shape `[2]` (stateless ops: the same seed, the same crop).

    Example:

    >>> import tensorflow as tf
    >>> png = tf.io.encode_png(tf.zeros([48, 64, 3], tf.uint8))
    >>> preprocess_for_train(png, image_size=32, seed=[1, 2]).shape
    TensorShape([32, 32, 3])
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _crop_and_resize(
        image_bytes,
        lambda shape: random_crop_window(shape, crop_seed, image_size, crop_padding),
        image_size,
    )
    return tf.image.stateless_random_flip_left_right(image, flip_seed)
