"""Forward + backward time of every layer of EfficientNet-B0 and CondConv-EfficientNet-B0.

    python scripts/profile_tf_layers.py [--batch 64] [--repeats 3] [--forward]

TensorFlow without XLA, as Keras trains on a CPU. Each layer is called on random
inputs of the shapes it sees in the model, in its own `tf.function`, with the gradient
of the sum of its output with respect to its floating-point inputs and its trainable
weights; median of `--repeats` calls after one warm-up call. Prints the time per layer
type for both models, then each dynamic layer of the CondConv model against the static
layer of the same name. Layers timed alone, outside the model: the sums are close to,
not equal to, a training step (no optimizer, other memory state). `--forward` times
inference calls instead (`training=False`, no gradient), as `model.predict` runs them.
"""

import argparse
import collections
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv import zoo  # noqa: E402


def _concrete(value, batch):
    if isinstance(value, keras.KerasTensor):
        return tf.random.uniform((batch,) + tuple(value.shape[1:]), dtype=value.dtype)
    return value


def layer_gradient_step(layer, batch, forward_only=False):
    """A `tf.function` computing the layer's input and weight gradients on random inputs
    (with `forward_only`, its inference output)."""
    node = layer._inbound_nodes[0]
    args = tf.nest.map_structure(lambda v: _concrete(v, batch), node.arguments.args)
    kwargs = tf.nest.map_structure(lambda v: _concrete(v, batch), node.arguments.kwargs)
    kwargs.pop("training", None)
    inputs = [
        t for t in tf.nest.flatten((args, kwargs))
        if isinstance(t, tf.Tensor) and t.dtype.is_floating
    ]

    @tf.function
    def step():
        if forward_only:
            return layer(*args, **kwargs, training=False)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(*args, **kwargs, training=True)
            loss = tf.reduce_sum(tf.nest.flatten(outputs)[0])
        return tape.gradient(loss, inputs + list(layer.trainable_variables))

    return step


def layer_times(model, batch, repeats, forward_only=False):
    """`{layer name: (layer type, milliseconds)}` in the model's order."""
    return {
        layer.name: (
            type(layer).__name__,
            median_ms(layer_gradient_step(layer, batch, forward_only), repeats),
        )
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-experts", type=int, default=8)
    parser.add_argument("--forward", action="store_true",
                        help="time inference calls, not forward + backward")
    args = parser.parse_args()
    models = {
        "EfficientNet-B0": zoo.efficientnet_b0(weights=None),
        f"CondConv-EfficientNet-B0 ({args.num_experts}e)": zoo.condconv_efficientnet_b0(
            weights=None, num_experts=args.num_experts
        ),
    }
    times = {
        name: layer_times(model, args.batch, args.repeats, args.forward)
        for name, model in models.items()
    }
    (static_name, static), (dynamic_name, dynamic) = times.items()

    what = "inference call" if args.forward else "forward + backward"
    print(f"batch {args.batch}, {what} per layer, median of {args.repeats}\n")
    for name, rows in times.items():
        by_type = collections.Counter()
        for layer_type, ms in rows.values():
            by_type[layer_type] += ms
        print(f"{name}: {sum(by_type.values()):.0f} ms in all")
        for layer_type, ms in by_type.most_common():
            print(f"  {layer_type:28s} {ms:8.1f} ms")
    print(f"\n{'layer':18s} {'type':22s} {'static ms':>10s} {'dynamic ms':>11s} {'ratio':>6s}")
    for layer_name, (layer_type, ms) in dynamic.items():
        if layer_name in static and static[layer_name][0] != layer_type:
            static_ms = static[layer_name][1]
            print(f"{layer_name:18s} {layer_type:22s} {static_ms:10.1f} {ms:11.1f} "
                  f"{ms / static_ms:6.1f}")
    print(f"\n{dynamic_name} / {static_name}, sum over layers: "
          f"{sum(ms for _, ms in dynamic.values()) / sum(ms for _, ms in static.values()):.2f}")


if __name__ == "__main__":
    main()
