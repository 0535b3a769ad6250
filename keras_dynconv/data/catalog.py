"""The datasets the input pipelines know: where TFDS keeps them and how to read them.

Pure Python (no TensorFlow): models can be built from `dataset_info(name)` before
any data is read.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to read one image classification dataset from TensorFlow Datasets.

    Attributes:
        tfds_name: the TFDS builder name (optionally `"name/config:version"`).
        num_classes: width of the one-hot labels.
        train_split: the TFDS split `split="train"` stands for.
        eval_split: the TFDS split `split="eval"` stands for.
        image_key, label_key: the features holding the encoded image and the
            integer label.
        num_train, num_eval: examples in `train_split` and `eval_split` (for
            steps per epoch and learning-rate schedules), `None` if unknown.

    Example:

    >>> spec = DatasetSpec("my_dataset", num_classes=5, train_split="train",
    ...                    eval_split="test")
    >>> spec.label_key
    'label'
    """

    tfds_name: str
    num_classes: int
    train_split: str = "train"
    eval_split: str = "test"
    image_key: str = "image"
    label_key: str = "label"
    num_train: int | None = None
    num_eval: int | None = None


# Fine-grained transfer sets train on train+validation where TFDS splits them, as
# Kornblith et al. 2019 ("Do Better ImageNet Models Transfer Better?") and the
# CondConv / EfficientNet transfer results do.
DATASETS = {
    "imagenet2012": DatasetSpec("imagenet2012", 1000, "train", "validation",
                                num_train=1_281_167, num_eval=50_000),
    "cifar10": DatasetSpec("cifar10", 10, "train", "test", num_train=50_000, num_eval=10_000),
    "cifar100": DatasetSpec("cifar100", 100, "train", "test", num_train=50_000, num_eval=10_000),
    "oxford_iiit_pet": DatasetSpec("oxford_iiit_pet", 37, "train", "test",
                                   num_train=3_680, num_eval=3_669),
    "oxford_flowers102": DatasetSpec("oxford_flowers102", 102, "train+validation", "test",
                                     num_train=2_040, num_eval=6_149),
    "cars196": DatasetSpec("cars196", 196, "train", "test", num_train=8_144, num_eval=8_041),
    "food101": DatasetSpec("food101", 101, "train", "validation",
                           num_train=75_750, num_eval=25_250),
    "dtd": DatasetSpec("dtd", 47, "train+validation", "test", num_train=3_760, num_eval=1_880),
    # TFDS's Caltech-101 has 102 classes: the 101 objects and the background class.
    "caltech101": DatasetSpec("caltech101", 102, "train", "test",
                              num_train=3_060, num_eval=6_084),
}

# The grayscale sets of `keras_dynconv.offline_data` (no download); digits is split
# 80/20 there.
OFFLINE_DATASETS = {
    "digits": DatasetSpec("digits", 10, num_train=1_437, num_eval=360),
    "fashion_mnist": DatasetSpec("fashion_mnist", 10, num_train=60_000, num_eval=10_000),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a caller needs to build and schedule a model for a dataset.

    Attributes:
        name: the dataset's name.
        num_classes: number of classes (width of one-hot labels).
        num_train: training examples, `None` if unknown.
        num_eval: evaluation examples, `None` if unknown (also `num_test`).

    Example:
    >>> info = DatasetInfo("digits", num_classes=10, num_train=1437, num_eval=360)
    >>> info.num_test
    360
    """

    name: str
    num_classes: int
    num_train: int | None = None
    num_eval: int | None = None

    @property
    def num_test(self):
        return self.num_eval


def resolve_spec(name):
    """`(name, DatasetSpec)` for a key of `DATASETS` or a `DatasetSpec`."""
    if isinstance(name, DatasetSpec):
        return name.tfds_name, name
    if isinstance(name, str) and name in DATASETS:
        return name, DATASETS[name]
    raise ValueError(
        f"Invalid value for argument `name`. Expected one of {sorted(DATASETS)} or a "
        f"`keras_dynconv.data.DatasetSpec`. Received name={name!r}"
    )


def dataset_info(name):
    """Number of classes and split sizes of a dataset, without reading any data.

    Args:
        name: a key of `DATASETS` (TFDS), `"digits"` or `"fashion_mnist"`
            (`offline_dataset`), or a `DatasetSpec`.

    Returns:
        A `DatasetInfo`.

    Example:

    >>> from keras_dynconv.data import dataset_info
    >>> info = dataset_info("imagenet2012")
    >>> info.num_classes, info.num_train
    (1000, 1281167)
    >>> dataset_info("digits").num_classes
    10
    """
    if isinstance(name, str) and name in OFFLINE_DATASETS:
        spec = OFFLINE_DATASETS[name]
    else:
        try:
            name, spec = resolve_spec(name)
        except ValueError:
            raise ValueError(
                f"Invalid value for argument `name`. Expected one of "
                f"{sorted(DATASETS) + sorted(OFFLINE_DATASETS)} or a "
                f"`keras_dynconv.data.DatasetSpec`. Received name={name!r}"
            ) from None
    return DatasetInfo(name, spec.num_classes, spec.num_train, spec.num_eval)
