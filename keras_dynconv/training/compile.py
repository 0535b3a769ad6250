"""One function that compiles a model with a recipe, and the recipe's callbacks."""

import contextlib

import keras

from keras_dynconv.callbacks import RoutingTemperatureScheduler, SparsityScheduler
from keras_dynconv.detection.detector import SSDDetector
from keras_dynconv.training.optimizers import build_optimizer
from keras_dynconv.training.recipes import get_recipe
from keras_dynconv.training.schedules import learning_rate_schedule

LABEL_FORMATS = ("one_hot", "sparse")


def outputs_probabilities(model):
    """Whether the model ends in a softmax (else its outputs are logits).

    The last layer either has a softmax `activation` (`Dense`, `CondDense`,
    `Activation`) or is a `keras.layers.Softmax`.
    """
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def classification_loss_and_metrics(model, label_format="one_hot", label_smoothing=0.0):
    """Cross-entropy (from logits or probabilities, as the model ends) and accuracies.

    Example:
    >>> model = zoo.mobilenet_v1(alpha=0.25, classes=10, input_shape=(32, 32, 3))
    >>> loss, metrics = classification_loss_and_metrics(model, label_smoothing=0.1)
    >>> type(loss).__name__, [metric.name for metric in metrics]
    ('CategoricalCrossentropy', ['accuracy', 'top5'])
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(
            f"Invalid value for argument `label_format`. Expected one of "
            f"{LABEL_FORMATS}. Received label_format={label_format!r}"
        )
    from_logits = not outputs_probabilities(model)
    num_classes = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if label_format == "one_hot":
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=label_smoothing
        )
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes and num_classes > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
        return loss, metrics
    if label_smoothing:
        raise ValueError(
            "Label smoothing needs one-hot labels: pass label_format='one_hot' (the "
            "pipelines of keras_dynconv.data give one-hot labels by default). "
            f"Received label_format='sparse' with label_smoothing={label_smoothing}"
        )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if num_classes and num_classes > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
    return loss, metrics


def compile_with_recipe(
    model,
    recipe,
    *,
    steps_per_epoch,
    epochs=None,
    global_batch_size=None,
    learning_rate=None,
    label_format="one_hot",
    jit_compile="auto",
    **compile_arguments,
):
    """Compiles `model` for classification or detection with a training recipe.

    Args:
        model: a Keras model ending in logits or a softmax (detected), or an
            `SSDDetector` (which brings its own loss).
        recipe: a `Recipe`, a recipe name, or a zoo model name
            (`keras_dynconv.training.get_recipe`).
        steps_per_epoch: optimizer steps per epoch, to place warmup and decay.
        epochs: length of the run (default: the recipe's).
        global_batch_size: the batch over all replicas (default: the recipe's);
            the peak learning rate scales linearly with it.
        learning_rate: overrides the recipe's schedule with a float or a
            `LearningRateSchedule`.
        label_format: `"one_hot"` (what `keras_dynconv.data` yields; label
            smoothing needs it) or `"sparse"` integer labels.
        jit_compile, **compile_arguments: passed to `model.compile`.

    Returns:
        The recipe, resolved (use it for `recipe_callbacks`).

    Example:
    >>> model = zoo.condconv_efficientnet_b0(classes=10, input_shape=(64, 64, 3))
    >>> recipe = compile_with_recipe(model, "condconv_efficientnet",
    ...                              steps_per_epoch=100, epochs=5, global_batch_size=64)
    >>> model.fit(train_ds, epochs=5, callbacks=recipe_callbacks(recipe, epochs=5))  # doctest: +SKIP
    """
    recipe = get_recipe(recipe)
    epochs = epochs or recipe.epochs
    global_batch_size = global_batch_size or recipe.batch_size
    if learning_rate is None:
        learning_rate = learning_rate_schedule(
            recipe, steps_per_epoch, epochs, global_batch_size
        )
    smoothing = recipe.label_smoothing
    if label_format == "sparse" and smoothing:
        smoothing = 0.0  # the caller asked for integer labels: drop the smoothing
    if isinstance(model, SSDDetector):
        # A detector computes its own loss from boxes (SSDDetector.compute_loss).
        loss = None
    else:
        loss, metrics = classification_loss_and_metrics(model, label_format, smoothing)
        compile_arguments.setdefault("metrics", metrics)
    model.compile(
        optimizer=build_optimizer(recipe, learning_rate),
        loss=loss,
        jit_compile=jit_compile,
        **compile_arguments,
    )
    return recipe


def recipe_callbacks(recipe, epochs=None):
    """The callbacks a recipe needs: temperature, sparsity, EMA evaluation.

    With EMA, `keras.callbacks.SwapEMAWeights(swap_on_epoch=True)` makes validation
    and any `ModelCheckpoint` placed after it use the averaged weights, and Keras
    writes the averaged weights into the model when `fit` ends.

    Example:
    >>> callbacks = recipe_callbacks("dynamic", epochs=10)  # temperature 30 -> 1
    >>> model.fit(train, epochs=10, callbacks=callbacks)  # doctest: +SKIP
    """
    recipe = get_recipe(recipe)
    epochs = epochs or recipe.epochs
    callbacks = []
    if recipe.temperature_annealing is not None:
        initial, final, anneal_epochs = recipe.temperature_annealing
        callbacks.append(
            RoutingTemperatureScheduler(initial, final, min(anneal_epochs, epochs))
        )
    if recipe.final_density is not None:
        callbacks.append(
            SparsityScheduler(recipe.final_density, epochs, phases=recipe.pruning_phases)
        )
    if recipe.ema_momentum is not None:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    return callbacks


@contextlib.contextmanager
def ema_weights(model):
    """Inside the block the model holds its optimizer's EMA weights.

    For evaluating or saving the averaged weights in the middle of training; the
    training weights come back when the block ends.

    Example:
    >>> with ema_weights(model):  # doctest: +SKIP
    ...     model.save("ema.keras")
    """
    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    swap.on_test_begin()
    try:
        yield model
    finally:
        swap.on_test_end()
