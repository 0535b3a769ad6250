"""transfer.fine_tune: which weights train in each mode, stages, resumption."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_dynconv import layers, zoo
from keras_dynconv.transfer import fine_tune, with_new_classifier
from models import toy_images

NUM_CLASSES = 3


def pretrained_like_model(classes=5):
    """A small stand-in for a pretrained zoo model: BN, a CondConv, a named head."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    x = layers.CondConv2D(8, 3, num_experts=2, padding="same", name="cond")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name="pretrained")


def toy_data(num=32):
    images, labels = toy_images(num=num, image_size=16, num_classes=NUM_CLASSES)
    return images, keras.utils.to_categorical(labels, NUM_CLASSES)


def weights_by_layer(model):
    return {
        layer.name: [to_numpy(v).copy() for v in layer.weights]
        for layer in model.layers
        if layer.weights
    }


def changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_new_classifier_on_a_headless_zoo_model_and_on_a_head_of_other_size():
    backbone = zoo.mobilenet_v1(alpha=0.25, include_top=False, input_shape=(32, 32, 3))
    model = with_new_classifier(backbone, NUM_CLASSES)
    assert tuple(model.output.shape) == (None, NUM_CLASSES)
    assert model.get_layer("conv1") is backbone.get_layer("conv1")  # the backbone is shared

    replaced = with_new_classifier(pretrained_like_model(classes=5), NUM_CLASSES, dropout_rate=0)
    assert tuple(replaced.output.shape) == (None, NUM_CLASSES)
    assert [l.name for l in replaced.layers].count("predictions") == 1


def test_linear_mode_trains_the_new_head_only():
    model = pretrained_like_model()
    before = weights_by_layer(model)
    history = fine_tune(model, toy_data(), mode="linear", classes=NUM_CLASSES, epochs=1,
                        batch_size=16, verbose=0)
    tuned = history.model
    after = weights_by_layer(tuned)
    # Every backbone weight, BatchNorm statistics included, is exactly unchanged.
    for name, values in before.items():
        if name != "predictions":
            assert not changed(values, after[name]), name
    assert after["predictions"][0].shape == (8, NUM_CLASSES)
    assert np.isfinite(history.history["loss"]).all()


def test_full_mode_trains_the_backbone_but_keeps_batch_norm_frozen():
    model = pretrained_like_model(classes=NUM_CLASSES)
    before = weights_by_layer(model)
    history = fine_tune(model, toy_data(), mode="full", epochs=1, batch_size=16,
                        learning_rate=1e-2, verbose=0)
    assert history.model is model  # the head had the right size: kept
    after = weights_by_layer(model)
    assert not changed(before["stem_bn"], after["stem_bn"])  # gamma, beta and statistics
    assert changed(before["cond"], after["cond"])
    assert changed(before["predictions"], after["predictions"])


def test_batch_norm_trains_when_asked():
    model = pretrained_like_model(classes=NUM_CLASSES)
    before = weights_by_layer(model)
    fine_tune(model, toy_data(), mode="full", epochs=1, batch_size=16,
              freeze_batch_norm=False, verbose=0)
    assert changed(before["stem_bn"], weights_by_layer(model)["stem_bn"])


def test_two_stage_from_a_dataset_reports_each_epoch_once():
    import tensorflow as tf

    images, labels = toy_data()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    history = fine_tune(pretrained_like_model(), dataset, dataset, classes=NUM_CLASSES,
                        epochs=3, head_epochs=1, verbose=0)
    assert history.stages == ["linear", "full", "full"]
    assert history.epoch == [0, 1, 2]
    assert len(history.history["loss"]) == len(history.history["val_accuracy"]) == 3


class Interrupt(keras.callbacks.Callback):
    """Stops training after epoch `at_epoch`, keeping the weights it had then."""

    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            self.weights = [to_numpy(w).copy() for w in self.model.weights]
            raise KeyboardInterrupt


class FirstWeights(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [to_numpy(w).copy() for w in self.model.weights]
        self.optimizer_steps = int(to_numpy(self.model.optimizer.iterations))


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    arguments = dict(classes=NUM_CLASSES, epochs=4, head_epochs=1, batch_size=16,
                     backup_dir=str(tmp_path / "backup"), verbose=0)
    interrupt = Interrupt(at_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(pretrained_like_model(), toy_data(), callbacks=[interrupt], **arguments)

    # A new process builds the model again (other random weights): the finished
    # linear stage is loaded, and the full stage resumes after its last epoch (2)
    # from the weights it had reached.
    keras.utils.set_random_seed(99)
    first = FirstWeights()
    history = fine_tune(pretrained_like_model(), toy_data(), callbacks=[first], **arguments)
    assert history.stages == ["full"]
    assert history.epoch == [3]
    for resumed, interrupted in zip(first.weights, interrupt.weights):
        np.testing.assert_array_equal(resumed, interrupted)
    # The optimizer state came back too: 2 full-stage epochs of 2 steps were done,
    # so the learning-rate schedule goes on from step 4.
    assert first.optimizer_steps == 4

    # Everything finished: a third call only loads the final weights.
    again = fine_tune(pretrained_like_model(), toy_data(), **arguments)
    assert again.epoch == [] and again.stages == []


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(mode="partial"), "mode='partial'"),
        (dict(epochs=2, head_epochs=2), "head_epochs=2"),
        (dict(epochs=0), "epochs=0"),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        fine_tune(pretrained_like_model(), toy_data(), **arguments)


def test_a_model_without_classifier_needs_classes():
    backbone = zoo.mobilenet_v1(alpha=0.25, include_top=False, pooling="avg",
                                input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="classes="):
        fine_tune(backbone, toy_data())
