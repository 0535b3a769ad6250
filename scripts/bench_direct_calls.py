"""Zoo models on torch: layers called through Keras' `__call__` against direct calls.

    python scripts/bench_direct_calls.py
        [--models resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0]
        [--batch-sizes 1,32] [--repeats 21] [--dtype-policy mixed_bfloat16]

Each zoo model, inference under `torch.no_grad()`, with
`keras_dynconv.layers.direct_calls` taking its direct calls (the `ZooModel`'s layers
and the MoD blocks' inner layers) and with them turned off (every layer called through
`Layer.__call__`, as a plain functional model calls them), in turns in one process (so
that process-to-process noise does not enter the comparison); outputs checked equal
first. Median ms of `--repeats` calls.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from layer_swap_ab import compare_attribute_values  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv.layers import direct_calls  # noqa: E402

if __name__ == "__main__":
    compare_attribute_values(
        __doc__.splitlines()[0], direct_calls, "applies", lambda *args: False,
        ("through __call__", "direct calls"),
        "resnet50,resnet75_mod,efficientnet_b0,condconv_efficientnet_b0",
    )
