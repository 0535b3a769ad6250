"""Input pipelines (`keras_dynconv.data`) on a real TFDS dataset written to disk.

The module fixture writes a tiny `oxford_flowers102` (TFDS's own feature spec and
version, real TFRecord files, non-square PNG and JPEG images) into a temporary
`data_dir`, where `tfds.builder("oxford_flowers102", data_dir=...)` finds it as
prepared; the public pipeline then reads it exactly as it would read the real one.
Channel 0 of each image is the constant `20 * label + 10`, which survives crops
and resizes: it ties every output image to its label. Channels 1 and 2 are
gradients, which crops, flips and augmentations change.

Nothing here may reach the network: the `no_network` fixture (conftest.py) makes every socket
connection fail and TFDS's download fail loudly.
"""

import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import BACKEND

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from keras_dynconv import data  # noqa: E402
from keras_dynconv.data import augment_ops  # noqa: E402
from keras_dynconv.data.autoaugment import POLICY_V0  # noqa: E402
from keras_dynconv.data.autoaugment import distort_image_with_autoaugment  # noqa: E402
from keras_dynconv.data.mixup import mixup  # noqa: E402
from keras_dynconv.data.randaugment import distort_image_with_randaugment  # noqa: E402

NAME = "oxford_flowers102"
NUM_CLASSES = 102
SIZE = 32
# (height, width): wide, tall, odd, small.
SHAPES = [(40, 56), (64, 48), (37, 51), (13, 9)]
SPLIT_LABELS = {
    "train": [i % 10 for i in range(12)],
    "validation": [(3 * i + 1) % 10 for i in range(8)],
    "test": [(7 * i + 5) % 10 for i in range(10)],
}
# JPEG round-off of the constant channel after crop and bicubic resize.
LABEL_CHANNEL_ATOL = 8.0


def _image(label, index):
    height, width = SHAPES[index % len(SHAPES)]
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 20 * label + 10
    image[..., 1] = np.linspace(0, 255, width).astype(np.uint8)[None, :]
    image[..., 2] = np.linspace(255, 0, height).astype(np.uint8)[:, None]
    if index % 2:
        return tf.io.encode_jpeg(image, quality=95).numpy()  # JPEG path: decode_and_crop
    return image  # stored as PNG




# Tests of the pipelines must never reach the network (TFDS would hang offline).
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tfds"))
    reference = tfds.builder(NAME, data_dir=root)
    splits = {
        split: [
            (index, {"image": _image(label, index), "label": label,
                     "file_name": f"{split}_{index}.jpg"})
            for index, label in enumerate(labels)
        ]
        for split, labels in SPLIT_LABELS.items()
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name=NAME, version=str(reference.version), features=reference.info.features,
        split_datasets=splits, data_dir=root, disable_shuffling=True,
    )
    assert tfds.builder(NAME, data_dir=root).is_prepared()
    return root


def _collect(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def _label_channel(images):
    return images[..., 0].mean(axis=(1, 2))


def _pipeline(data_dir, split="train", **kwargs):
    kwargs = {"image_size": SIZE, "batch_size": 4, "data_dir": data_dir, **kwargs}
    return data.image_classification_dataset(NAME, split, **kwargs)


# Catalog.


def test_catalog_matches_tfds_metadata(tmp_path):
    for name, spec in data.DATASETS.items():
        builder = tfds.builder(spec.tfds_name, data_dir=str(tmp_path))
        features = builder.info.features
        assert features[spec.label_key].num_classes == spec.num_classes, name
        assert isinstance(features[spec.image_key], tfds.features.Image), name
        assert not builder.is_prepared()


def test_dataset_info():
    info = data.dataset_info("imagenet2012")
    assert (info.name, info.num_classes, info.num_train, info.num_eval) == (
        "imagenet2012", 1000, 1_281_167, 50_000)
    assert data.dataset_info("caltech101").num_classes == 102
    digits = data.dataset_info("digits")
    assert (digits.num_classes, digits.num_train, digits.num_test) == (10, 1437, 360)
    custom = data.DatasetSpec("my_set", num_classes=3)
    assert data.dataset_info(custom).num_classes == 3
    with pytest.raises(ValueError, match=r"argument `name`.*name='imagenet'"):
        data.dataset_info("imagenet")


# Evaluation pipeline.


def test_eval_pipeline_shapes_values_and_labels(data_dir):
    dataset = _pipeline(data_dir, "eval")
    assert dataset.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]
    assert [len(x) for x, _ in batches] == [4, 4, 2]  # eval keeps the remainder
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 100.0
    assert labels.shape == (10, NUM_CLASSES)
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    np.testing.assert_array_equal(labels.argmax(axis=1), SPLIT_LABELS["test"])
    expected = 20.0 * np.array(SPLIT_LABELS["test"]) + 10.0
    np.testing.assert_allclose(_label_channel(images), expected, atol=LABEL_CHANNEL_ATOL)
    # The central crop keeps the middle of the gradients: no flip, no shift (the
    # 13x9 image's 4-pixel crop is off centre by the reference's rounding).
    large = [i for i in range(10) if SHAPES[i % len(SHAPES)] != (13, 9)]
    np.testing.assert_allclose(images[large, :, :, 1].mean(axis=(1, 2)), 127.5, atol=6.0)


def test_integer_labels_and_static_batches(data_dir):
    dataset = _pipeline(data_dir, "eval", one_hot=False, drop_remainder=True)
    assert dataset.element_spec[0].shape.as_list() == [4, SIZE, SIZE, 3]
    assert dataset.element_spec[1].shape.as_list() == [4]
    images, labels = _collect(dataset)
    assert labels.dtype == np.int32 and len(labels) == 8
    np.testing.assert_array_equal(labels, SPLIT_LABELS["test"][:8])


def test_split_aliases_and_max_examples(data_dir):
    # "train" is Flowers-102's train+validation; training is on by default.
    train = _pipeline(data_dir, "train", augment=None, seed=0)
    assert train.element_spec[0].shape.as_list() == [4, SIZE, SIZE, 3]
    _, labels = _collect(train)
    assert len(labels) == 20  # 12 + 8, no partial batch
    assert sorted(labels.argmax(1)) == sorted(SPLIT_LABELS["train"] + SPLIT_LABELS["validation"])
    _, labels = _collect(_pipeline(data_dir, "validation", batch_size=3))
    np.testing.assert_array_equal(labels.argmax(1), SPLIT_LABELS["validation"])
    _, labels = _collect(_pipeline(data_dir, "eval", max_examples=5))
    np.testing.assert_array_equal(labels.argmax(1), SPLIT_LABELS["test"][:5])
    # A training subset is the same examples every epoch, reshuffled.
    subset = _pipeline(data_dir, "train", max_examples=8, seed=1)
    epochs = [_collect(subset)[1].argmax(1) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(SPLIT_LABELS["train"][:8])


# Training pipeline.


@pytest.mark.parametrize("augment", ["standard", "randaugment", "autoaugment"])
def test_training_augmentations(data_dir, augment):
    plain_images, plain_labels = _collect(_pipeline(data_dir, augment=None, seed=3))
    dataset = _pipeline(data_dir, augment=augment, seed=3)
    assert dataset.element_spec[0].shape.as_list() == [4, SIZE, SIZE, 3]
    images, labels = _collect(dataset)
    assert images.shape == (20, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    # Same seed, same shuffle: the augmentation changes the images, not the order.
    np.testing.assert_array_equal(labels, plain_labels)
    changed = np.abs(images - plain_images).mean(axis=(1, 2, 3)) > 1.0
    assert changed.mean() > 0.5
    if augment == "standard":  # crops and flips keep the constant label channel
        expected = 20.0 * labels.argmax(1) + 10.0
        np.testing.assert_allclose(_label_channel(images), expected, atol=LABEL_CHANNEL_ATOL)
    if augment == "standard":
        # Seeds reproduce the pipeline. (The policies' graphs take seconds to build;
        # test_policies_are_stateless_and_keep_shapes checks their seeding.)
        again, _ = _collect(_pipeline(data_dir, augment=augment, seed=3))
        np.testing.assert_array_equal(images, again)
        other, _ = _collect(_pipeline(data_dir, augment=augment, seed=4))
        assert not np.array_equal(images, other)


def test_epochs_differ_and_seed_none_runs(data_dir):
    dataset = _pipeline(data_dir, seed=7)
    first, second = _collect(dataset)[0], _collect(dataset)[0]
    assert not np.array_equal(first, second)
    images, _ = _collect(_pipeline(data_dir, seed=None))
    assert images.shape == (20, SIZE, SIZE, 3)


def test_mixup_convex_combinations(data_dir):
    base_images, base_labels = _collect(_pipeline(data_dir, augment=None, seed=5))
    mixed = _pipeline(data_dir, augment=None, seed=5, mixup_alpha=0.2)
    images, labels = _collect(mixed)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0.0
    batch = 4
    for start in range(0, len(images), batch):
        x, y = base_images[start:start + batch], base_labels[start:start + batch]
        x_rev, y_rev = x[::-1], y[::-1]
        for i in range(batch):
            mix, own, other = images[start + i], x[i], x_rev[i]
            direction = (own - other).ravel()
            if np.dot(direction, direction) < 1e-3:
                continue  # an example mixed with itself (middle of an odd batch)
            weight = np.dot((mix - other).ravel(), direction) / np.dot(direction, direction)
            assert 0.5 - 1e-4 <= weight <= 1.0 + 1e-4
            np.testing.assert_allclose(mix, weight * own + (1 - weight) * other, atol=1e-2)
            np.testing.assert_allclose(
                labels[start + i], weight * y[i] + (1 - weight) * y_rev[i], atol=1e-4)


def test_mixup_function_weights():
    images = tf.random.stateless_uniform([6, 4, 4, 3], [0, 1], maxval=255.0)
    labels = tf.one_hot([0, 1, 2, 3, 4, 5], 6)
    mixed_images, mixed_labels = mixup(images, labels, 0.2, tf.constant([3, 4]))
    weights = mixed_labels.numpy().max(axis=1)
    assert np.all(weights >= 0.5) and np.all(weights <= 1.0)
    assert mixed_images.shape == images.shape


# Argument checks and the offline error.


def test_invalid_arguments(data_dir):
    with pytest.raises(ValueError, match=r"argument `augment`.*augment='mixup'"):
        _pipeline(data_dir, augment="mixup")
    with pytest.raises(ValueError, match=r"argument `name`.*name='imagenet'"):
        data.image_classification_dataset("imagenet", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"argument `batch_size`.*batch_size=0"):
        _pipeline(data_dir, batch_size=0)
    with pytest.raises(ValueError, match="one_hot=True"):
        _pipeline(data_dir, mixup_alpha=0.2, one_hot=False)
    with pytest.raises(ValueError, match="training=True"):
        _pipeline(data_dir, "eval", mixup_alpha=0.2)
    with pytest.raises(ValueError, match=r"argument `mixup_alpha`"):
        _pipeline(data_dir, mixup_alpha=-1.0)


def test_unprepared_dataset_raises_clear_error_offline(tmp_path):
    empty = str(tmp_path / "nothing_here")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        data.image_classification_dataset("cifar10", data_dir=empty)
    assert time.perf_counter() - start < 10.0
    message = str(error.value)
    for part in ("'cifar10'", empty, "download=True", "tfds build cifar10"):
        assert part in message
    with pytest.raises(FileNotFoundError, match="manual_dir") as error:
        data.image_classification_dataset("imagenet2012", "eval", data_dir=empty)
    assert "ILSVRC2012_img_train.tar" in str(error.value)
    with pytest.raises(ValueError, match=r"`manual_dir`.*download=True"):
        data.image_classification_dataset("imagenet2012", data_dir=empty, manual_dir=empty)
    unknown = data.DatasetSpec("no_such_tfds_dataset", num_classes=2)
    with pytest.raises(FileNotFoundError, match="no_such_tfds_dataset"):
        data.image_classification_dataset(unknown, data_dir=empty)


def test_download_true_passes_manual_dir(tmp_path, monkeypatch):
    calls = []

    def fake_prepare(builder, download_config=None, **kwargs):
        calls.append(download_config)
        raise RuntimeError("fake download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fake_prepare)
    manual = str(tmp_path / "manual")
    with pytest.raises(RuntimeError, match="fake download"):
        data.image_classification_dataset(
            "imagenet2012", data_dir=str(tmp_path), download=True, manual_dir=manual)
    assert str(calls[0].manual_dir) == manual


# Training on the current backend.


def _tiny_model(num_classes):
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(1.0 / 255.0),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes),
    ])


def test_model_fit_on_tfds_pipeline(data_dir):
    train = _pipeline(data_dir, augment="standard", mixup_alpha=0.2, seed=0)
    test = _pipeline(data_dir, "eval")
    model = _tiny_model(NUM_CLASSES)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=["accuracy"],
    )
    history = model.fit(train, validation_data=test, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["val_loss"][0])


# Offline data.


def test_offline_digits():
    train, test, info = data.offline_dataset("digits", image_size=16, batch_size=64, seed=0)
    assert (info.name, info.num_classes, info.num_train, info.num_test) == (
        "digits", 10, 1437, 360)
    assert train.element_spec[0].shape.as_list() == [64, 16, 16, 3]
    images, labels = _collect(test)
    assert images.shape == (360, 16, 16, 3) and labels.shape == (360, 10)
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255
    assert images.max() > 200
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey as RGB
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    assert set(labels.argmax(axis=1)) == set(range(10))
    train_images, train_labels = _collect(train)
    assert len(train_images) == (1437 // 64) * 64
    plain_images, plain_labels = _collect(
        data.offline_dataset("digits", image_size=16, batch_size=64, seed=0, augment=False)[0])
    np.testing.assert_array_equal(train_labels, plain_labels)  # same shuffle
    shifted = np.abs(train_images - plain_images).mean(axis=(1, 2, 3)) > 0
    assert shifted.mean() > 0.5
    # Translation only: the ink moves, its amount barely changes (borders aside).
    np.testing.assert_allclose(train_images.mean(), plain_images.mean(), rtol=0.1)


def test_offline_fit_int_labels():
    train, test, info = data.offline_dataset(
        "digits", image_size=SIZE, batch_size=32, max_train=128, one_hot=False)
    assert info.num_train == 128
    model = _tiny_model(info.num_classes)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# Augmentation operations.


def test_augment_ops_match_pil():
    pil = pytest.importorskip("PIL")
    from PIL import Image, ImageEnhance, ImageOps

    image = np.random.default_rng(0).integers(0, 200, (20, 30, 3), dtype=np.uint8)
    image[..., 1] //= 2
    pil_image = Image.fromarray(image)
    del pil
    pairs = {
        "equalize": (augment_ops.equalize(image), ImageOps.equalize(pil_image)),
        "autocontrast": (augment_ops.autocontrast(image), ImageOps.autocontrast(pil_image)),
        "posterize": (augment_ops.posterize(image, 2.0), ImageOps.posterize(pil_image, 2)),
        "solarize": (augment_ops.solarize(image, 100), ImageOps.solarize(pil_image, 100)),
        "color": (augment_ops.color(image, 0.3), ImageEnhance.Color(pil_image).enhance(0.3)),
        "contrast": (augment_ops.contrast(image, 0.3),
                     ImageEnhance.Contrast(pil_image).enhance(0.3)),
        "sharpness": (augment_ops.sharpness(image, 1.7),
                      ImageEnhance.Sharpness(pil_image).enhance(1.7)),
        "rotate": (augment_ops.rotate(image, 30.0),
                   pil_image.rotate(30, fillcolor=(128, 128, 128))),
    }
    for name, (ours, reference) in pairs.items():
        difference = np.abs(np.asarray(ours, np.int32) - np.asarray(reference, np.int32))
        assert difference.max() <= 1, name  # float -> uint8 truncation
    shifted = augment_ops.translate_y(image, 5.0).numpy()
    np.testing.assert_array_equal(shifted[:-5], image[5:])
    assert np.all(shifted[-5:] == augment_ops.FILL_VALUE)


def test_policies_are_stateless_and_keep_shapes():
    assert len(POLICY_V0) == 25 and all(len(sub) == 2 for sub in POLICY_V0)
    assert {name for sub in POLICY_V0 for name, _, _ in sub} <= set(augment_ops.OPS)
    image = tf.cast(tf.random.stateless_uniform([24, 40, 3], [1, 2], maxval=256, dtype=tf.int32),
                    tf.uint8)
    for distort in (distort_image_with_autoaugment, distort_image_with_randaugment):
        outputs = [distort(image, tf.constant([0, s])).numpy() for s in range(6)]
        assert all(o.shape == (24, 40, 3) and o.dtype == np.uint8 for o in outputs)
        np.testing.assert_array_equal(distort(image, tf.constant([0, 0])), outputs[0])
        assert len({o.tobytes() for o in outputs}) > 1


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the tensorflow backend imports it anyway")
def test_import_does_not_import_tensorflow():
    code = (
        "import sys, keras_dynconv.data as d; d.dataset_info('cifar10'); "
        "sys.exit(int('tensorflow' in sys.modules))"
    )
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
