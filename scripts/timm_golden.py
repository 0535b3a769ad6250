"""Write golden files from timm to tests/golden/timm/<model>.json.

Run in the optional timm environment (never import tensorflow/keras there)::

    bash scripts/setup-timm-venv.sh && .venv-timm/bin/python scripts/timm_golden.py

Optionally pass model names to regenerate only those.

Every model is built with ``timm.create_model(name, pretrained=False)`` (no download),
its weights are overwritten with deterministic values that a NumPy-only test can rebuild
exactly, and its eval-mode logits for a deterministic input are stored.

Weight rule (weight_rule() below, also stored in each json as "weight_rule")
----------------------------------------------------------------------------
Iterate ``model.state_dict()`` in order, skipping entries whose name ends with
``num_batches_tracked``. The i-th remaining entry (i = 0, 1, ...; the index in the json's
"state_dict" list) with shape S gets ``rng = numpy.random.default_rng(seed=i)`` and:

* name ends ``running_var``  -> ``rng.uniform(0.5, 1.5, size=S)``
* name ends ``running_mean`` -> ``rng.normal(0.0, 0.1, size=S)``
* ``weight`` of a BatchNorm module (found by module type, ``torch.nn.modules.batchnorm
  ._BatchNorm``, which timm's BatchNormAct2d subclasses; these names are listed in the
  json as "batchnorm_params") -> ``rng.uniform(0.5, 1.5, size=S)``
* any name ending ``bias`` (BN, conv, linear) -> ``rng.normal(0.0, 0.05, size=S)``
* any other ``weight`` (Conv2d, Linear, timm CondConv2d) ->
  ``rng.normal(0.0, 1.0, size=S) * GAIN * math.sqrt(1.0 / fan_in)`` where
  fan_in = prod(S[1:]) for OIHW conv / [out, in] Linear weights, and, for timm's CondConv2d
  whose weight has shape [E, out * in/groups * kh * kw], fan_in = (in/groups) * kh * kw
  (from the module's in_channels, groups and kernel_size). The json's "fan_in" maps each
  such name to its fan_in. GAIN is per model (GAINS below; json "weight_gain").

All arithmetic is in float64 (NumPy's default; the product is evaluated left to right:
``(normal * GAIN) * sqrt(1/fan_in)``) and the result is cast with
``.astype(numpy.float32)`` at the end. The json's "state_dict_sums" holds, per entry, the
float64 sum of the float32 array (to check a rebuild without a model).

Why GAIN: eval-mode BatchNorm with made-up running statistics does not normalise, and
with GAIN = 1.0 the swish/SE EfficientNets lose the input signal with depth: their logits
are then almost pure functions of the biases/BN shifts (the two input images gave logits
equal to ~1e-6 relative), which would not test the convolutions. Larger gains make the
swish + SE models blow up quickly (and chaotically: float32 vs float64 disagree). The
GAINS were picked from a scan so that (checked on every run, see golden()): logits are
finite, the two images' logits differ by > 3% of the logits' std, and float32 logits
agree with a float64 run of the same model to < 1e-4 of the logits' std (the json's
"float64_rel_err", typically ~1e-6..1e-5: a tolerance guide for ports). CondConv models
with 8 experts need a smaller gain than with 4 (the mixed kernel sum_e r_e W_e grows
with sqrt(E)).

Input rule (INPUT_RULE, stored as "input_rule")
-----------------------------------------------
``raw = numpy.random.default_rng(12345).uniform(0, 255, size=(2, 64, 64, 3))`` (NHWC,
float64), then ``x = raw.astype(numpy.float32) / numpy.float32(255)``,
``x = (x - mean) / std`` with mean/std the model's default_cfg mean/std as float32 arrays
of shape (3,) (all float32 arithmetic), then ``x.transpose(0, 3, 1, 2)`` to NCHW for timm.
The json records the input size (64x64), the sum of the normalised NHWC input
("input_sum") and the model's default_cfg input_size (which is not what was fed).

Logits: ``model.eval()`` under ``torch.no_grad()``, float32 on the CPU, all 1000 classes,
each rounded to 6 significant digits (``float(f"{v:.6g}")``), plus per-row argmax and
float64 sum of the unrounded row.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter

import numpy as np
import torch
import timm

# model name -> GAIN of the weight rule (see the module docstring for how these were chosen)
GAINS = {
    "tf_efficientnet_cc_b0_4e": 1.5,
    "tf_efficientnet_cc_b0_8e": 1.3,
    "tf_efficientnet_cc_b1_8e": 1.225,
    "efficientnet_lite0": 1.2,
    "tf_efficientnet_lite0": 1.2,
    "semnasnet_100": 1.2,
    "tf_efficientnet_b0": 1.45,
    "tf_efficientnet_b1": 1.35,
    "mobilenetv2_100": 1.2,
    "resnet50": 1.0,
}
MODELS = list(GAINS)

INPUT_SEED = 12345
BATCH = 2
H = W = 64


def weight_rule(gain: float) -> str:
    return (
        "Iterate state_dict in order, skipping names ending 'num_batches_tracked'; entry i "
        "(index in 'state_dict') with shape S uses rng = numpy.random.default_rng(seed=i). "
        "name ends 'running_var' -> rng.uniform(0.5, 1.5, size=S); 'running_mean' -> "
        "rng.normal(0.0, 0.1, size=S); 'weight' of a BatchNorm module (names in "
        "'batchnorm_params') -> rng.uniform(0.5, 1.5, size=S); any 'bias' -> "
        "rng.normal(0.0, 0.05, size=S); any other 'weight' (conv/linear/CondConv2d) -> "
        f"rng.normal(0.0, 1.0, size=S) * {gain!r} * sqrt(1.0 / fan_in) with fan_in = "
        "prod(S[1:]) for OIHW conv and [out, in] Linear weights, and (in_channels / groups) * "
        "kh * kw for timm CondConv2d weights of shape [E, out*in/groups*kh*kw] (fan_in per "
        "entry in 'fan_in'). The factor is the per-model 'weight_gain'. Computed in float64, "
        "then .astype(numpy.float32)."
    )


INPUT_RULE = (
    f"raw = numpy.random.default_rng({INPUT_SEED}).uniform(0, 255, size=({BATCH}, {H}, "
    f"{W}, 3)) (NHWC float64 pixels); x = raw.astype(numpy.float32) / numpy.float32(255); "
    "x = (x - mean) / std with mean, std = numpy.asarray(default_cfg mean/std, "
    "numpy.float32) (float32 arithmetic); timm is fed x.transpose(0, 3, 1, 2) (NCHW). "
    "'input_sum' = float64 sum of the normalised NHWC float32 x."
)


def _sig6(v: float) -> float:
    return float(f"{float(v):.6g}")


def _module_of(model: torch.nn.Module, name: str):
    mod_name = name.rpartition(".")[0]
    return model.get_submodule(mod_name) if mod_name else model


def _fan_in(module, shape) -> int:
    from timm.layers import CondConv2d

    if isinstance(module, CondConv2d):
        kh, kw = module.kernel_size
        fan = (module.in_channels // module.groups) * kh * kw
        assert shape[1] == module.out_channels * fan, (shape, module)
        return fan
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        assert len(shape) >= 2
        return int(math.prod(shape[1:]))
    raise TypeError(f"no fan_in rule for weight of {type(module).__name__}")


def deterministic_state(model: torch.nn.Module, gain: float):
    """Return (names, shapes, arrays, bn_names, fan_ins) following WEIGHT_RULE."""
    sd = model.state_dict()
    names, shapes, arrays, bn_names, fan_ins = [], [], [], [], {}
    i = 0
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            continue
        shape = tuple(t.shape)
        rng = np.random.default_rng(seed=i)
        module = _module_of(model, name)
        is_bn = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        leaf = name.rpartition(".")[2]
        if leaf == "running_var":
            a = rng.uniform(0.5, 1.5, size=shape)
        elif leaf == "running_mean":
            a = rng.normal(0.0, 0.1, size=shape)
        elif leaf == "weight" and is_bn:
            assert len(shape) == 1
            bn_names.append(name)
            a = rng.uniform(0.5, 1.5, size=shape)
        elif leaf == "bias":
            a = rng.normal(0.0, 0.05, size=shape)
        elif leaf == "weight":
            fan = _fan_in(module, shape)
            fan_ins[name] = fan
            a = rng.normal(0.0, 1.0, size=shape) * gain * math.sqrt(1.0 / fan)
        else:
            raise ValueError(f"no rule for state_dict entry {name} ({type(module).__name__})")
        names.append(name)
        shapes.append(list(shape))
        arrays.append(a.astype(np.float32))
        i += 1
    return names, shapes, arrays, bn_names, fan_ins


def make_input(mean, std) -> np.ndarray:
    raw = np.random.default_rng(INPUT_SEED).uniform(0, 255, size=(BATCH, H, W, 3))
    x = raw.astype(np.float32) / np.float32(255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    assert x.dtype == np.float32
    return x


def golden(name: str) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    model.eval()
    gain = GAINS[name]
    names, shapes, arrays, bn_names, fan_ins = deterministic_state(model, gain)
    sd = model.state_dict()
    new_sd = {k: torch.from_numpy(a) for k, a in zip(names, arrays)}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            new_sd[k] = v
    model.load_state_dict(new_sd, strict=True)
    # state_dict entries that are parameters vs buffers
    param_names = {n for n, _ in model.named_parameters()}

    cfg = dict(model.pretrained_cfg)
    x = make_input(cfg["mean"], cfg["std"])
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    logits = out.numpy().astype(np.float32)

    # float64 run of the same model: how far float32 round-off moves the logits
    with torch.no_grad():
        out64 = model.double()(torch.from_numpy(
            np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float64))).numpy()
    model.float()
    std = float(logits.astype(np.float64).std(axis=1).mean())
    f64_err = float(np.abs(logits - out64).max() / std)
    img_diff = float(np.abs(logits[0] - logits[1]).astype(np.float64).mean() / std)
    assert np.all(np.isfinite(logits)), name
    assert 0.05 < std < 100, (name, std)
    assert img_diff > 0.03, (name, img_diff)
    assert f64_err < 1e-4, (name, f64_err)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    non_trainable = sum(
        b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))

    bn_eps = sorted({float(m.eps) for m in model.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
    module_types = Counter(type(m).__name__ for m in model.modules())

    return {
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "model": name,
        "trainable_params": int(trainable),
        "non_trainable_params": int(non_trainable),
        "default_cfg": {
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "input_size": list(cfg["input_size"]),
            "interpolation": cfg.get("interpolation"),
            "crop_pct": cfg.get("crop_pct"),
            "classifier": cfg.get("classifier"),
            "first_conv": cfg.get("first_conv"),
            "num_classes": cfg.get("num_classes"),
        },
        "bn_eps": bn_eps,
        "module_types": dict(sorted(module_types.items())),
        "weight_rule": weight_rule(gain),
        "weight_gain": gain,
        "input_rule": INPUT_RULE,
        "input_shape_nhwc": [BATCH, H, W, 3],
        "input_sum": float(x.astype(np.float64).sum()),
        "state_dict": [[n, s] for n, s in zip(names, shapes)],
        "state_dict_is_param": [n in param_names for n in names],
        "state_dict_sums": [float(a.astype(np.float64).sum()) for a in arrays],
        "batchnorm_params": bn_names,
        "fan_in": fan_ins,
        "logits_shape": list(logits.shape),
        "logits": [[_sig6(v) for v in row] for row in logits],
        "logits_argmax": [int(i) for i in logits.argmax(axis=1)],
        "logits_sum": [float(row.astype(np.float64).sum()) for row in logits],
        "logits_std": [float(row.astype(np.float64).std()) for row in logits],
        "float64_rel_err": f64_err,
        "image_diff_rel": img_diff,
    }


def main(argv: list[str]) -> int:
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        raise RuntimeError("do not import tensorflow/keras in the timm environment")
    names = argv or MODELS
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "tests", "golden", "timm")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    for name in names:
        g = golden(name)
        path = os.path.join(out_dir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(g, f, separators=(",", ":"))
            f.write("\n")
        print(f"{name}: trainable={g['trainable_params']} "
              f"non_trainable={g['non_trainable_params']} argmax={g['logits_argmax']} "
              f"std={[round(s, 4) for s in g['logits_std']]} "
              f"f64err={g['float64_rel_err']:.2g} imgdiff={g['image_diff_rel']:.3g} "
              f"size={os.path.getsize(path) // 1024}KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
