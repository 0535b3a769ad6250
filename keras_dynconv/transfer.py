"""Transfer learning: fine-tune a pretrained model on new classes with `model.fit`.

Three modes, as in SD-Conv's transfer experiments and the Keras transfer-learning
guide:
- `"linear"`: train only a new classifier on the frozen backbone;
- `"full"`: train everything;
- `"two_stage"`: first the new classifier on the frozen backbone, then everything,
  so that the randomly initialised head does not send large gradients through the
  pretrained weights.
Frozen layers run in inference mode (Keras: a layer with `trainable=False` is
frozen, and a frozen BatchNormalization uses its moving statistics). With
`freeze_batch_norm=True` (the default) BatchNormalization stays frozen while the
rest trains: on small datasets batch statistics of a few images are noisy, and the
moving averages (momentum 0.99) take hundreds of steps to follow them.
"""

import math
import os
import warnings

import keras

from keras_dynconv.training import compile_with_recipe, get_recipe, recipe_callbacks

MODES = ("linear", "full", "two_stage")
HEAD_LAYER_NAMES = ("predictions", "top_dropout")


def _output_features(model):
    """The pooled features a classifier sits on, and whether the model has a head."""
    names = {layer.name for layer in model.layers}
    if "predictions" in names:
        if "avg_pool" in names:
            return model.get_layer("avg_pool").output
        return model.get_layer("predictions").input
    features = model.outputs[0]
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    return features


def with_new_classifier(model, classes, dropout_rate=0.2, activation=None):
    """`model` with a new `Dense(classes)` classifier on its pooled features.

    Works for the zoo's models with or without a top (`include_top=False` with or
    without pooling): the old classifier, if any, is dropped. The new layer is
    named `"predictions"`, starts at zero, and outputs logits unless `activation`
    is given.

    Example:
    >>> backbone = zoo.condconv_efficientnet_lite0(weights="imagenet-upcycled")
    >>> model = with_new_classifier(backbone, classes=10)
    """
    features = _output_features(model)
    if dropout_rate:
        features = keras.layers.Dropout(dropout_rate, name="top_dropout")(features)
    # Zero-initialised (as BiT, Kolesnikov et al. 2020): the first steps start from
    # uniform predictions instead of sending a random head's large errors into the
    # pretrained backbone.
    outputs = keras.layers.Dense(
        classes, activation=activation, kernel_initializer="zeros", name="predictions"
    )(features)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=model.name)


def _is_head(layer):
    return layer.name in HEAD_LAYER_NAMES


def set_trainable(model, backbone, freeze_batch_norm=True):
    """Freezes or unfreezes the backbone (every layer but the classifier).

    Args:
        backbone: whether the backbone trains.
        freeze_batch_norm: keep BatchNormalization frozen even when the backbone
            trains.

    Example:
    >>> model = with_new_classifier(zoo.mobilenet_v1(alpha=0.25, input_shape=(32, 32, 3)), 10)
    >>> set_trainable(model, backbone=False)  # linear probe: only the new head trains
    >>> len(model.trainable_weights)
    2
    """
    model.trainable = True
    for layer in model.layers:
        if _is_head(layer) or isinstance(layer, keras.layers.InputLayer):
            continue
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = backbone and not (freeze_batch_norm and is_batch_norm)


def _steps_per_epoch(data, batch_size):
    if isinstance(data, tuple):
        return math.ceil(len(data[0]) / batch_size)
    cardinality = getattr(data, "cardinality", None)
    if cardinality is not None:
        count = int(cardinality())
        if count > 0:
            return count
        raise ValueError(
            "The training dataset has no known length (infinite or filtered): pass "
            "`steps_per_epoch=`."
        )
    return len(data)


def _dataset_batch_size(dataset, default):
    """The static batch size of a dataset's elements, or `default`."""
    spec = getattr(dataset, "element_spec", None)
    while isinstance(spec, (tuple, list)):
        spec = spec[0]
    batch = getattr(getattr(spec, "shape", None), "__getitem__", lambda i: None)(0)
    return int(batch) if batch is not None else default


def _merge(histories, stages):
    """One History of every stage's epochs, in order."""
    merged = keras.callbacks.History()
    merged.history, merged.epoch, merged.stages = {}, [], []
    for history, stage in zip(histories, stages):
        for key, values in history.history.items():
            merged.history.setdefault(key, []).extend(values)
        merged.epoch.extend(history.epoch)
        merged.stages.extend([stage] * len(history.epoch))
    return merged


def fine_tune(
    model,
    train_data,
    validation_data=None,
    *,
    mode="two_stage",
    classes=None,
    epochs=5,
    head_epochs=None,
    recipe="fine_tune",
    learning_rate=None,
    batch_size=64,
    steps_per_epoch=None,
    freeze_batch_norm=True,
    label_format="one_hot",
    dropout_rate=0.2,
    callbacks=None,
    backup_dir=None,
    verbose="auto",
):
    """Fine-tunes `model` on `train_data`; returns the Keras `History`.

    Args:
        model: a pretrained functional model (any zoo model, with or without top).
        train_data: a dataset of `(images, labels)` batches or an `(images, labels)`
            tuple of arrays (batched by `batch_size`).
        validation_data: the same kinds, evaluated after every epoch.
        mode: `"linear"`, `"full"` or `"two_stage"` (see the module docstring).
        classes: number of target classes. A new classifier is put on when the
            model has no top or predicts another number of classes; `None`: keep
            the model's classifier (e.g. made by the builder's `classes=`).
        epochs: total epochs; in `"two_stage"` they include `head_epochs`.
        head_epochs: epochs of the first stage of `"two_stage"` (default: a third
            of `epochs`, at least 1).
        recipe: training recipe (`keras_dynconv.training`); default `"fine_tune"`:
            AdamW, warmup + cosine per stage, label smoothing 0.1, routing at a
            tenth of the learning rate.
        learning_rate: peak learning rate of every stage (default: the recipe's,
            scaled to the batch size).
        freeze_batch_norm: keep BatchNormalization in inference mode throughout.
        label_format: `"one_hot"` or `"sparse"` labels.
        callbacks: more Keras callbacks for every stage.
        backup_dir: makes the run resumable. Each stage backs up the model and
            optimizer after every epoch (`keras.callbacks.BackupAndRestore` in
            `backup_dir/<stage>`) and keeps its final weights; calling `fine_tune`
            again with the same arguments skips finished stages and resumes the
            interrupted one at the epoch it reached.

    Returns:
        The `History` of all stages: `history.history[key]` has one value per
        epoch, `history.stages` says which stage each epoch belongs to, and
        `history.model` is the fine-tuned model (a new one when a new classifier
        was put on; it shares the backbone's layers with `model`).

    Example:
    >>> model = zoo.condconv_efficientnet_lite0(weights="imagenet-upcycled")
    >>> history = fine_tune(model, train_ds, val_ds, classes=10, epochs=6)  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {MODES}. "
            f"Received mode={mode!r}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            "Invalid value for argument `epochs`. Expected an int >= 1. "
            f"Received epochs={epochs!r}"
        )
    if mode == "two_stage":
        head_epochs = head_epochs if head_epochs is not None else max(1, epochs // 3)
        if not 1 <= head_epochs < epochs:
            raise ValueError(
                "Invalid value for argument `head_epochs`. Expected 1 <= head_epochs "
                f"< epochs={epochs} (two stages). Received head_epochs={head_epochs!r}"
            )
    recipe = get_recipe(recipe)
    outputs = model.outputs[0]
    has_classifier = "predictions" in {layer.name for layer in model.layers}
    if classes is not None and not (has_classifier and outputs.shape[-1] == classes):
        model = with_new_classifier(model, classes, dropout_rate)
    elif not has_classifier:
        raise ValueError(
            f"Model '{model.name}' has no classifier named 'predictions': pass "
            "`classes=` to put a new one on."
        )
    if isinstance(train_data, tuple):
        fit_data = dict(x=train_data[0], y=train_data[1], batch_size=batch_size)
    else:
        fit_data = dict(x=train_data, steps_per_epoch=steps_per_epoch)
        if hasattr(train_data, "element_spec"):  # tf.data shuffles itself
            fit_data["shuffle"] = False
        batch_size = _dataset_batch_size(train_data, batch_size)
    steps = steps_per_epoch or _steps_per_epoch(train_data, batch_size)
    if learning_rate is not None:
        recipe = recipe.replace(learning_rate=float(learning_rate), base_batch_size=batch_size)

    if mode == "two_stage":
        stages = [("linear", head_epochs), ("full", epochs - head_epochs)]
    else:
        stages = [(mode, epochs)]
    histories, finished, first_epoch = [], [], 0
    for stage, stage_epochs in stages:
        set_trainable(model, backbone=stage == "full", freeze_batch_norm=freeze_batch_norm)
        compile_with_recipe(
            model, recipe, steps_per_epoch=steps, epochs=stage_epochs,
            global_batch_size=batch_size, label_format=label_format,
        )
        done_path = backup_dir and os.path.join(backup_dir, f"{stage}.done.weights.h5")
        if done_path and os.path.exists(done_path):
            with warnings.catch_warnings():
                # The finished stage's optimizer is not this stage's: not loading
                # its variables is the point.
                warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
                model.load_weights(done_path)
            first_epoch += stage_epochs
            continue
        stage_callbacks = recipe_callbacks(recipe, stage_epochs) + list(callbacks or [])
        if backup_dir:
            # First, so that it saves the training weights before SwapEMAWeights
            # swaps the averaged ones in at the end of an epoch.
            backup = keras.callbacks.BackupAndRestore(os.path.join(backup_dir, stage))
            stage_callbacks.insert(0, backup)
        histories.append(
            model.fit(
                **fit_data,
                validation_data=validation_data,
                epochs=first_epoch + stage_epochs,
                initial_epoch=first_epoch,
                callbacks=stage_callbacks,
                verbose=verbose,
            )
        )
        finished.append(stage)
        if done_path:
            model.save_weights(done_path)
        first_epoch += stage_epochs
    history = _merge(histories, finished)  # empty if every stage had finished before
    history.set_model(model)
    return history


__all__ = ["fine_tune", "set_trainable", "with_new_classifier"]
