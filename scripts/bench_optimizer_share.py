"""How much of a batch-1 training step is the optimizer's update, static vs CondConv B0.

    KERAS_BACKEND=tensorflow python scripts/bench_optimizer_share.py [--batch 1]

At batch 1 a CondConv step updates every expert's parameters for one image: the
SGD-with-momentum update of CondConv-EfficientNet-B0 (8 experts, 24.1M parameters)
reads and writes 4.5x the memory of EfficientNet-B0's (5.3M). This times the
forward + backward pass and the optimizer's update separately, each in a
`tf.function` (Keras' CPU default: no XLA), medians of `--repeats` calls.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def median_ms(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(model, batch, repeats):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    labels = rng.integers(0, 1000, batch)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_function = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(images, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def update(grads):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    grads = gradients()
    return (median_ms(lambda: [g.numpy() for g in gradients()[:1]], repeats),
            median_ms(lambda: update(grads), repeats))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("run with KERAS_BACKEND=tensorflow")
    from keras_dynconv import zoo

    for name, model in (("efficientnet_b0", zoo.efficientnet_b0()),
                        ("condconv_efficientnet_b0 (8e)",
                         zoo.condconv_efficientnet_b0(num_experts=8))):
        backward, update = measure(model, args.batch, args.repeats)
        print(f"{name}: {model.count_params() / 1e6:.1f}M parameters, forward + backward "
              f"{backward:.0f} ms, optimizer update {update:.0f} ms")


if __name__ == "__main__":
    main()
