"""The main job: build a small CondConv network and train it on real offline data.

    python -m keras_dynconv.demo [--dataset auto|fashion_mnist|digits] [--epochs N]

Backend: set KERAS_BACKEND (tensorflow, jax or torch) before running.
"""

import argparse
import time

import keras
import numpy as np

from keras_dynconv import layers
from keras_dynconv.offline_data import load_offline_dataset


def cond_conv_block(x, filters, strides, num_experts, name):
    """A separable block with one routing shared by its depthwise and pointwise convs."""
    routing = layers.Routing(num_experts, name=f"{name}_routing")(x)
    x = layers.CondDepthwiseConv2D(
        3, num_experts=num_experts, strides=strides, routing=None, name=f"{name}_dw"
    )(x, routing_weights=routing)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = layers.CondConv2D(
        filters, 1, num_experts=num_experts, routing=None, name=f"{name}_pw"
    )(x, routing_weights=routing)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_pw_bn")(x)
    return keras.layers.ReLU(6.0)(x)


def build_demo_model(image_size, num_classes, num_experts=4):
    """A small CondConv-MobileNet-style classifier for grayscale images in [0, 255]."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=1, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    for i, (filters, strides) in enumerate([(32, 2), (64, 2), (64, 1)]):
        x = cond_conv_block(x, filters, strides, num_experts, name=f"block{i + 1}")
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = layers.CondDense(num_classes, num_experts=num_experts, name="classifier")(x)
    return keras.Model(inputs, outputs, name="condconv_demo")


def _prepare(images, image_size):
    images = images.astype("float32")[..., None]
    if images.shape[1] != image_size:
        scale = image_size // images.shape[1]
        images = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    return images


# Per dataset: enough optimizer steps for BatchNorm's moving statistics to settle,
# so the inference-mode test accuracy is meaningful, in about a minute or two on CPU.
DEFAULT_SCHEDULE = {"digits": (8, None), "fashion_mnist": (3, 12000)}


def run(dataset="auto", epochs=None, batch_size=64, max_train=None, num_experts=4, verbose=1):
    name, (x_train, y_train), (x_test, y_test) = load_offline_dataset(dataset)
    default_epochs, default_max_train = DEFAULT_SCHEDULE[name]
    epochs = epochs or default_epochs
    max_train = max_train or default_max_train
    if max_train:
        x_train, y_train = x_train[:max_train], y_train[:max_train]
    image_size = 28 if name == "fashion_mnist" else 32
    x_train, x_test = _prepare(x_train, image_size), _prepare(x_test, image_size)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}: CondConv demo on "
        f"{name} ({len(x_train)} train / {len(x_test)} test images, {image_size}x{image_size})"
    )
    model = build_demo_model(image_size, num_classes, num_experts=num_experts)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if verbose:
        model.summary()
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs,
        validation_data=(x_test, y_test), verbose=verbose,
    )
    seconds = time.perf_counter() - start
    # The last epoch's validation already evaluated the final weights on the test set.
    loss, accuracy = history.history["val_loss"][-1], history.history["val_accuracy"][-1]
    print(
        f"Test accuracy after {epochs} epoch(s): {accuracy:.4f} (loss {loss:.4f}); "
        f"training took {seconds:.1f} s."
    )
    return model, history, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 8 on digits, 3 on Fashion-MNIST")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None,
                        help="use only the first N training images "
                             "(default: all digits, 12000 Fashion-MNIST images)")
    parser.add_argument("--num-experts", type=int, default=4)
    args = parser.parse_args(argv)
    run(args.dataset, args.epochs, args.batch_size, args.max_train, args.num_experts)


if __name__ == "__main__":
    main()
