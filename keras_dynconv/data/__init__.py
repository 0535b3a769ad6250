"""Input pipelines for `model.fit`: TFDS image classification sets and offline data.

Every pipeline yields `(images, labels)` batches: images float32 `[B, S, S, 3]` RGB
in [0, 255] (the zoo's models normalise inside), labels one-hot float32. They are
`tf.data.Dataset`s, which `model.fit` takes on every Keras backend.

Importing this package does not import TensorFlow (under the torch backend an early
import can crash); the pipeline functions import it when called. The TensorFlow
building blocks are submodules: `preprocessing` (crops), `autoaugment`,
`randaugment`, `augment_ops`, `mixup`.

Example:

```python
from keras_dynconv import data

train, test, info = data.offline_dataset("digits", image_size=32)
train = data.image_classification_dataset("cifar10", "train", image_size=224,
                                          data_dir="/data/tfds")
num_classes = data.dataset_info("cifar10").num_classes
```
"""

from keras_dynconv.data.catalog import DATASETS
from keras_dynconv.data.catalog import OFFLINE_DATASETS
from keras_dynconv.data.catalog import DatasetInfo
from keras_dynconv.data.catalog import DatasetSpec
from keras_dynconv.data.catalog import dataset_info
from keras_dynconv.data.offline import offline_dataset
from keras_dynconv.data.tfds_pipeline import AUGMENTATIONS
from keras_dynconv.data.tfds_pipeline import image_classification_dataset

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "OFFLINE_DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "dataset_info",
    "image_classification_dataset",
    "offline_dataset",
]
