"""Zoo models on torch: the direct calls' graph walked by Keras against the kept plan.

    python scripts/bench_graph_plan.py
        [--models resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0]
        [--batch-sizes 1,32] [--repeats 21] [--dtype-policy mixed_bfloat16]

Each zoo model, inference under `torch.no_grad()` with the direct calls, its graph
walked by `keras_dynconv.zoo.graph_plan.run` and by Keras' `_run_through_graph`, in
turns in one process; outputs checked equal first. Median ms of `--repeats` calls.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from layer_swap_ab import compare_attribute_values  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv.zoo import graph_plan  # noqa: E402

if __name__ == "__main__":
    compare_attribute_values(
        __doc__.splitlines()[0], graph_plan, "run",
        lambda model, inputs, operation_fn: model._run_through_graph(
            inputs, operation_fn=operation_fn
        ),
        ("Keras' walk", "kept plan"),
        "resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0",
    )
