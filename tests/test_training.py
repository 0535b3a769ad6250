"""Every layer trains with model.fit under jit; mixed precision gives no NaN."""

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from models import LAYER_KINDS, small_model, toy_images


def _fit_and_check(model, jit_compile, epochs=6):
    images, labels = toy_images()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    before = model.evaluate(images, labels, batch_size=32, verbose=0)
    history = model.fit(images, labels, batch_size=32, epochs=epochs, verbose=0)
    after = model.evaluate(images, labels, batch_size=32, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < 0.8 * before, (before, after, history.history["loss"])
    return history


# torch.compile takes ~30 s a model on 2 CPU cores: per-layer runs are eager there and
# the model with every layer below is the compiled one on all backends.
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_each_layer_trains_with_fit(kind):
    _fit_and_check(small_model([kind]), jit_compile=BACKEND != "torch")


def test_model_with_every_layer_trains_under_jit():
    model = small_model(LAYER_KINDS, cond_head=True)
    _fit_and_check(model, jit_compile=True, epochs=5)
    assert any(l.__class__.__name__ == "SparseDynamicConv2D" for l in model.layers)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_has_no_nan(policy):
    keras.config.set_dtype_policy(policy)
    model = small_model(LAYER_KINDS, cond_head=True)
    images, labels = toy_images(num=64)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=BACKEND != "torch",
    )
    history = model.fit(images, labels, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    predictions = to_numpy(model.predict(images, verbose=0))
    assert predictions.dtype == np.float16 if policy == "mixed_float16" else True
    assert np.all(np.isfinite(predictions.astype("float32")))
