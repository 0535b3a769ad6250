"""Multi-device `model.fit`: DataParallel on JAX, MirroredStrategy on TensorFlow.

The 2-device runs need devices configured before the backend initialises, so they
run in a subprocess: this file run as a script (`python tests/test_distribution.py
jax`) trains the same model on one device and on two virtual CPU devices with the
same global batch and prints the measurements as JSON; the tests compare them.
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
HERE = os.path.abspath(__file__)

GLOBAL_BATCH = 8
STEPS = 3
# float32; the two runs differ only in the summation order of the reductions.
RTOL = 1e-5
ATOL = 1e-6


# ----------------------------------------------------------------------------------
# The subprocess: one-device and two-device training of the same model.


def _model(batch_norm=None):
    """A small conv net with a routed CondConv2D; `batch_norm`: None, "local", "sync"."""
    from keras_dynconv import layers

    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    if batch_norm:
        kwargs = {"synchronized": True} if batch_norm == "sync" else {}
        x = keras.layers.BatchNormalization(**kwargs)(x)
    x = layers.CondConv2D(6, 3, num_experts=3, routing="softmax")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = _ExampleCounter()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


class _ExampleCounter(keras.layers.Layer):
    """Identity that counts the examples each replica sees in training.

    Its variable is on-read with sum aggregation: under a tf.distribute strategy each
    replica keeps its own count.
    """

    def build(self, input_shape):
        self.count = keras.Variable(
            0.0, trainable=False, name="count", aggregation="sum", synchronization="on_read"
        )

    def call(self, inputs, training=False):
        if training:
            self.count.assign_add(keras.ops.cast(keras.ops.shape(inputs)[0], "float32"))
        return inputs


class _StepLosses(keras.callbacks.Callback):
    """Per-step losses, recovered from the running epoch mean that fit reports."""

    def on_train_begin(self, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    @property
    def losses(self):
        means = np.asarray(self.means, "float64")
        steps = np.arange(1, len(means) + 1)
        totals = means * steps
        return np.diff(totals, prepend=0.0).tolist()


def _data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(GLOBAL_BATCH * STEPS, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(GLOBAL_BATCH * STEPS,)).astype("int32")
    return images, labels


def _spy_on_jax_batches(model, shards):
    """Records the per-device shapes of each batch `fit` hands to the JAX step."""
    import jax

    model.make_train_function()
    step = model.train_function

    def spying_step(state, iterator):
        def spy():
            for data in iterator:
                x = jax.tree_util.tree_leaves(data)[0]
                if isinstance(x, jax.Array):
                    shapes = [list(s.data.shape) for s in x.addressable_shards]
                else:  # the single-device CPU iterator hands NumPy batches over
                    shapes = [list(x.shape)]
                shards.append({"type": type(x).__name__, "shapes": shapes})
                yield data

        return step(state, spy())

    model.train_function = spying_step


def _train(plan, batch_norm=None, initial_weights=None):
    images, labels = _data()
    with plan.scope():
        model = _model(batch_norm)
        built_weights = model.get_weights()
        if initial_weights is not None:
            model.set_weights(initial_weights)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        shards = []
        current = None
        if keras.backend.backend() == "jax":
            _spy_on_jax_batches(model, shards)
            current = type(keras.distribution.distribution()).__name__
        recorder = _StepLosses()
        start = time.perf_counter()
        model.fit(
            images, labels, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False,
            verbose=0, callbacks=[recorder],
        )
        seconds = time.perf_counter() - start
    return model, {
        "losses": recorder.losses,
        "built_weights": built_weights,
        "weights": model.get_weights(),
        "shards": shards,
        "distribution_in_scope": current,
        "fit_seconds": seconds,
    }


def _max_difference(a_list, b_list):
    """max |a - b| and whether every array is within the float32 tolerances."""
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(a_list, b_list)]
    close = all(np.allclose(a, b, rtol=RTOL, atol=ATOL) for a, b in zip(a_list, b_list))
    return max(diffs), close


def _compare(single, multi):
    loss_diff = float(np.max(np.abs(np.subtract(multi["losses"], single["losses"]))))
    weight_diff, weights_close = _max_difference(multi["weights"], single["weights"])
    return {
        "single_losses": single["losses"],
        "multi_losses": multi["losses"],
        "loss_max_abs_diff": loss_diff,
        "losses_close": bool(
            np.allclose(multi["losses"], single["losses"], rtol=RTOL, atol=ATOL)
        ),
        "weight_max_abs_diff": weight_diff,
        "weights_close": weights_close,
        "single_fit_seconds": single["fit_seconds"],
        "multi_fit_seconds": multi["fit_seconds"],
    }


def _counter(model):
    layer = next(l for l in model.layers if isinstance(l, _ExampleCounter))
    value = layer.count.value
    per_replica = getattr(value, "values", None)
    if per_replica is not None:
        return [float(np.asarray(v)) for v in per_replica]
    return [float(keras.ops.convert_to_numpy(value))]


def _has_accelerator(backend):
    if backend == "jax":
        return not all(d.startswith("cpu:") for d in keras.distribution.list_devices())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _worker(backend):
    from keras_dynconv.training import distribution as dist

    start = time.perf_counter()
    devices = dist.virtual_cpu_devices(2)  # before anything initialises the backend
    result = {"backend": backend, "virtual_devices": devices}
    # The virtual CPU devices, named: "auto" alone would pick GPUs where there are.
    plan = dist.distribution_plan("auto", devices=devices)
    single = dist.distribution_plan("none")
    result["auto_default_devices"] = list(dist.distribution_plan("auto").devices)
    result["has_accelerator"] = _has_accelerator(backend)
    result.update(
        kind=plan.kind,
        num_replicas=plan.num_replicas,
        plan_devices=list(plan.devices),
        describe=plan.describe(),
        global_batch_size=plan.global_batch_size(GLOBAL_BATCH // 2),
    )
    explicit = dist.distribution_plan(
        "data_parallel" if backend == "jax" else "mirrored", devices=devices
    )
    result["explicit"] = [explicit.kind, explicit.num_replicas]
    result["auto_one_device"] = dist.distribution_plan("auto", devices=1).kind
    if backend == "jax":
        import jax

        result["jax_devices"] = [str(d) for d in jax.devices()]

    # Without BatchNormalization: the two runs compute the same thing.
    reference_model, reference = _train(single)
    model, multi = _train(plan, initial_weights=reference["built_weights"])
    result["plain"] = _compare(reference, multi)
    result["plain"]["initial_weight_max_abs_diff"] = _max_difference(
        multi["built_weights"], reference["built_weights"]
    )[0]
    # The first weight is the Conv2D kernel: training moved it.
    result["plain"]["weight_change"] = _max_difference(
        reference["weights"][:1], reference["built_weights"][:1]
    )[0]
    result["batch_shards"] = multi["shards"]
    result["single_batch_shards"] = reference["shards"]
    result["example_counts_single"] = _counter(reference_model)
    result["example_counts_multi"] = _counter(model)
    if backend == "jax":
        sharding = model.trainable_variables[0].value.sharding
        result["variable_devices"] = len(sharding.device_set)
        result["variable_replicated"] = bool(sharding.is_fully_replicated)
        result["distribution_inside_scope"] = multi["distribution_in_scope"]
        result["distribution_after_scope"] = repr(keras.distribution.distribution())
    else:
        result["strategy"] = type(model.distribute_strategy).__name__
        result["variable_components"] = [
            v.device for v in model.trainable_variables[0].value.values
        ]

    # BatchNormalization: per-replica or global batch statistics.
    _, bn_single = _train(single, batch_norm="local")
    modes = ["local", "sync"] if backend == "tensorflow" else ["local"]
    result["batch_norm"] = {}
    for mode in modes:
        _, bn_multi = _train(plan, batch_norm=mode, initial_weights=bn_single["built_weights"])
        result["batch_norm"][mode] = _compare(bn_single, bn_multi)
    result["worker_seconds"] = time.perf_counter() - start
    print("RESULT " + json.dumps(result))


def _run_worker(backend, repo_root, extra_env=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    env.update(extra_env or {})
    completed = subprocess.run(
        [sys.executable, HERE, backend], cwd=repo_root, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = [l for l in completed.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


# ----------------------------------------------------------------------------------
# The tests.


def _check_two_device_run(result, kind):
    assert result["virtual_devices"] == result["plan_devices"]
    if not result["has_accelerator"]:  # then "auto" picks the CPU devices by itself
        assert result["auto_default_devices"] == result["plan_devices"]
    assert len(result["plan_devices"]) == 2
    assert result["kind"] == kind and result["num_replicas"] == 2
    assert result["explicit"] == [kind, 2]
    assert result["auto_one_device"] == "none"
    assert result["global_batch_size"] == GLOBAL_BATCH
    assert "2 replicas" in result["describe"]
    plain = result["plain"]
    # Same seed, same initial weights; training moved them.
    assert plain["initial_weight_max_abs_diff"] == 0.0
    assert plain["weight_change"] > 1e-3
    assert len(plain["multi_losses"]) == STEPS
    assert plain["losses_close"], (plain["single_losses"], plain["multi_losses"])
    assert plain["weights_close"], plain["weight_max_abs_diff"]
    # Each example was seen once, in training, by one replica.
    assert sum(result["example_counts_multi"]) == GLOBAL_BATCH * STEPS
    assert result["example_counts_single"] == [GLOBAL_BATCH * STEPS]


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.DataParallel: JAX")
def test_jax_data_parallel_matches_one_device(repo_root):
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = _run_worker("jax", repo_root, flags)
    _check_two_device_run(result, "data_parallel")
    assert result["jax_devices"] == ["cpu:0", "cpu:1"]
    # Variables are replicated on both devices; each batch fit hands to the step is
    # one array split along the batch axis, half of the global batch per device.
    assert result["variable_devices"] == 2 and result["variable_replicated"]
    half = [GLOBAL_BATCH // 2, 8, 8, 3]
    assert result["batch_shards"] == [{"type": "ArrayImpl", "shapes": [half, half]}] * STEPS
    assert [b["shapes"] for b in result["single_batch_shards"]] == [
        [[GLOBAL_BATCH, 8, 8, 3]]
    ] * STEPS
    # The scope sets the global distribution and restores it.
    assert result["distribution_inside_scope"] == "DataParallel"
    assert result["distribution_after_scope"] == "None"
    # The GSPMD step computes BatchNormalization statistics over the global batch.
    batch_norm = result["batch_norm"]["local"]
    assert batch_norm["losses_close"] and batch_norm["weights_close"], batch_norm


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute.MirroredStrategy")
def test_tensorflow_mirrored_matches_one_device(repo_root):
    result = _run_worker("tensorflow", repo_root)
    _check_two_device_run(result, "mirrored")
    assert result["plan_devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert result["strategy"] == "MirroredStrategy"
    assert [d.split("/")[-1] for d in result["variable_components"]] == [
        "device:CPU:0", "device:CPU:1",
    ]
    # Each replica saw half of every global batch.
    assert result["example_counts_multi"] == [GLOBAL_BATCH * STEPS / 2] * 2
    # Plain BatchNormalization normalises each replica's half with its own
    # statistics: not the one-device computation. synchronized=True is.
    local = result["batch_norm"]["local"]
    assert not local["losses_close"] and local["loss_max_abs_diff"] < 0.1, local
    sync = result["batch_norm"]["sync"]
    assert sync["losses_close"] and sync["weights_close"], sync


@pytest.mark.skipif(BACKEND != "torch", reason="torch: single device only")
def test_torch_is_single_device():
    from keras_dynconv.training import distribution as dist

    plan = dist.distribution_plan("auto")
    assert (plan.kind, plan.num_replicas, plan.strategy) == ("none", 1, None)
    assert plan.global_batch_size(16) == 16
    with plan.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=4, verbose=0)
    assert dist.supported_strategies() == ("auto", "none")
    for strategy in ("data_parallel", "mirrored", "tpu"):
        with pytest.raises(ValueError, match="not supported on the torch backend") as info:
            dist.distribution_plan(strategy)
        assert "Expected one of ('auto', 'none') on torch" in str(info.value)
        assert "'data_parallel' runs on jax; 'mirrored' and 'tpu' on tensorflow" in str(
            info.value
        )
    with pytest.raises(ValueError, match="needs the jax or tensorflow backend"):
        dist.virtual_cpu_devices(2)


@pytest.mark.skipif(BACKEND != "torch", reason="one subprocess is enough")
def test_torch_backend_does_not_import_tensorflow(repo_root):
    code = (
        "import sys; import keras_dynconv.training.distribution as d; "
        "d.distribution_plan('auto'); print('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, KERAS_BACKEND="torch")
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "False"


def test_auto_on_one_device_is_none():
    from keras_dynconv.training import distribution as dist

    plan = dist.distribution_plan("auto", devices=None if BACKEND == "torch" else 1)
    assert plan.kind == "none" and plan.num_replicas == 1 and not plan.is_distributed
    assert "none" in plan.describe() and BACKEND in plan.describe()
    assert dist.distribution_plan(None).kind == "none"


def test_unknown_strategy_is_rejected():
    from keras_dynconv.training import distribution as dist

    with pytest.raises(ValueError, match="Invalid value for argument `strategy`") as info:
        dist.distribution_plan("horovod")
    assert "Received: strategy='horovod'" in str(info.value)
    assert str(dist.STRATEGIES) in str(info.value)


@pytest.mark.skipif(BACKEND == "torch", reason="torch: test_torch_is_single_device")
def test_other_backends_strategy_is_rejected():
    from keras_dynconv.training import distribution as dist

    wrong = "mirrored" if BACKEND == "jax" else "data_parallel"
    with pytest.raises(ValueError, match=f"not supported on the {BACKEND} backend") as info:
        dist.distribution_plan(wrong)
    assert f"Expected one of {dist.supported_strategies()} on {BACKEND}" in str(info.value)


def test_invalid_arguments_are_rejected():
    from keras_dynconv.training import distribution as dist

    with pytest.raises(ValueError, match="`tpu` is only used with strategy='tpu'"):
        dist.distribution_plan("auto", tpu="my-tpu")
    with pytest.raises(ValueError, match="`devices` is only used by multi-device"):
        dist.distribution_plan("none", devices=["cpu:0", "cpu:1"])
    if BACKEND != "torch":
        with pytest.raises(ValueError, match="Invalid value for argument `devices`"):
            dist.distribution_plan("auto", devices=64)
        with pytest.raises(ValueError, match="unknown"):
            dist.distribution_plan("auto", devices=["cpu:0", "cpu:63"])
        with pytest.raises(ValueError, match="Invalid value for argument `devices`"):
            dist.distribution_plan("auto", devices="cpu:0")


def test_batch_size_helpers():
    from types import SimpleNamespace

    from keras_dynconv.training.distribution import DistributionPlan

    # A stand-in for a 2-replica MirroredStrategy: the helpers only read the count.
    plan = DistributionPlan(
        "mirrored", "tensorflow", ["/cpu:0", "/cpu:1"], SimpleNamespace(num_replicas_in_sync=2)
    )
    assert plan.num_replicas == 2 and plan.is_distributed
    assert plan.global_batch_size(16) == 32
    assert plan.per_replica_batch_size(32) == 16
    with pytest.raises(ValueError, match="multiple of the number of replicas"):
        plan.per_replica_batch_size(33)
    with pytest.raises(ValueError, match="positive integer"):
        plan.global_batch_size(0)
    assert plan.describe() == (
        "distribution: mirrored (tf.distribute.MirroredStrategy) on tensorflow, "
        "2 replicas on /cpu:0, /cpu:1"
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute.TPUStrategy")
def test_tpu_without_a_tpu_fails_fast(monkeypatch):
    import glob

    from keras_dynconv.training import distribution as dist

    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        pytest.skip("this machine may have a TPU")
    for name in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    start = time.perf_counter()
    # Nothing names or shows a TPU: no resolver, no network.
    with pytest.raises(ValueError, match="strategy='tpu' found no TPU"):
        dist.distribution_plan("tpu")
    # A TPU VM's local TPU that is not there: TensorFlow fails at once.
    with pytest.raises(RuntimeError, match="could not connect to or initialise the TPU"):
        dist.distribution_plan("tpu", tpu="local")
    assert time.perf_counter() - start < 30
    # Not tested: a TPU name (the resolver asks the GCE metadata server) or a
    # grpc:// address (TensorFlow retries the connection): both need the network.
    with pytest.raises(ValueError, match="`devices` is not used with strategy='tpu'"):
        dist.distribution_plan("tpu", tpu="local", devices=2)


def test_module_imports_no_backend_at_import_time():
    import ast

    from keras_dynconv.training import distribution as dist

    tree = ast.parse(open(dist.__file__).read())
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert not imported & {"tensorflow", "jax", "torch"}, imported


if __name__ == "__main__":
    _worker(sys.argv[1])
