"""Writes live timm references: weights, input images and timm's logits, per model.

Runs in the optional timm environment only (torch, timm, numpy, safetensors; never
tensorflow or keras, which segfault when imported before torch there)::

    bash scripts/setup-timm-venv.sh
    .venv-timm/bin/python scripts/timm_reference.py --out DIR tf_efficientnet_b0 ...

tests/timm_live/ runs it once per session and checks our zoo models against the files.
For each MODEL it writes

* ``DIR/MODEL.safetensors``: the model's ``state_dict`` (``safetensors.torch.save_file``;
  PyTorch layouts, ``num_batches_tracked`` included, as a real timm checkpoint);
* ``DIR/MODEL.npz``: ``images`` (raw [0, 255] RGB pixels, NHWC float32), ``logits``
  (timm's eval-mode float32 logits for them), ``logits_float64`` (the same model run in
  float64: the float32 round-off floor), ``mean`` / ``std`` (timm's default_cfg, of
  [0, 1] pixels), ``trainable_params`` / ``non_trainable_params`` (``numel`` of the
  parameters / of the buffers except ``num_batches_tracked``), provenance strings and the
  settings below.

The weights
-----------
``timm.create_model(name, pretrained=False)`` (timm's own initialisation, nothing is
downloaded) under ``torch.manual_seed(seed)``, then:

1. every BatchNorm gets non-trivial statistics and affine parameters from a torch
   generator seeded with ``seed``: running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5),
   weight ~ U(0.5, 1.5), bias ~ N(0, 0.05) (fresh timm BNs are the identity: zero mean,
   unit variance, weight 1, bias 0, which would hide a mix-up of the four tensors);
2. weights are rescaled with one forward pass over the reference images, in execution
   order (as LSUV, Mishkin & Matas 2016): each bias-free convolution (``Conv2d``,
   ``Conv2dSame``, ``CondConv2d``) is divided by a scalar so that its output has standard
   deviation 0.4 (swish networks) or 1.0 (ReLU networks) over the whole batch, and the
   classifier so that the logits have standard deviation 1. Squeeze-excite convolutions
   (they have biases) and the CondConv routing keep timm's initialisation.

Why step 2: with timm's initialisation and such BN statistics, eval-mode BatchNorm does
not normalise, and measured on 2 images of 96x96 (seed 0):

* tf_efficientnet_b0 / _b1 / _cc_b0_4e lose the input with depth: logits std ~0.06 and
  the two images' logits differ by only ~1e-4 (max) -- about the test tolerance, so a
  port that ignored its input would pass;
* tf_efficientnet_cc_b0_8e / _cc_b1_8e explode (logits std ~250 / ~5e5; float32 and
  float64 runs of timm itself differ by 0.02 / 1.7e3): the mixed kernel sum_e r_e W_e
  of 8 experts with routing ~0.5 is sqrt(8) / 2 times larger than one expert.

A fixed gain per model sits on a cliff between those two regimes (all weights of
tf_efficientnet_b0 times 1.0: fades; 1.2: fine; 1.4: logits std 1.5e5). Rescaling to
unit variance keeps the signal but is mildly chaotic for the swish + squeeze-excite
networks: float32 round-off grows to ~5e-5..2e-4 of the logits' std for the 8-expert
models. A standard deviation of 0.4 keeps both in check for them (scan over 0.3..1.0
and 3 seeds): the two images' logits differ by 0.2..0.5 of their std on average, and
timm's float32 logits stay within ~1e-5 of its float64 run. The ReLU models
(efficientnet_lite0, semnasnet_100) are not chaotic (round-off ~3e-6 at 1.0) but keep
less of the input at 0.4 (the images differ by ~0.05..0.1 std), so they use 1.0
(0.12..0.2). Every run checks this (check_meaningful) and fails rather than write a
reference that could not tell a correct port from a broken one.

The images
----------
``numpy.random.default_rng(seed).integers(0, 256, (batch, size, size, 3))`` as float32:
raw pixels, as our zoo models take them (they normalise inside). timm gets
``(images / 255 - mean) / std`` in float32 with its default_cfg mean and std,
transposed to NCHW.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np
import safetensors
import safetensors.torch
import timm
import torch
from timm.layers import CondConv2d

# Target standard deviation of every bias-free convolution's output (see the docstring):
# smaller in swish networks, which turn chaotic (round-off grows with depth) at 1.0.
SWISH_CONV_OUTPUT_STD = 0.4
RELU_CONV_OUTPUT_STD = 1.0
LOGITS_STD = 1.0
# A reference is usable only if the two images' logits differ by at least this fraction
# of the logits' std (mean over classes) ...
MIN_IMAGE_DIFFERENCE = 0.05
# ... and timm's own float32 round-off (max |float32 - float64| logits) stays below this,
# well under the tests' absolute tolerance of 1e-4 on logits of std ~1.
MAX_FLOAT32_ROUND_OFF = 3e-5


def randomise_batch_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.05)


def conv_output_std(model: torch.nn.Module) -> float:
    swish = any(isinstance(module, torch.nn.SiLU) for module in model.modules())
    return SWISH_CONV_OUTPUT_STD if swish else RELU_CONV_OUTPUT_STD


def rescale_weights(model: torch.nn.Module, inputs: torch.Tensor, conv_std: float) -> int:
    """Rescales convolutions and the classifier in one pass (step 2 of the docstring).

    Each hook runs right after its module, so every module is measured on inputs that
    already come from the rescaled modules before it. Returns how many were rescaled.
    """
    classifier = model.get_classifier()

    def rescale(module, args, output):
        target = LOGITS_STD if module is classifier else conv_std
        factor = output.std() / target
        module.weight.div_(factor)
        if module.bias is not None:  # only the classifier's; out = W x + b stays exact
            module.bias.div_(factor)
        return output / factor

    handles = [
        module.register_forward_hook(rescale)
        for module in model.modules()
        if module is classifier
        or (isinstance(module, (torch.nn.Conv2d, CondConv2d)) and module.bias is None)
    ]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return len(handles)


def make_images(seed: int, batch: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, size, size, 3)).astype(np.float32)


def timm_inputs(images: np.ndarray, mean, std) -> torch.Tensor:
    normalised = (images / np.float32(255) - np.asarray(mean, np.float32)) / (
        np.asarray(std, np.float32))
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def check_meaningful(name: str, logits: np.ndarray, logits_float64: np.ndarray) -> dict:
    """Fails unless the logits are finite, depend on the image and resist round-off."""
    logits_std = float(logits.astype(np.float64).std(axis=1).mean())
    image_difference = float(np.abs(logits[0] - logits[1]).astype(np.float64).mean())
    round_off = float(np.abs(logits - logits_float64).max())
    stats = dict(
        logits_std=logits_std,
        image_difference=image_difference / logits_std,
        float32_round_off=round_off,
    )
    problems = []
    if not np.all(np.isfinite(logits)):
        problems.append("logits are not finite")
    if image_difference < MIN_IMAGE_DIFFERENCE * logits_std:
        problems.append(f"the images' logits differ by only {image_difference:.3g}")
    if round_off > MAX_FLOAT32_ROUND_OFF:
        problems.append(f"float32 round-off {round_off:.3g} > {MAX_FLOAT32_ROUND_OFF}")
    if problems:
        raise RuntimeError(f"{name}: unusable reference: {'; '.join(problems)} ({stats})")
    return stats


def write_reference(name: str, out_dir: str, seed: int, batch: int, size: int) -> dict:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    randomise_batch_norms(model, torch.Generator().manual_seed(seed))
    cfg = model.pretrained_cfg
    images = make_images(seed, batch, size)
    inputs = timm_inputs(images, cfg["mean"], cfg["std"])
    conv_std = conv_output_std(model)
    rescaled = rescale_weights(model, inputs, conv_std)

    with torch.no_grad():
        logits = model(inputs).numpy().astype(np.float32)
        model_float64 = copy.deepcopy(model).double()
        logits_float64 = model_float64(inputs.double()).numpy()
    stats = check_meaningful(name, logits, logits_float64)

    state_dict = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    safetensors.torch.save_file(
        state_dict, os.path.join(out_dir, f"{name}.safetensors"), metadata={"model": name})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    non_trainable = sum(
        b.numel() for key, b in model.named_buffers() if not key.endswith("num_batches_tracked"))
    np.savez(
        os.path.join(out_dir, f"{name}.npz"),
        model=np.array(name),
        timm_version=np.array(timm.__version__),
        torch_version=np.array(torch.__version__),
        images=images,
        logits=logits,
        logits_float64=logits_float64,
        mean=np.asarray(cfg["mean"], np.float64),
        std=np.asarray(cfg["std"], np.float64),
        num_classes=np.array(model.num_classes),
        trainable_params=np.array(trainable),
        non_trainable_params=np.array(non_trainable),
        seed=np.array(seed),
        conv_output_std=np.array(conv_std),
        rescaled_modules=np.array(rescaled),
    )
    return dict(stats, trainable_params=trainable, non_trainable_params=non_trainable)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("models", nargs="+", metavar="MODEL", help="timm model names")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2, help="images (at least 2)")
    parser.add_argument("--size", type=int, default=96, help="image height and width")
    args = parser.parse_args(argv)
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        raise RuntimeError("do not import tensorflow or keras in the timm environment")
    if args.batch < 2:
        parser.error("--batch must be at least 2: the images' logits must differ")
    os.makedirs(args.out, exist_ok=True)
    for name in args.models:
        stats = write_reference(name, args.out, args.seed, args.batch, args.size)
        print(
            f"{name}: params {stats['trainable_params']:,} + buffers "
            f"{stats['non_trainable_params']:,}; logits std {stats['logits_std']:.3f}, "
            f"images differ by {stats['image_difference']:.3f} std, float32 round-off "
            f"{stats['float32_round_off']:.2g} (timm {timm.__version__}, "
            f"safetensors {safetensors.__version__})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
