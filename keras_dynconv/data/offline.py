"""`tf.data` pipelines of the offline grayscale datasets (digits, Fashion-MNIST).

`keras_dynconv.offline_data` finds the arrays (no download); this turns them into
the same `(images, labels)` batches as the TFDS pipelines: RGB float32 in [0, 255]
at any size. TensorFlow is imported inside the function.
"""

from keras_dynconv.data._checks import check_positive_int
from keras_dynconv.data.catalog import OFFLINE_DATASETS
from keras_dynconv.data.catalog import DatasetInfo


def offline_dataset(
    name="auto",
    *,
    image_size=32,
    batch_size=64,
    augment=True,
    max_train=None,
    one_hot=True,
    drop_remainder=None,
    seed=0,
):
    """Train and test pipelines of a real dataset that needs no download.

    Images are resized bilinearly to `image_size` and the grey channel repeated to
    RGB: float32 `[B, S, S, 3]` in [0, 255]. The training set is shuffled each
    epoch. Its augmentation (`augment=True`) is a random translation of up to 1/8
    of the side, filled with the black background; no flips, which would turn
    digits into other or no digits (2 and 5, 6 and 9). The test set is never
    augmented nor shuffled.

    Args:
        name: `"digits"` (scikit-learn's 1,797 8x8 digits, 80/20 split),
            `"fashion_mnist"` (its local files) or `"auto"` (Fashion-MNIST if
            present, else digits); see `keras_dynconv.offline_data`.
        image_size: side `S` of the output images.
        batch_size: examples per batch.
        augment: random translations of the training images.
        max_train: keep only the first `max_train` training examples.
        one_hot: one-hot float32 labels `[B, 10]`, else int32 `[B]`.
        drop_remainder: drop the last partial training batch; default `True`
            (the test set keeps all its examples).
        seed: shuffling and augmentation seed (`None`: a new order each run).

    Returns:
        `(train_dataset, test_dataset, info)` with `info` a `DatasetInfo`
        (name, num_classes, num_train, num_eval / num_test).

    Example:

    >>> from keras_dynconv.data import offline_dataset
    >>> train, test, info = offline_dataset("digits", image_size=32, batch_size=64)
    >>> info.name, info.num_classes, info.num_train, info.num_test
    ('digits', 10, 1437, 360)
    >>> images, labels = next(iter(train))
    >>> images.shape, labels.shape
    (TensorShape([64, 32, 32, 3]), TensorShape([64, 10]))
    """
    from keras_dynconv.offline_data import load_offline_dataset

    check_positive_int("image_size", image_size)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_train", max_train, allow_none=True)
    name, (x_train, y_train), (x_test, y_test) = load_offline_dataset(name)
    if max_train is not None:
        x_train, y_train = x_train[:max_train], y_train[:max_train]
    num_classes = OFFLINE_DATASETS[name].num_classes
    info = DatasetInfo(name, num_classes, len(x_train), len(x_test))
    common = dict(image_size=image_size, batch_size=batch_size, one_hot=one_hot,
                  num_classes=num_classes, seed=seed)
    train = _pipeline(x_train, y_train, training=True, augment=augment,
                      drop_remainder=True if drop_remainder is None else drop_remainder,
                      **common)
    test = _pipeline(x_test, y_test, training=False, augment=False, drop_remainder=False,
                     **common)
    return train, test, info


def _pipeline(images, labels, *, training, augment, image_size, batch_size, one_hot,
              num_classes, drop_remainder, seed):
    import tensorflow as tf

    from keras_dynconv.data import batching

    dataset = tf.data.Dataset.from_tensor_slices((images[..., None], labels.astype("int32")))
    if training:
        # uint8 arrays are small: the buffer holds the whole set, a full shuffle.
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    max_shift = max(1, image_size // 8)

    def to_rgb(batch_images, batch_labels, batch_seed=None):
        batch_images = tf.image.resize(
            tf.cast(batch_images, tf.float32), [image_size, image_size], method="bilinear"
        )
        if batch_seed is not None:
            batch_images = _random_translate(batch_images, max_shift, batch_seed)
        batch_images = tf.image.grayscale_to_rgb(tf.clip_by_value(batch_images, 0.0, 255.0))
        if one_hot:
            batch_labels = tf.one_hot(batch_labels, num_classes, dtype=tf.float32)
        return batch_images, batch_labels

    # Resizing whole batches is much cheaper than image by image.
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if training and augment:
        dataset = batching.with_seeds(dataset, seed).map(
            lambda batch, batch_seed: to_rgb(batch[0], batch[1], batch_seed),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(to_rgb, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = seed is not None or not training
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _random_translate(images, max_shift, seed):
    """Shifts each image by its own whole-pixel offset in [-max_shift, max_shift]."""
    import tensorflow as tf

    count = tf.shape(images)[0]
    shifts = tf.random.stateless_uniform(
        [count, 2], seed, minval=-max_shift, maxval=max_shift + 1, dtype=tf.int32
    )
    shifts = tf.cast(shifts, tf.float32)
    ones, zeros = tf.ones([count]), tf.zeros([count])
    transforms = tf.stack(
        [ones, zeros, shifts[:, 0], zeros, ones, shifts[:, 1], zeros, zeros], axis=1
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT",
    )
