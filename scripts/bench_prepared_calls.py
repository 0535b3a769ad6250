"""Zoo models on torch: static layers' direct calls against their prepared functions.

    python scripts/bench_prepared_calls.py
        [--models resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0]
        [--batch-sizes 1,32] [--repeats 21] [--dtype-policy mixed_bfloat16]

Each zoo model, inference under `torch.no_grad()`, with
`keras_dynconv.layers.prepared_calls` running the static convolutions and
normalisations through their kept functions, and without (their `call`, as
`direct_calls` calls them), in turns in one process; outputs checked equal first.
Median ms of `--repeats` calls.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from layer_swap_ab import compare_attribute_values  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv.layers import prepared_calls  # noqa: E402

if __name__ == "__main__":
    compare_attribute_values(
        __doc__.splitlines()[0], prepared_calls, "call", lambda layer, inputs: None,
        ("each layer's call", "prepared"),
        "resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0",
    )
