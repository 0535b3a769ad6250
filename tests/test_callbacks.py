"""Temperature annealing and the sparsity schedule, inside model.fit."""

import keras
import pytest

from conftest import to_numpy
from keras_dynconv import callbacks, layers
from models import small_model, toy_images


def _compile(model):
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_temperature_anneals_linearly_and_is_logged():
    model = _compile(small_model(["dynamic", "cond_conv"]))
    images, labels = toy_images(num=32)
    scheduler = callbacks.RoutingTemperatureScheduler(initial=30.0, final=1.0, epochs=2)
    history = model.fit(images, labels, epochs=3, batch_size=16, verbose=0, callbacks=[scheduler])
    assert history.history["routing_temperature"] == [30.0, 15.5, 1.0]
    for layer in model.layers:
        if isinstance(layer, layers.ExpertLayer):
            expected = 1.0 if layer.routing == "softmax" else layer.temperature
            assert float(to_numpy(layer.routing_fn.temperature)) == pytest.approx(expected)


def test_sparsity_schedule_sets_targets_and_logs_density():
    model = _compile(small_model(["sparse_dynamic"]))
    images, labels = toy_images(num=32)
    scheduler = callbacks.SparsityScheduler(final_density=0.25, epochs=4, phases=1)
    history = model.fit(images, labels, epochs=4, batch_size=16, verbose=0, callbacks=[scheduler])
    assert history.history["target_density"] == [1.0, 1.0, 0.25, 0.25]
    assert all(0 < d <= 1 for d in history.history["density"])
    sparse = [l for l in model.layers if isinstance(l, layers.SparseDynamicConv2D)][0]
    assert float(to_numpy(sparse.target_density)) == 0.25


@pytest.mark.parametrize(
    "make",
    [
        lambda: callbacks.RoutingTemperatureScheduler(initial=0),
        lambda: callbacks.RoutingTemperatureScheduler(epochs=0),
        lambda: callbacks.SparsityScheduler(final_density=0, epochs=3),
        lambda: callbacks.SparsityScheduler(final_density=0.5, epochs=3, phases=0),
    ],
)
def test_bad_schedule_arguments(make):
    with pytest.raises(ValueError, match="Invalid value for argument"):
        make()


def test_schedules_round_trip_their_config():
    for cb in (
        callbacks.RoutingTemperatureScheduler(20.0, 2.0, 5),
        callbacks.SparsityScheduler(0.3, 10, 4),
    ):
        assert type(cb)(**cb.get_config()).get_config() == cb.get_config()
