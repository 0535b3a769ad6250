"""Detection input pipelines (`keras_dynconv.data`): COCO from TFDS, generated shapes,
box augmentation.

The module fixture writes a tiny `coco/2017` (TFDS's own feature spec and version,
real TFRecord files) into a temporary `data_dir`, where `tfds.builder("coco/2017",
data_dir=...)` finds it as prepared. Every object is a solid rectangle of its
class's colour on a grey ground, so the pixels say where each box must be after
crops, flips and resizes. Nothing here may reach the network: the `no_network` fixture (conftest.py)
makes every socket connection and TFDS download fail loudly.
"""


import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from keras_dynconv import data  # noqa: E402
from keras_dynconv.data import box_augment  # noqa: E402
from keras_dynconv.data.box_formats import from_rel_yxyx  # noqa: E402

DATASET = "coco/2017"
SIZE = 80
MAX_BOXES = 6
BACKGROUND = np.array([128.0, 128.0, 128.0])
# Class -> colour. Seen from the grey ground, any other colour's pixels project to
# at most a third of a colour's direction, edge blends between two less.
COLOURS = {
    0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255),
    3: (255, 255, 0), 4: (255, 0, 255), 5: (0, 255, 255),
}
# (height, width), [(class, top, left, bottom, right, is_crowd)] in pixels: boxes on
# whole pixels, at most one object of a class per image, 2+ pixels between objects.
TRAIN = [
    ((40, 80), [(0, 4, 16, 20, 64, False), (1, 24, 4, 38, 30, False),
                (2, 24, 50, 36, 76, True)]),
    ((64, 48), [(3, 8, 8, 40, 40, False)]),
    ((36, 60), []),
    ((48, 48), [(4, 2, 2, 14, 14, False), (5, 2, 20, 14, 30, False),
                (0, 20, 4, 30, 44, False), (1, 34, 10, 46, 40, True)]),
    ((56, 72), [(2, 10, 10, 50, 60, False), (1, 2, 64, 10, 71, False)]),
    ((44, 66), [(5, 0, 0, 44, 20, False), (3, 10, 30, 30, 66, False)]),  # on the borders
]
VALIDATION = [
    ((40, 80), [(0, 4, 16, 20, 64, False), (1, 24, 4, 38, 30, True),
                (2, 24, 50, 36, 76, False)]),
    ((50, 30), []),
    ((64, 48), [(3, 8, 8, 40, 40, False)]),
]
VALIDATION_IDS = [1001, 1002, 1003]
# The first validation box, rows 4..20 and columns 16..64 of a 40 x 80 image, in
# every format at SIZE = 80 (by hand).
FIRST_BOX = {
    "xyxy": [16, 8, 64, 40],
    "yxyx": [8, 16, 40, 64],
    "xywh": [16, 8, 48, 32],
    "center_xywh": [40, 24, 48, 32],
    "center_yxhw": [24, 40, 32, 48],
    "rel_xyxy": [0.2, 0.1, 0.8, 0.5],
    "rel_yxyx": [0.1, 0.2, 0.5, 0.8],
    "rel_xywh": [0.2, 0.1, 0.6, 0.4],
    "rel_center_xywh": [0.5, 0.3, 0.6, 0.4],
}


def _draw(shape, objects):
    image = np.empty(shape + (3,), np.uint8)
    image[:] = BACKGROUND.astype(np.uint8)
    for label, top, left, bottom, right, _ in objects:
        image[top:bottom, left:right] = COLOURS[label]
    return image


def _example(index, image_id, shape, objects):
    height, width = shape
    image = _draw(shape, objects)
    # TFDS would store arrays as JPEG (coco's encoding), whose ringing moves the
    # colour edges: objects go in as PNG, an empty image as JPEG, both decoded.
    encode = tf.io.encode_png if objects else tf.io.encode_jpeg
    encoded = encode(image).numpy()
    count = len(objects)
    return index, {
        "image": encoded,
        "image/filename": f"{image_id:012d}.jpg",
        "image/id": image_id,
        "objects": {
            "bbox": np.array([[t / height, l / width, b / height, r / width]
                              for _, t, l, b, r, _ in objects], np.float32).reshape(-1, 4),
            "label": np.array([o[0] for o in objects], np.int64),
            "is_crowd": np.array([o[5] for o in objects], bool),
            "area": np.array([(b - t) * (r - l) for _, t, l, b, r, _ in objects], np.int64),
            "id": np.arange(count, dtype=np.int64) + 10 * image_id,
        },
    }




# Tests of the pipelines must never reach the network (TFDS would hang offline).
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tfds"))
    reference = tfds.builder(DATASET, data_dir=root)
    splits = {
        "train": [_example(i, i + 1, *spec) for i, spec in enumerate(TRAIN)],
        "validation": [_example(i, VALIDATION_IDS[i], *spec) for i, spec in enumerate(VALIDATION)],
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name="coco", config="2017", version=str(reference.version),
        features=reference.info.features, split_datasets=splits, data_dir=root,
        disable_shuffling=True,
    )
    assert tfds.builder(DATASET, data_dir=root).is_prepared()
    return root


def _coco(data_dir, split="eval", **kwargs):
    kwargs = {"image_size": SIZE, "batch_size": 2, "max_boxes": MAX_BOXES,
              "data_dir": data_dir, **kwargs}
    return data.coco_detection_dataset(split, **kwargs)


def _examples(dataset):
    """Unbatched `(image, targets)` NumPy pairs."""
    for images, targets in dataset:
        targets = {key: value.numpy() for key, value in targets.items()}
        for i, image in enumerate(images.numpy()):
            yield image, {key: value[i] for key, value in targets.items()}


def _xyxy(objects, shape, size=SIZE):
    height, width = shape
    return np.array([[l * size / width, t * size / height, r * size / width, b * size / height]
                     for _, t, l, b, r, _ in objects], np.float32).reshape(-1, 4)


def _assert_boxes_bound_colours(image, boxes, classes, atol):
    """Each box (xyxy pixels) is the extent of the pixels mostly of its class's
    colour, within `atol` pixels; padding rows are zeros."""
    image = np.asarray(image, np.float64)
    for box, label in zip(boxes, classes):
        if label < 0:
            np.testing.assert_array_equal(box, 0.0)
            continue
        direction = np.array(COLOURS[label]) - BACKGROUND
        fraction = (image - BACKGROUND) @ direction / (direction @ direction)
        rows = np.flatnonzero((fraction > 0.5).any(axis=1))
        cols = np.flatnonzero((fraction > 0.5).any(axis=0))
        assert rows.size, f"no pixels of class {label} in its box {box}"
        extent = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        np.testing.assert_allclose(box, extent, atol=atol, err_msg=f"class {label}")


# Evaluation pipeline.


def test_eval_structure_values_and_coco_fields(data_dir):
    dataset = _coco(data_dir)
    images_spec, targets_spec = dataset.element_spec
    assert images_spec.shape.as_list() == [None, SIZE, SIZE, 3]
    assert images_spec.dtype == tf.float32
    expected_specs = {
        "boxes": ([None, MAX_BOXES, 4], tf.float32),
        "classes": ([None, MAX_BOXES], tf.int32),
        "image_id": ([None], tf.int64),
        "image_shape": ([None, 2], tf.int32),
        "is_crowd": ([None, MAX_BOXES], tf.bool),
    }
    assert {key: (spec.shape.as_list(), spec.dtype) for key, spec in targets_spec.items()} == (
        expected_specs)
    examples = list(_examples(dataset))
    assert len(examples) == len(VALIDATION)  # evaluation keeps the last partial batch
    for (image, targets), (shape, objects), image_id in zip(examples, VALIDATION, VALIDATION_IDS):
        count = len(objects)
        assert image.min() >= 0.0 and image.max() <= 255.0
        assert targets["image_id"] == image_id
        np.testing.assert_array_equal(targets["image_shape"], shape)
        np.testing.assert_allclose(targets["boxes"][:count], _xyxy(objects, shape), atol=1e-4)
        np.testing.assert_array_equal(targets["classes"][:count], [o[0] for o in objects])
        np.testing.assert_array_equal(targets["is_crowd"][:count], [o[5] for o in objects])
        # Padding: zero boxes, class -1, not crowd.
        np.testing.assert_array_equal(targets["boxes"][count:], 0.0)
        np.testing.assert_array_equal(targets["classes"][count:], -1)
        assert not targets["is_crowd"][count:].any()
        _assert_boxes_bound_colours(image, targets["boxes"], targets["classes"], atol=1.0)


@pytest.mark.parametrize("bounding_box_format", sorted(FIRST_BOX))
def test_eval_box_formats(data_dir, bounding_box_format):
    dataset = _coco(data_dir, bounding_box_format=bounding_box_format, max_examples=1,
                    batch_size=1)
    (_, targets), = _examples(dataset)
    np.testing.assert_allclose(targets["boxes"][0], FIRST_BOX[bounding_box_format], atol=1e-4)
    np.testing.assert_array_equal(targets["boxes"][3:], 0.0)
    # Keras reads them back as the same pixels.
    as_xyxy = keras.utils.bounding_boxes.convert_format(
        targets["boxes"][:3], source=bounding_box_format, target="xyxy", height=SIZE, width=SIZE)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(as_xyxy), _xyxy(VALIDATION[0][1], VALIDATION[0][0]),
        atol=1e-3)


def test_max_boxes_keeps_the_first_objects_and_max_examples(data_dir):
    dataset = _coco(data_dir, max_boxes=2, max_examples=2)
    examples = list(_examples(dataset))
    assert [int(t["image_id"]) for _, t in examples] == VALIDATION_IDS[:2]
    first = examples[0][1]
    assert first["boxes"].shape == (2, 4)
    np.testing.assert_array_equal(first["classes"], [0, 1])
    np.testing.assert_array_equal(first["is_crowd"], [False, True])
    np.testing.assert_array_equal(examples[1][1]["classes"], [-1, -1])  # no objects


def test_converter_hand_values():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.8]]], np.float32)  # batched [1, 1, 4]
    for name, expected in FIRST_BOX.items():
        converted = from_rel_yxyx(boxes, name, SIZE, SIZE).numpy()
        np.testing.assert_allclose(converted[0, 0], expected, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(
        from_rel_yxyx([[0.1, 0.2, 0.5, 0.6]], "xywh", height=100, width=50).numpy(),
        [[10.0, 10.0, 20.0, 40.0]], atol=1e-5)
    assert set(FIRST_BOX) == set(data.BOUNDING_BOX_FORMATS)


# Training pipeline.


def test_training_drops_crowd_boxes_without_augmentation(data_dir):
    dataset = _coco(data_dir, "train", augment=False, seed=0)
    assert dataset.element_spec[0].shape.as_list() == [2, SIZE, SIZE, 3]
    assert set(dataset.element_spec[1]) == {"boxes", "classes"}
    assert dataset.element_spec[1]["boxes"].shape.as_list() == [2, MAX_BOXES, 4]
    expected = {}
    for shape, objects in TRAIN:
        kept = [o for o in objects if not o[5]]
        expected[tuple(o[0] for o in kept)] = _xyxy(kept, shape)
    seen = []
    for image, targets in _examples(dataset):
        classes = tuple(int(c) for c in targets["classes"] if c >= 0)
        np.testing.assert_allclose(targets["boxes"][:len(classes)], expected[classes], atol=1e-4)
        _assert_boxes_bound_colours(image, targets["boxes"], targets["classes"], atol=1.0)
        seen.append(classes)
    assert sorted(seen) == sorted(expected)  # 6 examples, 3 full batches, crowds gone


def test_training_augmentation_keeps_boxes_on_their_pixels(data_dir):
    dataset = _coco(data_dir, "train", seed=1)
    crops, empty = 0, 0
    for _ in range(5):  # every epoch draws new crops and flips
        for image, targets in _examples(dataset):
            boxes, classes = targets["boxes"], targets["classes"]
            assert boxes.min() >= 0.0 and boxes.max() <= SIZE
            assert set(classes[classes >= 0]) <= set(COLOURS)
            _assert_boxes_bound_colours(image, boxes, classes, atol=1.0)
            empty += int((classes < 0).all())
            # A crop upscales the rectangles: the largest one grows past its
            # uncropped size (38 x 40 pixels at most at SIZE 80).
            valid = boxes[classes >= 0]
            crops += int(len(valid) and ((valid[:, 2] - valid[:, 0]) > 70).any())
    assert crops > 0 and empty > 0

    first = [t["boxes"] for _, t in _examples(_coco(data_dir, "train", seed=1))]
    again = [t["boxes"] for _, t in _examples(_coco(data_dir, "train", seed=1))]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert len(list(_examples(_coco(data_dir, "train", seed=None)))) == 6


# Box augmentation operations.


def test_crop_boxes_hand_values():
    boxes = [
        [0.0, 0.0, 0.5, 0.5],  # touches the window's corner: completely outside
        [0.4, 0.4, 0.6, 0.6],  # a quarter inside
        [0.6, 0.6, 0.8, 0.9],  # inside
        [0.7, 0.7, 0.7, 0.8],  # no area
        [0.9, 0.9, 1.2, 1.2],  # a ninth inside, past the image
    ]
    window = [0.5, 0.5, 1.0, 1.0]
    moved, keep = box_augment.crop_boxes(boxes, window, overlap_thresh=0.2)
    np.testing.assert_array_equal(keep, [False, True, True, False, False])
    np.testing.assert_allclose(moved[1], [0.0, 0.0, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(moved[2], [0.2, 0.2, 0.6, 0.8], atol=1e-6)
    np.testing.assert_allclose(moved[4], [0.8, 0.8, 1.0, 1.0], atol=1e-6)
    _, keep = box_augment.crop_boxes(boxes, window, overlap_thresh=0.3)
    np.testing.assert_array_equal(keep, [False, False, True, False, False])
    _, keep = box_augment.crop_boxes(boxes, window, overlap_thresh=0.0)
    np.testing.assert_array_equal(keep, [False, True, True, False, True])
    _, keep = box_augment.crop_boxes(np.zeros([0, 4], np.float32), window, 0.5)
    assert keep.shape == (0,)


@tf.function(input_signature=[
    tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32),
    tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64),
])
def _crop_and_flip(image, boxes, classes, seed):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image, boxes, classes = box_augment.ssd_random_crop(image, boxes, classes, crop_seed)
    image, boxes = box_augment.random_horizontal_flip(image, boxes, flip_seed)
    return image, boxes, classes


def test_ssd_random_crop_and_flip_move_boxes_with_pixels():
    shape, objects = TRAIN[3]
    objects = [o[:5] + (False,) for o in objects]
    image = _draw(shape, objects)
    boxes = np.array([[t / shape[0], l / shape[1], b / shape[0], r / shape[1]]
                      for _, t, l, b, r, _ in objects], np.float32)
    classes = np.array([o[0] for o in objects], np.int32)
    uncropped = dropped = 0
    for seed in range(60):
        out_image, out_boxes, out_classes = (
            t.numpy() for t in _crop_and_flip(image, boxes, classes, [seed, 7]))
        height, width = out_image.shape[:2]
        assert np.all((out_boxes >= 0.0) & (out_boxes <= 1.0))
        pixels = out_boxes * [height, width, height, width]
        xyxy = pixels[:, [1, 0, 3, 2]]
        # No resize: the boxes are exactly the rectangles' visible pixels.
        _assert_boxes_bound_colours(out_image, xyxy, out_classes, atol=1e-3)
        uncropped += int(out_image.shape[:2] == shape)
        dropped += int(len(out_classes) < len(classes))
    assert 0 < uncropped < 60 and dropped > 0
    again = _crop_and_flip(image, boxes, classes, [5, 7])
    np.testing.assert_array_equal(again[1], _crop_and_flip(image, boxes, classes, [5, 7])[1])


def test_ssd_random_crop_without_boxes():
    image = tf.zeros([30, 40, 3], tf.uint8)
    for seed in range(5):
        out_image, out_boxes, out_classes = _crop_and_flip(
            image, tf.zeros([0, 4]), tf.zeros([0], tf.int32), [seed, 0])
        assert out_boxes.shape == (0, 4) and out_classes.shape == (0,)
        assert out_image.shape[2] == 3


def test_random_horizontal_flip():
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    boxes = np.array([[0.0, 0.0, 0.5, 0.25]], np.float32)
    outcomes = set()
    for seed in range(8):
        flipped_image, flipped_boxes = box_augment.random_horizontal_flip(image, boxes, [seed, 1])
        if np.array_equal(flipped_image, image):
            np.testing.assert_array_equal(flipped_boxes, boxes)
            outcomes.add("kept")
        else:
            np.testing.assert_array_equal(flipped_image, image[:, ::-1])
            np.testing.assert_allclose(flipped_boxes, [[0.0, 0.75, 0.5, 1.0]])
            outcomes.add("flipped")
    assert outcomes == {"kept", "flipped"}


# Arguments and the offline error.


def test_invalid_arguments(data_dir):
    with pytest.raises(ValueError, match=r"argument `bounding_box_format`.*'xyxy_px'"):
        _coco(data_dir, bounding_box_format="xyxy_px")
    with pytest.raises(ValueError, match=r"argument `image_size`.*image_size=0"):
        _coco(data_dir, image_size=0)
    with pytest.raises(ValueError, match=r"argument `batch_size`.*batch_size=-1"):
        _coco(data_dir, batch_size=-1)
    with pytest.raises(ValueError, match=r"argument `max_boxes`.*max_boxes=0"):
        _coco(data_dir, max_boxes=0)
    with pytest.raises(ValueError, match=r"argument `split`"):
        data.coco_detection_dataset(0, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"argument `dataset_name`"):
        _coco(data_dir, dataset_name="voc/2007")
    with pytest.raises(ValueError, match=r"argument `bounding_box_format`"):
        data.shapes_detection_dataset(4, image_size=32, bounding_box_format="XYXY")
    with pytest.raises(ValueError, match=r"min_size <= max_size"):
        data.generate_shapes(1, min_size=0.5, max_size=0.2)
    with pytest.raises(ValueError, match=r"min_size \* image_size"):
        data.generate_shapes(1, image_size=20, min_size=0.1)


def test_unprepared_dataset_raises_clear_error_offline(tmp_path):
    empty = str(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError) as error:
        data.coco_detection_dataset("train", data_dir=empty)
    for part in ("'coco/2017'", empty, "download=True", "tfds build coco/2017"):
        assert part in str(error.value)


def test_coco_constants():
    assert len(data.COCO_CLASS_NAMES) == len(data.COCO_CATEGORY_IDS) == 80
    assert data.COCO_CLASS_NAMES[0] == "person" and data.COCO_CLASS_NAMES[-1] == "toothbrush"
    ids = dict(zip(data.COCO_CLASS_NAMES, data.COCO_CATEGORY_IDS))
    assert (ids["person"], ids["stop sign"], ids["backpack"], ids["dining table"],
            ids["toilet"], ids["tv"], ids["book"], ids["toothbrush"]) == (
        1, 13, 27, 67, 70, 72, 84, 90)
    assert list(data.COCO_CATEGORY_IDS) == sorted(set(data.COCO_CATEGORY_IDS))


# Generated shapes.


def _saturated_extents(image):
    """{colour: (ymin, xmin, ymax, xmax, pixels)} of the colours with a 0 channel
    (shapes; the ground never has one)."""
    flat = image.reshape(-1, 3)
    extents = {}
    for colour in np.unique(flat[flat.min(axis=1) == 0], axis=0):
        rows, cols = np.nonzero((image == colour).all(axis=-1))
        extents[tuple(colour)] = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1,
                                  rows.size)
    return extents


def test_generate_shapes_tight_boxes_and_determinism():
    size = 96
    images, boxes, classes = data.generate_shapes(40, image_size=size, max_objects=4, seed=3)
    assert images.shape == (40, size, size, 3) and images.dtype == np.uint8
    counts = [len(c) for c in classes]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    assert set(np.concatenate(classes)) == {0, 1, 2}
    fill = {0: [], 1: [], 2: []}
    for image, image_boxes, image_classes in zip(images, boxes, classes):
        assert image_boxes.dtype == np.float32 and image_classes.dtype == np.int32
        extents = _saturated_extents(image)
        assert len(extents) == len(image_classes)  # every shape visible, one colour each
        by_box = {extent[:4]: extent[4] for extent in extents.values()}
        for box, label in zip(np.rint(image_boxes * size).astype(int), image_classes):
            pixels = by_box[tuple(box)]  # KeyError: no shape has exactly this box
            fill[label].append(pixels / ((box[2] - box[0]) * (box[3] - box[1])))
    assert np.allclose(fill[0], 1.0)  # rectangles fill their box
    assert 0.65 < np.mean(fill[1]) < 0.85  # ellipses pi / 4
    assert 0.4 < np.mean(fill[2]) < 0.6  # triangles 1 / 2
    again = data.generate_shapes(40, image_size=size, max_objects=4, seed=3)
    np.testing.assert_array_equal(again[0], images)
    for first, second in zip(boxes + classes, again[1] + again[2]):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(data.generate_shapes(2, image_size=size, seed=4)[0], images[:2])


def test_shapes_dataset_eval_and_training():
    size = 64
    generated = data.generate_shapes(10, image_size=size, max_objects=3, seed=2)
    evaluation = data.shapes_detection_dataset(10, image_size=size, batch_size=4, max_objects=3,
                                               max_boxes=5, seed=2)
    assert evaluation.element_spec[1]["boxes"].shape.as_list() == [None, 5, 4]
    examples = list(_examples(evaluation))
    assert len(examples) == 10
    for (image, targets), gen_image, gen_boxes, gen_classes in zip(examples, *generated):
        np.testing.assert_array_equal(image, gen_image)
        count = len(gen_classes)
        expected = gen_boxes[:, [1, 0, 3, 2]] * size
        np.testing.assert_allclose(targets["boxes"][:count], expected, atol=1e-4)
        np.testing.assert_array_equal(targets["classes"][:count], gen_classes)
        np.testing.assert_array_equal(targets["classes"][count:], -1)

    training = data.shapes_detection_dataset(10, image_size=size, batch_size=4, training=True,
                                             bounding_box_format="rel_yxyx", max_objects=3,
                                             seed=2)
    images_spec, targets_spec = training.element_spec
    assert images_spec.shape.as_list() == [4, size, size, 3]
    assert targets_spec["boxes"].shape.as_list() == [4, 3, 4]
    assert targets_spec["classes"].dtype == tf.int32
    flipped = 0
    for _ in range(2):
        examples = list(_examples(training))
        assert len(examples) == 8  # drop_remainder
        for image, targets in examples:
            extents = _saturated_extents(image.astype(np.uint8))
            valid = targets["classes"] >= 0
            shown = {tuple(np.rint(box * size).astype(int)) for box in targets["boxes"][valid]}
            assert shown == {extent[:4] for extent in extents.values()}
            flipped += int(not any(np.array_equal(image, g) for g in generated[0]))
    assert flipped > 0


def test_shapes_dataset_trains_a_keras_model():
    dataset = data.shapes_detection_dataset(8, image_size=32, batch_size=4, training=True,
                                            max_objects=2, seed=0)
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, {"boxes": keras.layers.Reshape((2, 4))(
        keras.layers.Dense(8)(features))})
    model.compile("adam", loss={"boxes": "mse"})
    history = model.fit(dataset.map(lambda x, y: (x, {"boxes": y["boxes"]})), epochs=1,
                        shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
