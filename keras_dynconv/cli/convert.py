"""`keras-dynconv convert MODEL OUTPUT`: a published checkpoint as a Keras file.

The weights come from the registry (`--weights`, downloaded, checked and cached), a
timm state dict (`--from-timm`, `.pth` or `.safetensors`, read without torch) or an
official TensorFlow CondConv checkpoint (`--from-tf-checkpoint`: a prefix, a folder or
the published `.tar.gz`). The file is written, read back, and its outputs compared
with the model's before the command reports success.
"""

import argparse
import os
import tarfile
import tempfile

from keras_dynconv.cli.common import add_model_arg_flag

EXAMPLES = """examples:
  keras-dynconv convert condconv_efficientnet_b0 cc_b0_8e.keras --weights imagenet-official \\
      --model-arg num_experts=8
  keras-dynconv convert condconv_efficientnet_b0 cc_b0_4e.weights.h5 \\
      --from-timm tf_efficientnet_cc_b0_4e.safetensors --model-arg num_experts=4
  keras-dynconv convert condconv_efficientnet_b0 b0_8e.keras \\
      --from-tf-checkpoint efficientnet-condconv-b0-8e.tar.gz --model-arg num_experts=8

OUTPUT ending in .keras holds the architecture and weights (keras.saving.load_model);
.weights.h5 only the weights (build the same model, then load_weights)."""

OUTPUT_SUFFIXES = (".keras", ".weights.h5")
# Outputs of the written file against the converted model: float32 round trips exactly
# up to the order of operations of a fresh trace.
ROUND_TRIP_ATOL = 1e-5


def add_parser(subparsers):
    help_text = "published checkpoint -> .keras / .weights.h5, checked by reading it back"
    parser = subparsers.add_parser(
        "convert", help=help_text, description=help_text, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="zoo model name (see `keras-dynconv list`)")
    parser.add_argument("output", help="the file to write: *.keras or *.weights.h5")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="a registered weights name (see `keras-dynconv info MODEL`)")
    source.add_argument("--from-timm", metavar="FILE",
                        help="a timm state dict: .pth (torch.save) or .safetensors")
    source.add_argument("--from-tf-checkpoint", metavar="PATH",
                        help="an official TF checkpoint: prefix, folder, or .tar.gz")
    add_model_arg_flag(parser)
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    parser.set_defaults(run=run)


def _load_tf_checkpoint(model, path):
    from keras_dynconv.weights import load_tf_checkpoint
    from keras_dynconv.weights.pretrained import _checkpoint_dir

    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tempfile.TemporaryDirectory(prefix="keras-dynconv-convert-") as directory:
            with tarfile.open(path) as archive:
                archive.extractall(directory, filter="data")
            return load_tf_checkpoint(model, _checkpoint_dir(directory))
    return load_tf_checkpoint(model, path)


def convert(model_name, output, weights=None, from_timm=None, from_tf_checkpoint=None,
            arguments=None, force=False):
    """Builds `model_name`, loads the given weights, writes `output`, reads it back.

    Returns `(model, max_abs_difference)`: the largest difference between the
    written file's outputs and the model's on a fixed random batch.
    """
    import keras
    import numpy as np

    from keras_dynconv import zoo
    from keras_dynconv.weights import load_timm_state_dict
    from keras_dynconv.weights import read_state_dict

    if not output.endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"OUTPUT must end in .keras or .weights.h5, received {output!r}")
    if os.path.exists(output) and not force:
        raise ValueError(f"{output!r} exists; pass --force to overwrite it")
    for path in (from_timm, from_tf_checkpoint):
        if path is not None and not os.path.exists(path) and not os.path.exists(f"{path}.index"):
            raise FileNotFoundError(f"No such checkpoint: {path!r}")
    arguments = dict(arguments or {})
    try:
        model = zoo.get_model(model_name, weights=weights, **arguments)
    except TypeError as error:
        raise ValueError(str(error)) from None
    if from_timm is not None:
        load_timm_state_dict(model, read_state_dict(from_timm))
    elif from_tf_checkpoint is not None:
        _load_tf_checkpoint(model, from_tf_checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if output.endswith(".keras"):
        model.save(output)
        reloaded = keras.saving.load_model(output)
    else:
        model.save_weights(output)
        reloaded = zoo.get_model(model_name, **arguments)
        reloaded.load_weights(output)
    shape = (2,) + tuple(model.input_shape[1:])
    images = np.random.default_rng(0).uniform(0, 255, size=shape).astype("float32")
    expected = [keras.ops.convert_to_numpy(t)
                for t in keras.tree.flatten(model(images, training=False))]
    received = [keras.ops.convert_to_numpy(t)
                for t in keras.tree.flatten(reloaded(images, training=False))]
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, received))
    if difference > ROUND_TRIP_ATOL:
        os.remove(output)
        raise RuntimeError(
            f"{output} read back gives outputs up to {difference:.3g} away from the "
            f"converted model's (tolerance {ROUND_TRIP_ATOL}); the file was removed"
        )
    return model, difference


def run(args):
    source = (f"registered weights {args.weights!r}" if args.weights else
              f"timm state dict {args.from_timm}" if args.from_timm else
              f"TF checkpoint {args.from_tf_checkpoint}")
    model, difference = convert(
        args.model, args.output, weights=args.weights, from_timm=args.from_timm,
        from_tf_checkpoint=args.from_tf_checkpoint, arguments=dict(args.model_arg),
        force=args.force,
    )
    size = os.path.getsize(args.output) / 2**20
    print(f"{args.model} ({model.count_params():,} parameters) from {source}")
    print(f"wrote {args.output} ({size:.1f} MiB); read back, outputs within "
          f"{difference:.1e} of the converted model's")
    return args.output
