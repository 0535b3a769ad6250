"""`keras-dynconv export MODEL OUTPUT`: a zoo model as a deployment artefact, checked."""

import argparse

from keras_dynconv.cli.common import add_model_arg_flag

EXAMPLES = """examples:
  KERAS_BACKEND=tensorflow keras-dynconv export condconv_efficientnet_b0 cc_b0.tflite \\
      --weights imagenet-timm --model-arg num_experts=8
  KERAS_BACKEND=tensorflow keras-dynconv export condconv_mobilenet_v2 saved/cc_mbv2
  KERAS_BACKEND=torch keras-dynconv export efficientnet_lite0 lite0.onnx
  KERAS_BACKEND=torch keras-dynconv export condconv_efficientnet_b0 cc_b0.pt2 --batch-size 8
  keras-dynconv export my_model.keras my_model.onnx     # a saved .keras file works too

Formats by OUTPUT: a folder is a TF SavedModel (tensorflow or jax backend), .tflite is
LiteRT (tensorflow), .onnx is ONNX (tensorflow, torch, jax), .pt2 is torch.export
(torch). The artefact is run once with its own runtime (TensorFlow, the TFLite
interpreter, onnxruntime, torch) and compared with the Keras model."""


def add_parser(subparsers):
    help_text = "export a model to SavedModel / LiteRT (TFLite) / ONNX / torch.export, checked"
    parser = subparsers.add_parser(
        "export", help=help_text, description=help_text, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="zoo model name, or a .keras file")
    parser.add_argument("output", help="a folder (SavedModel) or a .tflite, .onnx or .pt2 file")
    parser.add_argument("--weights", default=None,
                        help="registered weights name or a .weights.h5 file (default: none)")
    add_model_arg_flag(parser)
    parser.add_argument("--format", default=None,
                        choices=("tf_saved_model", "litert", "onnx", "torch"),
                        help="default: from OUTPUT")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="a fixed batch size (default: dynamic; 1 for .tflite and .pt2)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the artefact against the Keras model")
    parser.set_defaults(run=run)


def load_or_build(name, weights=None, arguments=None):
    """A zoo model by name (with `weights` and builder `arguments`) or a `.keras` file."""
    import keras

    from keras_dynconv import zoo

    if name.endswith(".keras"):
        if weights or arguments:
            raise ValueError("--weights and --model-arg apply to zoo models, not .keras files")
        return keras.saving.load_model(name)
    try:
        return zoo.get_model(name, weights=weights, **dict(arguments or {}))
    except TypeError as error:
        raise ValueError(str(error)) from None


def run(args):
    from keras_dynconv.export import export_model

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError("--batch-size must be a positive integer")
    model = load_or_build(args.model, args.weights, args.model_arg)
    result = export_model(model, args.output, format=args.format, batch_size=args.batch_size,
                          check=not args.no_check)
    print(f"wrote {result.path} ({result.format})")
    if result.max_abs_difference is not None:
        print(f"checked on a batch of shape {result.batch_shape}: outputs within "
              f"{result.max_abs_difference:.2e} of the Keras model's")
    return result
