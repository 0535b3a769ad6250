"""Where EfficientNet-B0's and CondConv-EfficientNet-B0's time goes on TensorFlow without
XLA, op by op, inside the traced models (after Grappler's rewrites).

    python scripts/profile_tf_graph_ops.py [--batch 32] [--rounds 4] [--native 0|1]

Both models' forward passes, each a plain `tf.function` as `keras-dynconv bench --tf-xla
off` runs them, are called in turns under TensorFlow's profiler; the trace's op events
are summed per model and op type, and per layer. Prints both models' op types by time
(per call), then the layers whose time differs most. `--native 0` traces the CondConv
model with `KERAS_DYNCONV_NATIVE=0` (TensorFlow's own paths instead of
`keras_dynconv.ops.native_tensorflow`). Times under the profiler run 5-20% above
untraced ones; compare within one run. Unlike `profile_tf_layers.py`, which calls every
layer alone, this sees the graph as it runs: ops fused by Grappler, and the memory and
thread state the previous ops leave.
"""

import argparse
import collections
import glob
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_native_tensorflow_ab import traced  # noqa: E402  (scripts/ is on sys.path)
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from keras_dynconv import zoo  # noqa: E402


def op_times(trace_dir, calls):
    """`{model: Counter(op type -> ms per call)}` and `{model: Counter(layer -> ms)}`
    from the op events ("model/layer/...:OpType") of a profiler trace."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    by_type = collections.defaultdict(collections.Counter)
    by_layer = collections.defaultdict(collections.Counter)
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or "/" not in name:
                    continue
                node, op_type = name.rsplit(":", 1)
                model, layer = node.split("/")[:2]
                milliseconds = event.duration_ps / 1e9 / calls
                by_type[model][op_type] += milliseconds
                by_layer[model][layer.rsplit("_", 1)[0]] += milliseconds
    return by_type, by_layer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--native", choices=("0", "1"), default="1")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    images = tf.constant(
        np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    )
    forwards = [
        traced(zoo.efficientnet_b0(weights=None), images, native=True),
        traced(zoo.condconv_efficientnet_b0(weights=None), images, native=args.native == "1"),
    ]
    for _ in range(2):
        for forward in forwards:
            forward(images).numpy()
    with tempfile.TemporaryDirectory() as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        for _ in range(args.rounds):
            for forward in forwards:
                forward(images).numpy()
        tf.profiler.experimental.stop()
        by_type, by_layer = op_times(trace_dir, args.rounds)
    native = "on" if args.native == "1" else "off"
    print(f"batch {args.batch}, {args.rounds} rounds, native ops {native}; ms per call")
    for model, times in by_type.items():
        print(f"{model}: {sum(times.values()):.1f} ms in ops")
        for op_type, milliseconds in times.most_common(args.top):
            print(f"  {op_type:40s} {milliseconds:8.1f}")
    static, dynamic = by_type.keys()
    print(f"\nlayer                      {static[:12]:>12s} {dynamic[:12]:>12s}  difference")
    layers = set(by_layer[static]) | set(by_layer[dynamic])
    differences = {name: by_layer[dynamic][name] - by_layer[static][name] for name in layers}
    for name in sorted(layers, key=lambda n: -abs(differences[n]))[: 2 * args.top]:
        times = f"{by_layer[static][name]:12.2f} {by_layer[dynamic][name]:12.2f}"
        print(f"  {name:24s} {times}  {differences[name]:+8.2f}")


if __name__ == "__main__":
    main()
