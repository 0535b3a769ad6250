"""`tf.data` detection pipelines of COCO from TensorFlow Datasets (`coco/2017`).

The SSD input of the TF Object Detection API: training drops crowd boxes, applies
`ssd_random_crop` and a horizontal flip, and resizes to `S x S`; evaluation only
resizes, and keeps what COCO evaluation needs (image ids, original sizes, crowd
flags). TensorFlow and TFDS are imported inside the function: importing this
module does not import them.
"""

from keras_dynconv.data._checks import check_positive_int
from keras_dynconv.data.box_formats import check_detection_arguments
from keras_dynconv.data.catalog import DatasetSpec
from keras_dynconv.data.tfds_pipeline import is_training_split
from keras_dynconv.data.tfds_pipeline import load_builder
from keras_dynconv.data.tfds_pipeline import resolve_split

# TFDS coco/2017's label names, in the order of its labels 0..79 (the annotation
# files' categories sorted by id).
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife",
    "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# The official `category_id` of each label above (1..90 with gaps), for results
# files evaluated against the official annotations.
COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)
NUM_CLASSES = len(COCO_CLASS_NAMES)
# The TF OD API's default `shuffle_buffer_size`: encoded COCO images are ~160 KB.
SHUFFLE_BUFFER = 2_048


def _spec(dataset_name):
    return DatasetSpec(dataset_name, NUM_CLASSES, train_split="train", eval_split="validation",
                       num_train=118_287, num_eval=5_000)


def coco_detection_dataset(
    split,
    *,
    image_size=300,
    batch_size=32,
    training=None,
    data_dir=None,
    download=False,
    bounding_box_format="xyxy",
    max_boxes=100,
    augment=True,
    shuffle_buffer=SHUFFLE_BUFFER,
    seed=None,
    max_examples=None,
    cache=False,
    drop_remainder=None,
    dataset_name="coco/2017",
):
    """A batched `tf.data.Dataset` of COCO `(images, targets)` for an SSD detector.

    Images are float32 `[B, S, S, 3]` RGB in [0, 255], resized without keeping the
    aspect ratio (bilinear). Targets are a dict:

    - `"boxes"`: float32 `[B, max_boxes, 4]` in `bounding_box_format` (absolute
      formats in pixels of the `S x S` image);
    - `"classes"`: int32 `[B, max_boxes]`, TFDS labels 0..79 (`COCO_CLASS_NAMES`),
      -1 in the padding rows (whose boxes are zeros).

    Evaluation batches add `"image_id"` (int64 `[B]`), `"image_shape"` (int32
    `[B, 2]`, the original height and width, to rescale boxes for COCO
    evaluation) and `"is_crowd"` (bool `[B, max_boxes]`, False in the padding).
    Images with more than `max_boxes` objects keep the first `max_boxes`.

    Training drops crowd boxes and, with `augment`, applies the TF Object
    Detection API's `ssd_random_crop` and a random horizontal flip
    (`keras_dynconv.data.box_augment`); it drops boxes left without area. The
    pipeline does not repeat: `model.fit` runs the epochs.

    Args:
        split: `"train"`, `"eval"` (TFDS `validation`) or any TFDS split string
            (`"validation[:500]"`, ...).
        image_size: side `S` of the square images (300 for SSD300).
        batch_size: examples per batch.
        training: shuffle, drop crowd boxes and augment; default: whether `split`
            is TFDS `train` (or a slice of it).
        data_dir: TFDS data directory (default: TFDS's, `~/tensorflow_datasets`).
        download: prepare the dataset (download about 25 GB) if it is not in
            `data_dir`. With `False` (default) a missing dataset raises
            `FileNotFoundError` at once, without network access.
        bounding_box_format: one of `BOUNDING_BOX_FORMATS` (the names of
            `keras.utils.bounding_boxes`).
        max_boxes: rows of the padded targets (COCO has up to 93 objects in an
            image; crowd boxes included).
        augment: the SSD crop and flip when training.
        shuffle_buffer: encoded examples in the shuffle buffer (training).
        seed: makes file order, shuffling and augmentation reproducible;
            `None`: a new order each run.
        max_examples: read only the first `max_examples` examples of the split
            (the same subset every epoch).
        cache: cache the encoded examples after the first epoch: `True` in
            memory, or a file path prefix.
        drop_remainder: drop the last partial batch (static batch dimension);
            default: `training`.
        dataset_name: the TFDS builder (`"coco/2014"`, `"coco/2017:1.1.0"`, ...).

    Returns:
        A prefetched `tf.data.Dataset` of `(images, targets)` batches.

    Raises:
        FileNotFoundError: the dataset is not prepared in `data_dir` and
            `download=False`.
        ValueError: an invalid argument.

    Example:

    ```python
    from keras_dynconv import data

    train = data.coco_detection_dataset("train", batch_size=32, data_dir="/data/tfds")
    val = data.coco_detection_dataset("eval", batch_size=32, data_dir="/data/tfds")
    images, targets = next(iter(val))
    # images [32, 300, 300, 3]; targets["boxes"] [32, 100, 4] xyxy pixels;
    # targets["image_id"], targets["image_shape"], targets["is_crowd"].
    names = [data.COCO_CLASS_NAMES[c] for c in targets["classes"][0] if c >= 0]
    ```
    """
    if not isinstance(split, str):
        raise ValueError(
            "Invalid value for argument `split`. Expected 'train', 'eval' or a TFDS "
            f"split string. Received split={split!r}"
        )
    if not isinstance(dataset_name, str) or not dataset_name.startswith("coco/"):
        raise ValueError(
            "Invalid value for argument `dataset_name`. Expected a TFDS COCO detection "
            f"builder such as 'coco/2017'. Received dataset_name={dataset_name!r}"
        )
    check_detection_arguments(image_size=image_size, batch_size=batch_size,
                              bounding_box_format=bounding_box_format, max_boxes=max_boxes)
    check_positive_int("shuffle_buffer", shuffle_buffer)
    check_positive_int("max_examples", max_examples, allow_none=True)
    spec = _spec(dataset_name)
    tfds_split = resolve_split(spec, split)
    if training is None:
        training = is_training_split(spec, tfds_split)
    if drop_remainder is None:
        drop_remainder = bool(training)

    builder = load_builder(
        dataset_name, spec, data_dir=data_dir, download=download,
        pipeline="coco_detection_dataset",
    )
    return _build_pipeline(
        builder, tfds_split, image_size=image_size, batch_size=batch_size,
        training=bool(training), augment=bool(augment),
        bounding_box_format=bounding_box_format, max_boxes=max_boxes,
        drop_remainder=drop_remainder, shuffle_buffer=shuffle_buffer, seed=seed,
        max_examples=max_examples, cache=cache,
    )


def _build_pipeline(builder, tfds_split, *, image_size, batch_size, training, augment,
                    bounding_box_format, max_boxes, drop_remainder, shuffle_buffer, seed,
                    max_examples, cache):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from keras_dynconv.data import batching
    from keras_dynconv.data import box_augment
    from keras_dynconv.data import detection_batching

    decoders = tfds.decode.PartialDecoding(
        {"image": True, "image/id": True,
         "objects": {"bbox": True, "label": True, "is_crowd": True}},
        # Images are decoded after the shuffle: the buffer holds encoded bytes.
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    # A fixed subset needs a fixed file order (see image_classification_dataset).
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, try_autocache=False, enable_ordering_guard=False
    )
    dataset = builder.as_dataset(
        split=tfds_split, shuffle_files=training and max_examples is None,
        read_config=read_config, decoders=decoders,
    )
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    dataset = dataset.map(lambda example: (
        example["image"], example["image/id"], example["objects"]["bbox"],
        tf.cast(example["objects"]["label"], tf.int32), example["objects"]["is_crowd"],
    ))
    if cache:
        dataset = dataset.cache() if cache is True else dataset.cache(str(cache))
    finish = dict(image_size=image_size, bounding_box_format=bounding_box_format,
                  max_boxes=max_boxes)

    def decode(image_bytes):
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    def train_example(example, example_seed=None):
        image_bytes, _, boxes, classes, is_crowd = example
        image = decode(image_bytes)
        boxes = tf.clip_by_value(tf.boolean_mask(boxes, ~is_crowd), 0.0, 1.0)
        classes = tf.boolean_mask(classes, ~is_crowd)
        if example_seed is not None:
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(example_seed, 2)
            )
            image, boxes, classes = box_augment.ssd_random_crop(image, boxes, classes, crop_seed)
            image, boxes = box_augment.random_horizontal_flip(image, boxes, flip_seed)
        boxes, classes = detection_batching.keep_boxes_with_area(boxes, classes)
        return detection_batching.finish_example(image, boxes, classes, **finish)

    def eval_example(image_bytes, image_id, boxes, classes, is_crowd):
        image = decode(image_bytes)
        image_shape = tf.shape(image)[:2]
        image, targets = detection_batching.finish_example(image, boxes, classes, **finish)
        targets["image_id"] = image_id
        targets["image_shape"] = image_shape
        targets["is_crowd"] = detection_batching.pad_objects(is_crowd, max_boxes, False)
        return image, targets

    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if augment:
            dataset = batching.with_seeds(dataset, seed).map(
                train_example, num_parallel_calls=tf.data.AUTOTUNE
            )
        else:
            dataset = dataset.map(
                lambda *example: train_example(example), num_parallel_calls=tf.data.AUTOTUNE
            )
    else:
        dataset = dataset.map(eval_example, num_parallel_calls=tf.data.AUTOTUNE)
    return batching.batch_and_finish(
        dataset, batch_size=batch_size, drop_remainder=drop_remainder, mixup_alpha=0.0,
        seed=seed, deterministic=seed is not None or not training,
    )
