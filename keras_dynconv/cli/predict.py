"""`keras-dynconv predict MODEL IMAGE...`: top-k ImageNet classes of PNG/JPEG files."""

import argparse
import json
import os

from keras_dynconv.cli.common import add_model_arg_flag

EXAMPLES = """examples:
  keras-dynconv predict efficientnet_lite0 cat.jpg coffee.png
  keras-dynconv predict condconv_efficientnet_b0 cat.jpg --weights imagenet-timm \\
      --model-arg num_experts=8 --top 3
  keras-dynconv predict efficientnet_b0 photos/*.jpg --weights my_model.weights.h5 --json

Each image is read as RGB and resized (bilinear, whole image, no crop) to the model's
input size; the model normalises its own input. Class names are ImageNet-1k's, shipped
with the package."""


def add_parser(subparsers):
    help_text = "top-k ImageNet classes of PNG/JPEG images"
    parser = subparsers.add_parser(
        "predict", help=help_text, description=help_text, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="zoo model name (see `keras-dynconv list`)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    parser.add_argument("--weights", default="imagenet",
                        help="registered weights name or a .weights.h5 file (default imagenet)")
    add_model_arg_flag(parser)
    parser.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def read_image(path, size):
    """`[size, size, 3]` float32 RGB in [0, 255] from a PNG/JPEG file."""
    import keras
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such image file: {path!r}")
    try:
        image = keras.utils.load_img(path, color_mode="rgb")
    except ImportError:
        raise ValueError(
            "Reading images needs Pillow: pip install 'keras-dynconv[images]'"
        ) from None
    except Exception as error:  # PIL's UnidentifiedImageError and friends
        raise ValueError(f"Cannot read {path!r} as an image: {error}") from None
    pixels = np.asarray(image, dtype="float32")[None]
    resized = keras.ops.image.resize(
        pixels, (size, size), interpolation="bilinear", antialias=False
    )
    return keras.ops.convert_to_numpy(resized)[0]


def predict_files(model, paths, top=5, batch_size=8):
    """`{path: [(class index, name, probability), ...]}` for ImageNet classifier
    `model` (1000 softmax outputs)."""
    import keras
    import numpy as np

    from keras_dynconv.data.imagenet_labels import NUM_CLASSES
    from keras_dynconv.data.imagenet_labels import decode_predictions

    if model.output_shape[-1] != NUM_CLASSES:
        raise ValueError(
            f"predict names ImageNet's {NUM_CLASSES} classes; model '{model.name}' has "
            f"{model.output_shape[-1]} outputs"
        )
    size = model.input_shape[1]
    results = {}
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = np.stack([read_image(path, size) for path in chunk])
        outputs = keras.ops.convert_to_numpy(model(images, training=False))
        # Built with classifier_activation=None, a zoo model returns logits.
        if not np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
            outputs = keras.ops.convert_to_numpy(keras.ops.softmax(outputs, axis=-1))
        results.update(zip(chunk, decode_predictions(outputs, top=top)))
    return results


def run(args):
    from keras_dynconv import zoo
    from keras_dynconv.zoo.registry import model_entry

    if args.top < 1 or args.batch_size < 1:
        raise ValueError("--top and --batch-size must be positive integers")
    entry = model_entry(args.model)
    if entry.task != "classification":
        raise ValueError(f"predict needs an ImageNet classifier; {args.model} is a "
                         f"{entry.task} model")
    for path in args.images:  # fail before building anything
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such image file: {path!r}")
    try:
        model = zoo.get_model(args.model, weights=args.weights, **dict(args.model_arg))
    except TypeError as error:
        raise ValueError(str(error)) from None
    results = predict_files(model, args.images, top=args.top, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({path: [{"class": i, "name": n, "probability": p}
                                 for i, n, p in top] for path, top in results.items()},
                         indent=2))
        return results
    for path, top in results.items():
        print(path)
        for rank, (index, name, probability) in enumerate(top, 1):
            print(f"  {rank}. {name:<28} {100 * probability:5.1f}%  (class {index})")
    return results
