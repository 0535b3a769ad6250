"""COCO mAP of a detector during training, as a Keras callback."""

import keras

from keras_dynconv.detection.evaluation import METRIC_NAMES
from keras_dynconv.detection.evaluation import evaluate_coco
from keras_dynconv.detection.evaluation import format_metrics
from keras_dynconv.layers import validation


class COCOEvaluation(keras.callbacks.Callback):
    """Runs `evaluate_coco` at the end of every n-th epoch and logs the results.

    It writes `logs[prefix + key]` for each of `keys` (e.g. `val_AP`), so that the
    callbacks after it see them: History, CSVLogger, TensorBoard,
    `ModelCheckpoint(monitor="val_AP", mode="max")`, `EarlyStopping`. Keras calls
    callbacks in list order, so put this one BEFORE those in `callbacks=[...]`.
    On the epochs it skips (`every_n_epochs > 1`) the keys are absent, which
    ModelCheckpoint and EarlyStopping pass over; CSVLogger fixes its columns at the
    first epoch, so with `every_n_epochs > 1` read the values from
    `history.history` or `self.history` instead. A metric with no ground truth to
    measure is NaN (see `coco_metrics`).

    Args:
        dataset: finite dataset of `(images, {"boxes", "classes", ...})` batches,
            as `evaluate_coco` takes it.
        every_n_epochs: evaluate after epochs n, 2n, ... (1-based).
        max_batches: evaluate the first batches of `dataset` only.
        prefix: of the log keys.
        keys: the statistics to log, among `METRIC_NAMES`.
        verbose: 1 prints a one-line summary, 2 also a progress bar, 3 also
            pycocotools' output.

    Example:
    >>> coco = COCOEvaluation(validation_batches, every_n_epochs=2)
    >>> checkpoint = keras.callbacks.ModelCheckpoint(
    ...     "best.keras", monitor="val_AP", mode="max", save_best_only=True)
    >>> detector.fit(train_batches, epochs=10, callbacks=[coco, checkpoint])
    >>> coco.history[-1]["AP50"]  # all 12 statistics of the last evaluation
    """

    def __init__(
        self,
        dataset,
        *,
        every_n_epochs=1,
        max_batches=None,
        prefix="val_",
        keys=("AP", "AP50", "AP75"),
        verbose=0,
    ):
        super().__init__()
        self.dataset = dataset
        self.every_n_epochs = validation.positive_int("every_n_epochs", every_n_epochs)
        self.max_batches = (
            None if max_batches is None else validation.positive_int("max_batches", max_batches)
        )
        if not isinstance(prefix, str):
            raise ValueError(
                f"Invalid value for argument `prefix`. Expected a string. Received prefix={prefix!r}"
            )
        self.prefix = prefix
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        for key in self.keys:
            validation.one_of("keys", key, METRIC_NAMES)
        if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
            raise ValueError(
                f"Invalid value for argument `verbose`. Expected an integer >= 0. Received verbose={verbose!r}"
            )
        self.verbose = verbose
        # One `{"epoch": int, **statistics}` per evaluation.
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        metrics = evaluate_coco(
            self.model,
            self.dataset,
            max_batches=self.max_batches,
            verbose=max(self.verbose - 1, 0),
        )
        self.history.append({"epoch": epoch, **metrics})
        if logs is not None:
            for key in self.keys:
                logs[self.prefix + key] = metrics[key]
        if self.verbose:
            print(f"Epoch {epoch + 1}: COCO {format_metrics(metrics, self.keys)}")
