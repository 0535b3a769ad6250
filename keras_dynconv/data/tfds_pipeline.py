"""`tf.data` input pipelines for `model.fit` from TensorFlow Datasets.

TensorFlow and TFDS are imported inside the functions: importing this module does
not import them (under the torch backend an early TensorFlow import can crash).
"""

from keras_dynconv.data._checks import check_choice
from keras_dynconv.data._checks import check_mixup
from keras_dynconv.data._checks import check_positive_int
from keras_dynconv.data.catalog import resolve_spec

AUGMENTATIONS = ("standard", "randaugment", "autoaugment", None)
SHUFFLE_BUFFER = 10_000


def resolve_split(spec, split):
    """`"train"` / `"eval"` -> the spec's splits; any other TFDS split string as is."""
    if split == "train":
        return spec.train_split
    if split == "eval":
        return spec.eval_split
    return split


def is_training_split(spec, tfds_split):
    """Whether `tfds_split` is the spec's training split or a part of TFDS `train`."""
    if tfds_split == spec.train_split:
        return True
    parts = [part.split("[")[0].strip() for part in tfds_split.split("+")]
    return all(part == "train" for part in parts)


def _not_prepared_message(name, spec, data_dir, searched, pipeline):
    where = f"data_dir={data_dir!r}" if data_dir else "the default TFDS data_dir"
    message = (
        f"Dataset {name!r} (TFDS {spec.tfds_name!r}) is not prepared in {where} "
        f"(looked in {searched}). This function does not download unless asked: "
    )
    if spec.tfds_name.split("/")[0] == "imagenet2012":
        return message + (
            "ImageNet must be downloaded by hand from https://image-net.org. Put "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a directory DIR "
            "and prepare once with `image_classification_dataset('imagenet2012', "
            "data_dir=..., download=True, manual_dir=DIR)` or `tfds build "
            "imagenet2012 --manual_dir=DIR --data_dir=...`."
        )
    return message + (
        f"prepare it once with `{pipeline}({name!r}, data_dir=..., "
        f"download=True)` or `tfds build {spec.tfds_name} --data_dir=...` (needs "
        "internet), or copy a prepared TFDS directory there."
    )


def load_builder(
    name, spec, *, data_dir=None, download=False, manual_dir=None,
    pipeline="image_classification_dataset",
):
    """The prepared `tfds.core.DatasetBuilder` of `spec`.

    Raises `FileNotFoundError` if it is not prepared and `download=False`; never
    touches the network then. Its message tells how to prepare the dataset with
    the function `pipeline`.
    """
    import tensorflow_datasets as tfds

    if manual_dir is not None and not download:
        raise ValueError(
            "Argument `manual_dir` is only used to prepare a dataset: pass it with "
            f"`download=True`. Received manual_dir={manual_dir!r}, download={download!r}"
        )
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise FileNotFoundError(
            f"TFDS knows no dataset {spec.tfds_name!r} (for name={name!r}) and none "
            f"is prepared in data_dir={data_dir!r}."
        ) from error
    if builder.is_prepared():
        return builder
    if not download:
        raise FileNotFoundError(
            _not_prepared_message(name, spec, data_dir, builder.data_dir, pipeline)
        )
    download_config = None
    if manual_dir is not None:
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
    return builder


def image_classification_dataset(
    name,
    split="train",
    *,
    image_size=224,
    batch_size=128,
    training=None,
    data_dir=None,
    download=False,
    manual_dir=None,
    augment="standard",
    mixup_alpha=0.0,
    one_hot=True,
    drop_remainder=None,
    shuffle_buffer=SHUFFLE_BUFFER,
    seed=None,
    max_examples=None,
    cache=False,
    crop_padding=32,
):
    """A batched `tf.data.Dataset` of `(images, labels)` for `model.fit` / `evaluate`.

    Images are float32 `[B, S, S, 3]` RGB in [0, 255] (the zoo's models normalise
    inside); labels are one-hot float32 `[B, num_classes]` (for label smoothing and
    mixup) or int32 `[B]` with `one_hot=False`. Works with `model.fit` on every
    Keras backend.

    Training examples are shuffled, then decoded with an Inception-style random
    resized crop (8%-100% of the area, aspect ratio 3/4-4/3) and a horizontal flip,
    optionally followed by RandAugment or AutoAugment, and batches optionally mixed
    up. Evaluation takes a central crop of `S / (S + crop_padding)` of the shorter
    side. All resizes are bicubic (the EfficientNet / CondConv TPU pipeline).

    Args:
        name: a key of `DATASETS` (`"imagenet2012"`, `"cifar10"`, `"cifar100"`,
            `"oxford_iiit_pet"`, `"oxford_flowers102"`, `"cars196"`, `"food101"`,
            `"dtd"`, `"caltech101"`) or a `DatasetSpec` for another TFDS dataset.
        split: `"train"` (the spec's `train_split`, e.g. train+validation for
            Flowers-102), `"eval"` (its `eval_split`) or any TFDS split string
            (`"validation"`, `"train[:90%]"`, ...).
        image_size: side `S` of the square output images.
        batch_size: examples per batch.
        training: whether to shuffle and augment; default: whether `split` is the
            training split (or a slice of TFDS `train`).
        data_dir: TFDS data directory (default: TFDS's, `~/tensorflow_datasets`).
        download: prepare the dataset (download it) if it is not in `data_dir`.
            With `False` (default) a missing dataset raises `FileNotFoundError`
            at once, without network access.
        manual_dir: with `download=True`, the directory of manually downloaded
            archives (ImageNet's `ILSVRC2012_img_{train,val}.tar`).
        augment: training augmentation: `"standard"` (random resized crop and
            flip), `"randaugment"` (standard, then RandAugment N=2, M=10),
            `"autoaugment"` (standard, then AutoAugment policy v0) or `None`
            (the evaluation crop: no augmentation). Ignored when not training.
        mixup_alpha: Beta(alpha, alpha) mixup of each training batch (0.2 in the
            CondConv paper); 0 disables. Needs `one_hot=True` and training.
        one_hot: one-hot float32 labels, else int32 class indices.
        drop_remainder: drop the last partial batch (static batch dimension, as
            TPUs need); default: `training`.
        shuffle_buffer: examples in the shuffle buffer (training).
        seed: makes file order, shuffling and augmentation reproducible (together
            with TensorFlow's global seed); `None`: a new order each run.
        max_examples: read only the first `max_examples` examples of the split
            (files in order: the same subset every epoch).
        cache: cache the encoded examples after the first epoch: `True` in
            memory, or a file path prefix.
        crop_padding: the evaluation crop is `S / (S + crop_padding)` of the
            shorter side (224 of 256 at S=224); 0 keeps the whole shorter side.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches, prefetched.

    Raises:
        FileNotFoundError: the dataset is not prepared in `data_dir` and
            `download=False`.
        ValueError: an invalid argument.

    Example:

    ```python
    import keras
    from keras_dynconv import data, zoo

    train = data.image_classification_dataset(
        "oxford_flowers102", "train", image_size=224, batch_size=64,
        augment="autoaugment", mixup_alpha=0.2, data_dir="/data/tfds")
    test = data.image_classification_dataset(
        "oxford_flowers102", "eval", image_size=224, batch_size=64,
        data_dir="/data/tfds")
    model = zoo.efficientnet_lite0(
        classes=data.dataset_info("oxford_flowers102").num_classes)
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True,
                  label_smoothing=0.1), metrics=["accuracy"])
    model.fit(train, validation_data=test, epochs=10)
    ```
    """
    name, spec = resolve_spec(name)
    if not isinstance(split, str):
        raise ValueError(
            "Invalid value for argument `split`. Expected 'train', 'eval' or a TFDS "
            f"split string. Received split={split!r}"
        )
    check_positive_int("image_size", image_size)
    check_positive_int("batch_size", batch_size)
    check_positive_int("shuffle_buffer", shuffle_buffer)
    check_positive_int("max_examples", max_examples, allow_none=True)
    check_choice("augment", augment, AUGMENTATIONS)
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(
            "Invalid value for argument `crop_padding`. Expected an integer >= 0. "
            f"Received crop_padding={crop_padding!r}"
        )
    tfds_split = resolve_split(spec, split)
    if training is None:
        training = is_training_split(spec, tfds_split)
    if drop_remainder is None:
        drop_remainder = bool(training)
    check_mixup(mixup_alpha, one_hot, training)

    builder = load_builder(
        name, spec, data_dir=data_dir, download=download, manual_dir=manual_dir
    )
    return _build_pipeline(
        builder, spec, tfds_split,
        image_size=image_size, batch_size=batch_size, training=bool(training),
        augment=augment, mixup_alpha=mixup_alpha, one_hot=one_hot,
        drop_remainder=drop_remainder, shuffle_buffer=shuffle_buffer, seed=seed,
        max_examples=max_examples, cache=cache, crop_padding=crop_padding,
    )


def _build_pipeline(builder, spec, tfds_split, *, image_size, batch_size, training, augment,
                    mixup_alpha, one_hot, drop_remainder, shuffle_buffer, seed,
                    max_examples, cache, crop_padding):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from keras_dynconv.data import batching
    from keras_dynconv.data import preprocessing

    decoders = tfds.decode.PartialDecoding(
        {spec.image_key: True, spec.label_key: True},
        # Decoding happens in the crop below: only the crop of a JPEG is decoded.
        decoders={spec.image_key: tfds.decode.SkipDecoding()},
    )
    # A fixed subset needs a fixed file order: `take` after file shuffling would
    # draw another subset each epoch.
    shuffle_files = training and max_examples is None
    # The ordering guard refuses to shuffle the files of datasets stored in order;
    # training wants them shuffled all the same.
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, try_autocache=False, enable_ordering_guard=False
    )
    dataset = builder.as_dataset(
        split=tfds_split, shuffle_files=shuffle_files, read_config=read_config,
        decoders=decoders,
    )
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    dataset = dataset.map(lambda example: (example[spec.image_key], example[spec.label_key]))
    if cache:
        dataset = dataset.cache() if cache is True else dataset.cache(str(cache))

    def labels_of(label):
        if one_hot:
            return tf.one_hot(label, spec.num_classes, dtype=tf.float32)
        return tf.cast(label, tf.int32)

    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if training and augment is not None:
        augment_image = _augmenter(augment)

        def preprocess(example, example_seed):
            image_bytes, label = example
            crop_seed, augment_seed = tf.unstack(
                tf.random.experimental.stateless_split(example_seed, 2)
            )
            image = preprocessing.preprocess_for_train(
                image_bytes, image_size, crop_seed, crop_padding
            )
            return augment_image(image, augment_seed), labels_of(label)

        dataset = batching.with_seeds(dataset, seed)
    else:

        def preprocess(image_bytes, label):
            image = preprocessing.preprocess_for_eval(image_bytes, image_size, crop_padding)
            return image, labels_of(label)

    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return batching.batch_and_finish(
        dataset, batch_size=batch_size, drop_remainder=drop_remainder,
        mixup_alpha=mixup_alpha if training else 0.0, seed=seed,
        deterministic=seed is not None or not training,
    )


def _augmenter(augment):
    """`fn(image, seed)` applied after the random crop and flip (float [0, 255])."""
    import tensorflow as tf

    if augment == "standard":
        return lambda image, seed: image
    if augment == "autoaugment":
        from keras_dynconv.data.autoaugment import distort_image_with_autoaugment as distort
    else:
        from keras_dynconv.data.randaugment import distort_image_with_randaugment as distort

    def apply(image, seed):
        # The policies are defined on uint8 images, as in the reference.
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
        return tf.cast(distort(image, seed), tf.float32)

    return apply
