"""Input pipelines for `model.fit`: TFDS image classification and detection sets, offline data.

Every pipeline yields batches of images float32 `[B, S, S, 3]` RGB in [0, 255] (the
zoo's models normalise inside) with one-hot float32 labels (classification) or a
dict of padded `"boxes"` and `"classes"` (detection: COCO, generated shapes). They
are `tf.data.Dataset`s, which `model.fit` takes on every Keras backend.

Importing this package does not import TensorFlow (under the torch backend an early
import can crash); the pipeline functions import it when called. The TensorFlow
building blocks are submodules: `preprocessing` (crops), `autoaugment`,
`randaugment`, `augment_ops`, `mixup`, and for detection `box_augment` (SSD crop,
flip) and `detection_batching`.

Example:

```python
from keras_dynconv import data

train, test, info = data.offline_dataset("digits", image_size=32)
train = data.image_classification_dataset("cifar10", "train", image_size=224,
                                          data_dir="/data/tfds")
num_classes = data.dataset_info("cifar10").num_classes
coco_train = data.coco_detection_dataset("train", image_size=300, data_dir="/data/tfds")
shapes_train = data.shapes_detection_dataset(2000, image_size=160, training=True)
```
"""

from keras_dynconv.data.box_formats import BOUNDING_BOX_FORMATS
from keras_dynconv.data.catalog import DATASETS
from keras_dynconv.data.catalog import OFFLINE_DATASETS
from keras_dynconv.data.catalog import DatasetInfo
from keras_dynconv.data.catalog import DatasetSpec
from keras_dynconv.data.catalog import dataset_info
from keras_dynconv.data.coco import COCO_CATEGORY_IDS
from keras_dynconv.data.coco import COCO_CLASS_NAMES
from keras_dynconv.data.coco import coco_detection_dataset
from keras_dynconv.data.imagenet_labels import class_names as imagenet_class_names
from keras_dynconv.data.imagenet_labels import decode_predictions
from keras_dynconv.data.offline import offline_dataset
from keras_dynconv.data.shapes import SHAPE_CLASSES
from keras_dynconv.data.shapes import generate_shapes
from keras_dynconv.data.shapes import shapes_detection_dataset
from keras_dynconv.data.tfds_pipeline import AUGMENTATIONS
from keras_dynconv.data.tfds_pipeline import image_classification_dataset

__all__ = [
    "AUGMENTATIONS",
    "BOUNDING_BOX_FORMATS",
    "COCO_CATEGORY_IDS",
    "COCO_CLASS_NAMES",
    "DATASETS",
    "OFFLINE_DATASETS",
    "SHAPE_CLASSES",
    "DatasetInfo",
    "DatasetSpec",
    "coco_detection_dataset",
    "dataset_info",
    "decode_predictions",
    "generate_shapes",
    "image_classification_dataset",
    "imagenet_class_names",
    "offline_dataset",
    "shapes_detection_dataset",
]
