"""Every layer trains with model.fit under jit; mixed precision gives no NaN."""

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from models import LAYER_KINDS, small_model, toy_images


def _fit_and_check(model, jit_compile, epochs=8, num_images=96, batch_size=32):
    images, labels = toy_images(num=num_images)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    before = model.evaluate(images, labels, batch_size=batch_size, verbose=0)
    history = model.fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0)
    after = model.evaluate(images, labels, batch_size=batch_size, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < 0.8 * before, (before, after, history.history["loss"])
    return history


# torch.compile of a whole training step takes minutes on 2 CPU cores, so the default
# suite trains eagerly on torch and the compiled torch run is a large test.
JIT_IN_DEFAULT_SUITE = BACKEND != "torch"


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_each_layer_trains_with_fit(kind):
    _fit_and_check(small_model([kind]), jit_compile=JIT_IN_DEFAULT_SUITE)


def test_model_with_every_layer_trains():
    model = small_model(LAYER_KINDS, cond_head=True)
    # Half the batch of the single-layer runs: XLA's CPU depthwise gradients are slow.
    _fit_and_check(model, JIT_IN_DEFAULT_SUITE, num_images=48, batch_size=16)
    assert any(l.__class__.__name__ == "SparseDynamicConv2D" for l in model.layers)


@pytest.mark.large
@pytest.mark.skipif(BACKEND != "torch", reason="the jit variant of the default suite")
def test_model_with_every_layer_trains_under_torch_compile():
    _fit_and_check(small_model(LAYER_KINDS, cond_head=True), True, num_images=48, batch_size=16)


# Keras' default compilation on a CPU ("auto": XLA on JAX, none on TensorFlow and torch),
# the path a user's mixed-precision fit takes here. XLA on TensorFlow doubles the time
# (36 against 16 s): a large test; the default suite's XLA runs are the float32 fits
# above and JAX's.
@pytest.mark.parametrize("jit_compile", ["auto", pytest.param(True, marks=pytest.mark.large)])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_has_no_nan(policy, jit_compile):
    if jit_compile is True and BACKEND != "tensorflow":
        pytest.skip("XLA on TensorFlow only: 'auto' is XLA on JAX, and torch.compile of a "
                    "step takes minutes here")
    keras.config.set_dtype_policy(policy)
    model = small_model(LAYER_KINDS, cond_head=True)
    images, labels = toy_images(num=32)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    predictions = to_numpy(model.predict(images, verbose=0))
    dynamic_layers = [l for l in model.layers if l.__module__.startswith("keras_dynconv")]
    assert all(l.compute_dtype == policy.split("_")[1] for l in dynamic_layers)
    assert np.all(np.isfinite(predictions.astype("float32")))
