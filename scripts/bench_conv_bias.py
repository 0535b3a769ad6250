"""Convolution bias on torch: added by the convolution against added as Keras adds it.

    python scripts/bench_conv_bias.py [--models resnet50,resnet75_mod]
        [--batch-sizes 1,32] [--repeats 15]

Each zoo model, inference under `torch.no_grad()`, with `keras_dynconv.layers.Conv2D`
adding its bias inside the convolution (`keras_dynconv.ops.conv(..., bias=...)`) and
with Keras' `Conv2D.call` in its place (the same convolution on views, then the bias
reshaped and added as another pass over the output), called in turns in one process
(so that process-to-process noise does not enter the comparison); outputs checked
equal first. Median ms of `--repeats` calls.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from layer_swap_ab import compare_attribute_values  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv import layers  # noqa: E402

if __name__ == "__main__":
    compare_attribute_values(
        __doc__.splitlines()[0], layers.Conv2D, "call", keras.layers.Conv2D.call,
        ("bias added after", "bias in the convolution"), "resnet50,resnet75_mod",
        default_repeats=15,
    )
