"""Export zoo models for deployment: TF SavedModel, LiteRT (TFLite), ONNX, torch.export.

`export_model` is `model.export` traced inside `keras_dynconv.ops.portable()`: the
per-example convolutions of dynamic layers become sums over kernel taps, because ONNX
and TFLite converters refuse a convolution whose kernel is computed per batch. Then it
runs the artefact on a fixed batch with the format's own runtime and compares its
outputs with the Keras model's (`ExportResult.max_abs_difference`).

| format | file | Keras backends | checked with |
| --- | --- | --- | --- |
| `tf_saved_model` | a folder | tensorflow, jax | `tf.saved_model.load(path).serve` |
| `litert` | `.tflite` | tensorflow | `tf.lite.Interpreter` (or `ai_edge_litert`) |
| `onnx` | `.onnx` | tensorflow (tf2onnx), torch, jax | `onnxruntime` |
| `torch` | `.pt2` | torch | `torch.export.load(path).module()` |

Example:
>>> model = zoo.condconv_mobilenet_v2(weights=None)
>>> result = export_model(model, "cc_mbv2.tflite")  # doctest: +SKIP
>>> result.max_abs_difference < 1e-4  # doctest: +SKIP
True
"""

import dataclasses
import os

import keras
import numpy as np

from keras_dynconv.ops.portability import portable

FORMATS = ("tf_saved_model", "litert", "onnx", "torch")
SUFFIXES = {".tflite": "litert", ".onnx": "onnx", ".pt2": "torch"}
BACKENDS = {
    "tf_saved_model": ("tensorflow", "jax"),
    "litert": ("tensorflow",),
    "onnx": ("tensorflow", "torch", "jax"),
    "torch": ("torch",),
}
# Exported graphs run the same float32 math in another order (XNNPACK, onnxruntime's
# fused kernels): differences stay near float32 rounding, relative to the outputs' size.
DEFAULT_TOLERANCE = 1e-4


@dataclasses.dataclass
class ExportResult:
    """What `export_model` wrote and how close the artefact's outputs came.

    Attributes:
        path: the file or folder written.
        format: one of `FORMATS`.
        max_abs_difference: max |artefact - Keras| over the check batch (None when
            `check=False`).
        batch_shape: the shape of the check batch.

    Example:
    >>> ExportResult("model.onnx", "onnx", 3e-7, (2, 224, 224, 3)).format
    'onnx'
    """

    path: str
    format: str
    max_abs_difference: float = None
    batch_shape: tuple = None


def format_for_path(path):
    """The export format a path asks for: by suffix, a folder is a SavedModel.

    Example:
    >>> format_for_path("cc_b0.tflite"), format_for_path("exported/cc_b0")
    ('litert', 'tf_saved_model')
    """
    for suffix, name in SUFFIXES.items():
        if str(path).endswith(suffix):
            return name
    if os.path.splitext(str(path))[1]:
        raise ValueError(
            f"Cannot tell the export format of {str(path)!r}: use a folder (SavedModel) "
            f"or one of {sorted(SUFFIXES)}, or pass format="
        )
    return "tf_saved_model"


def _check_format(format, path):
    format = format or format_for_path(path)
    if format not in FORMATS:
        raise ValueError(f"Invalid value for argument `format`: {format!r}. Expected one "
                         f"of {list(FORMATS)}")
    backend = keras.backend.backend()
    if backend not in BACKENDS[format]:
        raise ValueError(
            f"Export to {format} runs on the {' or '.join(BACKENDS[format])} backend; "
            f"this process runs {backend}. Set KERAS_BACKEND before importing keras."
        )
    return format


def _input_spec(model, batch_size):
    return [keras.InputSpec(shape=(batch_size,) + tuple(model.input_shape[1:]), dtype="float32")]


def _run_saved_model(path, images):
    import tensorflow as tf

    artefact = tf.saved_model.load(path)  # referenced until `serve` returns: it owns the variables
    return np.asarray(artefact.serve(images))


def _tflite_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


def _run_litert(path, images):
    interpreter = _tflite_interpreter(path)
    interpreter.allocate_tensors()
    (input_details,), (output_details,) = (interpreter.get_input_details(),
                                           interpreter.get_output_details())
    interpreter.set_tensor(input_details["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(output_details["index"])


def _run_onnx(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _run_torch(path, images):
    import torch

    program = torch.export.load(path)
    with torch.no_grad():
        return program.module()(torch.from_numpy(images)).detach().cpu().numpy()


RUNNERS = {"tf_saved_model": _run_saved_model, "litert": _run_litert, "onnx": _run_onnx,
           "torch": _run_torch}


def run_exported(path, images, format=None):
    """Outputs of the exported artefact at `path` on `images` (NumPy), with the
    format's own runtime.

    Example:
    >>> logits = run_exported("cc_b0.onnx", np.zeros((1, 224, 224, 3)))  # doctest: +SKIP
    """
    format = format or format_for_path(path)
    return RUNNERS[format](str(path), np.ascontiguousarray(images, dtype="float32"))


def export_model(model, path, format=None, batch_size=None, check=True,
                 tolerance=DEFAULT_TOLERANCE, seed=0, verbose=False, **kwargs):
    """Exports `model` to `path` with portable operations, then checks the artefact.

    Args:
        model: a Keras model with one image input (every zoo classifier).
        path: a folder (`tf_saved_model`), or a `.tflite`, `.onnx` or `.pt2` file.
        format: one of `FORMATS`; default from `path` (`format_for_path`).
        batch_size: a fixed batch size for the exported graph. Default: dynamic,
            except for `litert` and `torch`, which get 1 (TFLite on phones runs one
            image at a time; torch.export needs a static shape).
        check: run the artefact on a random batch and compare with the model.
        tolerance: the largest allowed |artefact - Keras| difference, in units of
            `max(1, max |Keras outputs|)`; a larger one raises (the artefact stays
            for inspection).
        seed: of the random [0, 255] check batch.
        verbose: Keras' export messages.
        **kwargs: passed to `model.export` (e.g. `opset_version`, LiteRT's
            `optimizations`).

    Returns:
        An `ExportResult`.

    Raises:
        ValueError: for a format this backend cannot write, or an unknown suffix.
        AssertionError: when the artefact's outputs differ by more than allowed.

    Example:
    >>> result = export_model(zoo.condconv_mobilenet_v2(), "cc_mbv2.onnx")  # doctest: +SKIP
    >>> result.format, result.max_abs_difference < 1e-4  # doctest: +SKIP
    ('onnx', True)
    """
    format = _check_format(format, path)
    path = str(path)
    if batch_size is None and format in ("litert", "torch"):
        batch_size = 1
    signature = _input_spec(model, batch_size)
    with portable():
        model.export(path, format=format, verbose=verbose, input_signature=signature,
                     **kwargs)
    result = ExportResult(path=path, format=format)
    if not check:
        return result
    shape = (batch_size or 2,) + tuple(model.input_shape[1:])
    images = np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    received = np.asarray(run_exported(path, images, format))
    if received.shape != expected.shape:
        raise AssertionError(f"{path}: output shape {received.shape}, the model's is "
                             f"{expected.shape}")
    result.max_abs_difference = float(np.max(np.abs(received - expected)))
    result.batch_shape = shape
    allowed = tolerance * max(1.0, float(np.max(np.abs(expected))))
    if result.max_abs_difference > allowed:
        raise AssertionError(
            f"{path}: outputs differ from the Keras model's by up to "
            f"{result.max_abs_difference:.3g} (allowed {allowed:.3g})"
        )
    return result
