"""`keras-dynconv train` and `keras-dynconv finetune`: model.fit with a recipe,
checkpoints, a final `.keras` file, and resumption after an interruption."""

import argparse
import inspect
import json
import os
import time

from keras_dynconv.cli.common import add_model_arg_flag

TRAIN_EXAMPLES = """examples:
  keras-dynconv train --model condconv_efficientnet_b0 --dataset imagenet2012 \\
      --data-dir ~/tensorflow_datasets --batch-size 1024 --epochs 350 --output-dir runs/cc-b0
  KERAS_BACKEND=jax keras-dynconv train --model condconv_mobilenet_v1 \\
      --model-arg alpha=0.25 --model-arg num_experts=32 --dataset cifar100 --image-size 64 \\
      --distribution data_parallel --output-dir runs/mnv1
  keras-dynconv train --model condconv_mobilenet_v2 --dataset digits --image-size 32 \\
      --epochs 3 --output-dir runs/digits     # offline, a few minutes on a CPU
Run the same command again after an interruption: it resumes at the last epoch."""

FINETUNE_EXAMPLES = """examples:
  keras-dynconv finetune --model condconv_efficientnet_lite0 --weights imagenet-upcycled \\
      --model-arg num_experts=4 --dataset digits --image-size 32 --epochs 4 --output-dir runs/ft
  keras-dynconv finetune --model efficientnet_b0 --weights imagenet --dataset oxford_flowers102 \\
      --data-dir ~/tensorflow_datasets --mode linear --epochs 10 --output-dir runs/flowers"""

OFFLINE_IMAGE_SIZE = 32
DEFAULT_IMAGE_SIZE = 224


def _add_common_flags(parser):
    parser.add_argument("--model", required=True, help="zoo model name (see keras_dynconv.zoo.list_models())")
    add_model_arg_flag(parser, help="extra builder argument, e.g. num_experts=4 (repeatable)")
    parser.add_argument("--dataset", required=True,
                        help="digits or fashion_mnist (offline), or a TFDS dataset of "
                        "keras_dynconv.data.DATASETS (imagenet2012, cifar10, ...)")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--download", action="store_true",
                        help="let TFDS download and prepare the dataset if missing")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (all devices)")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"default {OFFLINE_IMAGE_SIZE} for offline data, {DEFAULT_IMAGE_SIZE} for TFDS")
    parser.add_argument("--output-dir", required=True,
                        help="checkpoints, history.csv, routing.jsonl and model.keras go here")
    parser.add_argument("--recipe", default=None, help="training recipe (default: the model family's)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate at this batch size (default: the recipe's, scaled)")
    parser.add_argument("--augment", default=None,
                        help="standard, randaugment, autoaugment or none (default: the recipe's)")
    parser.add_argument("--max-train-examples", type=int, default=None)
    parser.add_argument("--distribution", default="auto",
                        help="auto, none, data_parallel (JAX), mirrored (TensorFlow) or tpu")
    parser.add_argument("--tpu", default=None, help="TPU name or address for --distribution tpu")
    parser.add_argument("--dtype-policy", default=None,
                        help="e.g. mixed_bfloat16 or mixed_float16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", default="auto", help="Keras verbosity: auto, 0, 1 or 2")


def add_parser(subparsers):
    for name, examples, run_fn, help_text in (
        ("train", TRAIN_EXAMPLES, run_train, "train a zoo model with its recipe"),
        ("finetune", FINETUNE_EXAMPLES, run_finetune,
         "fine-tune pretrained weights on a new dataset"),
    ):
        parser = subparsers.add_parser(
            name, help=help_text, description=help_text, epilog=examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_flags(parser)
        if name == "train":
            parser.add_argument("--weights", default=None,
                                help="start from these weights (name or .weights.h5)")
        else:
            parser.add_argument("--weights", default="imagenet",
                                help="pretrained weights name or .weights.h5 path")
            parser.add_argument("--mode", default="two_stage",
                                choices=["linear", "full", "two_stage"])
            parser.add_argument("--head-epochs", type=int, default=None)
            parser.add_argument("--train-batch-norm", action="store_true",
                                help="let BatchNormalization train (default: frozen)")
        parser.set_defaults(run=run_fn)


# --- data -----------------------------------------------------------------------
def load_data(args, recipe):
    """`(train, validation, info, image_size)` for the dataset the flags name."""
    from keras_dynconv import data

    if args.dataset in data.OFFLINE_DATASETS:
        image_size = args.image_size or OFFLINE_IMAGE_SIZE
        train, validation, info = data.offline_dataset(
            args.dataset, image_size=image_size, batch_size=args.batch_size,
            max_train=args.max_train_examples, seed=args.seed,
        )
        return train, validation, info, image_size
    image_size = args.image_size or DEFAULT_IMAGE_SIZE
    augment = args.augment or recipe.augment
    common = dict(image_size=image_size, batch_size=args.batch_size,
                  data_dir=args.data_dir, download=args.download)
    train = data.image_classification_dataset(
        args.dataset, "train", augment=None if augment == "none" else augment,
        mixup_alpha=recipe.mixup_alpha, seed=args.seed,
        max_examples=args.max_train_examples, **common,
    )
    validation = data.image_classification_dataset(args.dataset, "eval", **common)
    return train, validation, data.dataset_info(args.dataset), image_size


# --- model ----------------------------------------------------------------------
def build_model(args, recipe, classes, image_size, weights):
    """The zoo model with the recipe's regularisation where the builder takes it."""
    from keras_dynconv import zoo
    from keras_dynconv.zoo.registry import model_entry

    if model_entry(args.model).task != "classification":
        raise ValueError(
            f"`{args.model}` is a {model_entry(args.model).task} model; `keras-dynconv "
            "train` and `finetune` train classifiers. Train detectors with model.fit "
            "(see examples/detect_shapes.py)."
        )
    arguments = dict(args.model_arg)
    accepted = inspect.signature(model_entry(args.model).builder).parameters
    for key, value in recipe.builder_arguments().items():
        if key in accepted:
            arguments.setdefault(key, value)
    return zoo.get_model(
        args.model, weights=weights, classes=classes,
        input_shape=(image_size, image_size, 3), classifier_activation=None,
        **arguments,
    )


def training_callbacks(output_dir, validation, model, recipe_callbacks=(), backup=True):
    """Backup (resume) first, then the recipe's, checkpoints, CSV log, routing log.

    `backup=False` for `fine_tune`, which backs up each of its stages itself.
    """
    import keras

    from keras_dynconv.analysis import routing_outputs
    from keras_dynconv.callbacks import RoutingStatistics

    callbacks = []
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")))
    callbacks += list(recipe_callbacks)
    callbacks += [
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "checkpoints", "epoch-{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"), append=True),
    ]
    if routing_outputs(model):
        callbacks.append(
            RoutingStatistics(validation, max_batches=4,
                              path=os.path.join(output_dir, "routing.jsonl"))
        )
    return callbacks


def _prepare(args, default_recipe):
    import keras

    from keras_dynconv.training import distribution_plan, get_recipe

    if args.dtype_policy:
        keras.config.set_dtype_policy(args.dtype_policy)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(os.path.join(args.output_dir, "checkpoints"), exist_ok=True)
    with open(os.path.join(args.output_dir, "command.json"), "w") as f:
        json.dump({k: v for k, v in vars(args).items() if k != "run"}, f, indent=2)
    recipe = get_recipe(args.recipe or default_recipe)
    if args.verbose != "auto":
        args.verbose = int(args.verbose)
    plan = distribution_plan(args.distribution, tpu=args.tpu)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"{plan.describe()}, recipe '{recipe.name}'")
    return recipe, plan


def _finish(args, model, started):
    path = os.path.join(args.output_dir, "model.keras")
    model.save(path)
    print(f"saved {path} ({time.perf_counter() - started:.0f} s)")
    return path


def run_train(args, extra_callbacks=()):
    """`keras-dynconv train`; returns the History (tests pass `extra_callbacks`)."""
    from keras_dynconv.training import compile_with_recipe, recipe_callbacks

    started = time.perf_counter()
    recipe, plan = _prepare(args, default_recipe=args.model)
    train, validation, info, image_size = load_data(args, recipe)
    epochs = args.epochs or recipe.epochs
    with plan.scope():
        model = build_model(args, recipe, info.num_classes, image_size, args.weights)
        steps = int(train.cardinality())
        if args.learning_rate is not None:
            recipe = recipe.replace(learning_rate=args.learning_rate,
                                    base_batch_size=args.batch_size)
        compile_with_recipe(model, recipe, steps_per_epoch=steps, epochs=epochs,
                            global_batch_size=args.batch_size)
        callbacks = training_callbacks(args.output_dir, validation, model,
                                       recipe_callbacks(recipe, epochs))
        history = model.fit(train, validation_data=validation, epochs=epochs, shuffle=False,
                            callbacks=callbacks + list(extra_callbacks), verbose=args.verbose)
    _finish(args, model, started)
    return history


def run_finetune(args, extra_callbacks=()):
    """`keras-dynconv finetune`; returns the History of `transfer.fine_tune`."""
    from keras_dynconv.transfer import fine_tune

    started = time.perf_counter()
    recipe, plan = _prepare(args, default_recipe="fine_tune")
    train, validation, info, image_size = load_data(args, recipe)
    epochs = args.epochs or recipe.epochs
    with plan.scope():
        model = build_model(args, recipe, info.num_classes, image_size, args.weights)
        callbacks = training_callbacks(args.output_dir, validation, model, backup=False)
        history = fine_tune(
            model, train, validation, mode=args.mode, epochs=epochs,
            head_epochs=args.head_epochs, recipe=recipe, learning_rate=args.learning_rate,
            freeze_batch_norm=not args.train_batch_norm,
            callbacks=callbacks + list(extra_callbacks),
            backup_dir=os.path.join(args.output_dir, "backup"), verbose=args.verbose,
        )
    _finish(args, history.model, started)
    return history
