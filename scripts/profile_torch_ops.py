"""Where CondConv-EfficientNet-B0's extra time goes on torch, op by op.

    python scripts/profile_torch_ops.py [--batch 32] [--calls 3] [--top 30] [--train]

Eager `torch.no_grad()` inference, as `keras-dynconv bench` runs it. Both models are
called once to warm up, then `--calls` times each in turns under `torch.profiler`; the
self CPU time of every (op, input shapes) pair is averaged over the calls. Prints each
model's total and the pairs whose time differs most between the models (CondConv minus
static). Identical layers of the two models also differ by a few ms from call to call:
memory-bound ops pay page faults that depend on the allocator's state. `--train` profiles
a forward (`training=True`) and backward pass of the sum of the outputs instead, the
optimizer's update left out.
"""

import argparse
import collections
import os

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity  # noqa: E402
from torch.profiler import profile  # noqa: E402

from keras_dynconv import zoo  # noqa: E402


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--num-experts", type=int, default=8)
    parser.add_argument("--train", action="store_true",
                        help="profile forward and backward passes, not inference")
    args = parser.parse_args()
    images = torch.from_numpy(
        np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype("float32")
    )
    static = zoo.efficientnet_b0(weights=None)
    dynamic = zoo.condconv_efficientnet_b0(weights=None, num_experts=args.num_experts)
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
