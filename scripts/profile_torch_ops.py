"""Where CondConv-EfficientNet-B0's extra time goes on torch, op by op.

    python scripts/profile_torch_ops.py [--batch 32] [--calls 3] [--top 30] [--train]
    python scripts/profile_torch_ops.py --layers [--batch 32] [--calls 5] [--top 30]
        [--models resnet50,resnet75_mod]

Eager `torch.no_grad()` inference, as `keras-dynconv bench` runs it. Both models are
called once to warm up, then `--calls` times each in turns under `torch.profiler`; the
self CPU time of every (op, input shapes) pair is averaged over the calls. Prints each
model's total and the pairs whose time differs most between the models (CondConv minus
static). Identical layers of the two models also differ by a few ms from call to call:
memory-bound ops pay page faults that depend on the allocator's state. `--train` profiles
a forward (`training=True`) and backward pass of the sum of the outputs instead, the
optimizer's update left out.

`--layers` times each Keras layer's `call` (or its prepared function,
`keras_dynconv.layers.prepared_calls`) instead (no profiler: wall time, median over
the calls, both models called in turns), and prints the layers whose time differs most
from the layer of the same name in the other model, then the totals per layer class. The
profiler's own overhead, which grows with the number of ops, makes op-level differences
of identical layers look larger than they are; layer wall times do not have that bias. `--models
BASELINE,OTHER` compares two other zoo models layer by layer.
"""

import argparse
import collections
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity  # noqa: E402
from torch.profiler import profile  # noqa: E402

from keras_dynconv import zoo  # noqa: E402
from keras_dynconv.layers import prepared_calls  # noqa: E402


def inference(model, images):
    with torch.no_grad():
        model(images, training=False)


def forward_backward(model, images):
    model.zero_grad()
    torch.sum(model(images, training=True)).backward()


def op_times(model, images, calls, step=inference):
    """`Counter((op, input shapes) -> mean self CPU ms per call)`."""
    times = collections.Counter()
    for _ in range(calls):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as recorded:
            step(model, images)
        for event in recorded.key_averages(group_by_input_shape=True):
            times[(event.key, str(event.input_shapes))] += event.self_cpu_time_total / 1e3 / calls
    return times


def layer_times(static, dynamic, images, calls):
    """`{model: {layer name: median ms}}` of each layer's `call`, models called in turns."""
    times = {id(model): collections.defaultdict(list) for model in (static, dynamic)}
    # A static layer called direct may run its prepared function, not its `call`.
    samples_of = {
        id(layer): times[id(model)][layer.name]
        for model in (static, dynamic) for layer in model.layers
    }

    def timed_prepared(layer, inputs, *arguments, _prepared=prepared_calls.call):
        start = time.perf_counter()
        outputs = _prepared(layer, inputs, *arguments)
        # A convolution run with the layers folded into it counts as the convolution.
        key = id(getattr(layer, "convolution", layer))
        if outputs is not None and key in samples_of:
            samples_of[key].append(time.perf_counter() - start)
        return outputs

    prepared_calls.call = timed_prepared
    for model in (static, dynamic):
        for layer in model.layers:
            def timed(*args, _call=layer.call, _samples=times[id(model)][layer.name], **kwargs):
                start = time.perf_counter()
                outputs = _call(*args, **kwargs)
                _samples.append(time.perf_counter() - start)
                return outputs

            layer.call = timed
    for model in (static, dynamic):
        inference(model, images)
        for samples in times[id(model)].values():
            samples.clear()
    for _ in range(calls):
        for model in (static, dynamic):
            inference(model, images)
    return [{name: 1e3 * statistics.median(samples)
             for name, samples in times[id(model)].items() if samples}
            for model in (static, dynamic)]


def print_layer_times(static, dynamic, images, calls, top):
    static_ms, dynamic_ms = layer_times(static, dynamic, images, calls)
    print(f"inference, wall ms per call, median of {calls}: sum over layers "
          f"{static.name} {sum(static_ms.values()):.0f}, "
          f"{dynamic.name} {sum(dynamic_ms.values()):.0f}\n")
    print(f"{'other - base':>13s} {'other':>9s}  layer (class in {dynamic.name})")
    ranked = sorted(dynamic_ms, key=lambda name: -abs(dynamic_ms[name] - static_ms.get(name, 0)))
    for name in ranked[:top]:
        kind = type(dynamic.get_layer(name)).__name__
        print(f"{dynamic_ms[name] - static_ms.get(name, 0):+13.1f} {dynamic_ms[name]:9.1f}  "
              f"{name} ({kind})")
    by_class = collections.defaultdict(lambda: [0.0, 0.0])
    for column, (model, times) in enumerate(((static, static_ms), (dynamic, dynamic_ms))):
        for name, ms in times.items():
            by_class[type(model.get_layer(name)).__name__][column] += ms
    print(f"\n{'layer class':24s} {'base ms':>8s} {'other ms':>9s}")
    for kind, (static_total, dynamic_total) in sorted(by_class.items(), key=lambda kv: -max(kv[1])):
        print(f"{kind:24s} {static_total:8.1f} {dynamic_total:9.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--num-experts", type=int, default=8)
    parser.add_argument("--models", help="with --layers: BASELINE,OTHER zoo model names "
                        "(default: EfficientNet-B0 and CondConv-EfficientNet-B0)")
    parser.add_argument("--train", action="store_true",
                        help="profile forward and backward passes, not inference")
    parser.add_argument("--layers", action="store_true",
                        help="time each layer's call (inference) instead of profiling ops")
    args = parser.parse_args()
    images = torch.from_numpy(
        np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    )
    if args.models:
        if not args.layers:
            parser.error("--models works with --layers")
        static, dynamic = (zoo.get_model(name, weights=None) for name in args.models.split(","))
    else:
        static = zoo.efficientnet_b0(weights=None)
        dynamic = zoo.condconv_efficientnet_b0(weights=None, num_experts=args.num_experts)
    if args.layers:
        print_layer_times(static, dynamic, images, args.calls, args.top)
        return
    step = forward_backward if args.train else inference
    step(static, images)
    step(dynamic, images)
    static_times = op_times(static, images, args.calls, step)
    dynamic_times = op_times(dynamic, images, args.calls, step)
    what = "forward + backward" if args.train else "inference"
    print(f"batch {args.batch}, {what}, self CPU ms per call, mean of {args.calls}: "
          f"EfficientNet-B0 {sum(static_times.values()):.0f}, "
          f"CondConv-EfficientNet-B0 {sum(dynamic_times.values()):.0f}\n")
    print(f"{'CondConv - B0':>13s} {'CondConv':>9s}  op and input shapes")
    differences = {key: dynamic_times[key] - static_times[key]
                   for key in set(static_times) | set(dynamic_times)}
    ranked = sorted(differences.items(), key=lambda item: -abs(item[1]))
    for (op, shapes), difference in ranked[: args.top]:
        print(f"{difference:+13.1f} {dynamic_times[(op, shapes)]:9.1f}  {op} {shapes[:100]}")


if __name__ == "__main__":
    main()
