"""Multi-device training with `model.fit`: one script for JAX and TensorFlow.

`distribution_plan(strategy)` picks the backend's data-parallel machinery and
returns a `DistributionPlan`. Build, compile *and* fit the model inside
`plan.scope()`; the rest of the script does not change:

    plan = distribution_plan("auto")  # or the value of a --distribution flag
    print(plan.describe())
    with plan.scope():
        model = build_model()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(images, labels, batch_size=plan.global_batch_size(32))

Strategies (`supported_strategies()` lists those of the current backend):

- `"data_parallel"` (JAX): `keras.distribution.DataParallel` over
  `keras.distribution.list_devices()` (GPUs or TPU cores when present, else
  CPUs). Variables are replicated on every device; `fit` turns each global
  batch into one `jax.Array` sharded along the batch axis
  (`jax.make_array_from_process_local_data`) and runs one jit-compiled (GSPMD)
  step over the global batch. The step is the single-device computation, so
  losses, gradients and `BatchNormalization` statistics are those of the whole
  global batch (XLA inserts the cross-device reductions).
- `"mirrored"` (TensorFlow): `tf.distribute.MirroredStrategy` over all GPUs, or
  over the logical CPU devices when there is no GPU (see
  `virtual_cpu_devices`). `fit` splits each global batch into one slice per
  replica (`experimental_distribute_dataset`); each replica divides its mean loss
  by the number of replicas and the gradients are summed across replicas, which
  gives the gradient of the global-batch mean. `BatchNormalization` normalises
  with the statistics of each replica's slice unless built with
  `synchronized=True` (then they are all-reduced across replicas, as on JAX),
  so without it losses differ from a one-device run (by about 1e-3 in the
  tests' small net), and each replica's copy of `moving_mean` /
  `moving_variance` follows its own slices: the copies drift apart and reading
  or saving the weights gives the first replica's. Keras also turns XLA off
  (`jit_compile="auto"`) under a `tf.distribute` strategy.
- `"tpu"` (TensorFlow, explicit only, never chosen by `"auto"`):
  `tf.distribute.TPUStrategy`, connected with
  `tf.distribute.cluster_resolver.TPUClusterResolver(tpu=...)`,
  `tf.config.experimental_connect_to_cluster` and
  `tf.tpu.experimental.initialize_tpu_system`. `tpu` is a TPU name or a
  `"grpc://host:port"` address (TPU nodes, Colab), `"local"` on a TPU VM, or
  `None` to use the `TPU_NAME` / `KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS` /
  `TPU_CONFIG` environment variables or a local TPU (`/dev/accel*`,
  `/dev/vfio/*`). When nothing names or shows a TPU this raises a `ValueError`
  at once, and a failing connection raises a `RuntimeError`. This path is not
  exercised by the test suite (no TPU is reachable from it): only its errors
  are. On JAX, TPU cores are plain devices of `"data_parallel"`.
- `"none"`: the default device, no distribution; `scope()` does nothing.
- `"auto"`: `"data_parallel"` on JAX with more than one device, `"mirrored"` on
  TensorFlow with more than one GPU (or, without a GPU, more than one logical
  CPU device), `"none"` otherwise and always on PyTorch: Keras' torch trainer
  has no multi-device data parallelism, so `"data_parallel"`, `"mirrored"` and
  `"tpu"` raise a `ValueError` there.

Batch sizes: `fit`'s `batch_size` (or the batch of a `tf.data.Dataset`) is the
*global* batch. Keep it a multiple of the number of replicas, including the last
partial batch (`plan.per_replica_batch_size` checks it), or drop the remainder:
JAX cannot shard an indivisible batch (`IndivisibleError`), Keras' TensorFlow
trainer fails on an indivisible first batch, and on a later one it gives the
replicas unequal slices whose mean losses weigh examples unequally (a last batch
of 3 split 2 + 1 moved the weights by 2e-2 from the one-device run).

Single host only: multi-host JAX (`keras.distribution.initialize`, where `fit`
takes each process's share of the batch) and `MultiWorkerMirroredStrategy` are
not set up here.

Trying it on one machine without accelerators: virtual CPU devices.

- JAX: `XLA_FLAGS=--xla_force_host_platform_device_count=2` in the environment
  before JAX initialises its backend (safest: before Python starts), or
  `virtual_cpu_devices(2)` before the first JAX computation.
- TensorFlow: `virtual_cpu_devices(2)` before TensorFlow initialises its runtime
  (before any tensor or model is created).

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python train.py --distribution auto
"""

import contextlib
import glob
import os

import keras

from keras_dynconv.layers.validation import positive_int

STRATEGIES = ("auto", "none", "data_parallel", "mirrored", "tpu")

_BACKEND_STRATEGIES = {
    "jax": ("auto", "none", "data_parallel"),
    "tensorflow": ("auto", "none", "mirrored", "tpu"),
}
_SINGLE_DEVICE_STRATEGIES = ("auto", "none")
_STRATEGY_BACKENDS = {"data_parallel": "jax", "mirrored": "tensorflow", "tpu": "tensorflow"}
_TPU_ENVIRONMENT_VARIABLES = ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG")
_DESCRIPTIONS = {
    "none": "no distribution",
    "data_parallel": "keras.distribution.DataParallel",
    "mirrored": "tf.distribute.MirroredStrategy",
    "tpu": "tf.distribute.TPUStrategy",
}


def supported_strategies(backend=None):
    """The strategy names `distribution_plan` accepts on a backend.

    Args:
        backend: `"tensorflow"`, `"jax"`, `"torch"`...; defaults to the current
            Keras backend.

    Returns:
        A tuple of names, `"auto"` and `"none"` first.

    Example:
    >>> supported_strategies("jax")
    ('auto', 'none', 'data_parallel')
    >>> supported_strategies("torch")
    ('auto', 'none')
    """
    backend = backend or keras.backend.backend()
    return _BACKEND_STRATEGIES.get(backend, _SINGLE_DEVICE_STRATEGIES)


class DistributionPlan:
    """How `model.fit` runs: a strategy, its devices and the scope to train in.

    Made by `distribution_plan`; build, compile and fit the model inside
    `scope()`.

    Attributes:
        kind: `"none"`, `"data_parallel"`, `"mirrored"` or `"tpu"` (never
            `"auto"`: the resolved choice).
        backend: the Keras backend the plan was made for.
        devices: tuple of device names the replicas run on (empty for `"none"`).
        strategy: the backend object: a `keras.distribution.DataParallel`, a
            `tf.distribute.Strategy`, or `None`.

    Example:
    >>> plan = distribution_plan("none")
    >>> plan.kind, plan.num_replicas
    ('none', 1)
    >>> with plan.scope():
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    ...     model.compile(optimizer="sgd", loss="mse")
    """

    def __init__(self, kind, backend, devices=(), strategy=None):
        self.kind = kind
        self.backend = backend
        self.devices = tuple(devices)
        self.strategy = strategy

    @property
    def num_replicas(self):
        """Number of model replicas; the global batch is split between them.

        Example:
        >>> distribution_plan("none").num_replicas
        1
        """
        if self.kind in ("mirrored", "tpu"):
            return int(self.strategy.num_replicas_in_sync)
        if self.kind == "data_parallel":
            return int(self.strategy.num_model_replicas)
        return 1

    @property
    def is_distributed(self):
        """Whether more than one replica trains.

        Example:
        >>> distribution_plan("none").is_distributed
        False
        """
        return self.num_replicas > 1

    def scope(self):
        """Context manager to build, compile and `fit` (and evaluate) the model in.

        On JAX it makes the `keras.distribution.DataParallel` current (variables
        created in it are replicated on the devices, `fit` shards its batches);
        on TensorFlow it is the strategy's scope (models remember the strategy
        they were created under). With `"none"` it does nothing.

        Example:
        >>> import numpy as np
        >>> plan = distribution_plan("auto")
        >>> with plan.scope():
        ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        ...     model.compile(optimizer="sgd", loss="mse")
        ...     history = model.fit(np.ones((8, 4)), np.ones((8, 2)),
        ...                         batch_size=plan.global_batch_size(4), verbose=0)
        """
        if self.strategy is None:
            return contextlib.nullcontext()
        return self.strategy.scope()

    def global_batch_size(self, per_replica_batch_size):
        """The `fit` batch size that gives each replica `per_replica_batch_size`.

        Example:
        >>> distribution_plan("none").global_batch_size(32)
        32
        """
        per_replica_batch_size = positive_int("per_replica_batch_size", per_replica_batch_size)
        return per_replica_batch_size * self.num_replicas

    def per_replica_batch_size(self, global_batch_size):
        """Each replica's share of `global_batch_size`, which must divide evenly.

        Raises:
            ValueError: if `global_batch_size` is not a multiple of `num_replicas`.

        Example:
        >>> distribution_plan("none").per_replica_batch_size(32)
        32
        """
        global_batch_size = positive_int("global_batch_size", global_batch_size)
        if global_batch_size % self.num_replicas:
            raise ValueError(
                "The global batch size must be a multiple of the number of replicas "
                f"({self.num_replicas}, strategy {self.kind!r}). Received: "
                f"global_batch_size={global_batch_size}"
            )
        return global_batch_size // self.num_replicas

    def describe(self):
        """One line for logs: strategy, backend, replicas and devices.

        Example:
        >>> distribution_plan("none").describe()  # doctest: +ELLIPSIS
        'distribution: none (no distribution) on ..., 1 replica'
        """
        replicas = self.num_replicas
        text = (
            f"distribution: {self.kind} ({_DESCRIPTIONS[self.kind]}) on {self.backend}, "
            f"{replicas} replica{'s' if replicas != 1 else ''}"
        )
        if self.devices:
            text += f" on {', '.join(self.devices)}"
        return text

    def __repr__(self):
        return (
            f"<DistributionPlan kind={self.kind!r} backend={self.backend!r} "
            f"num_replicas={self.num_replicas} devices={list(self.devices)}>"
        )


def distribution_plan(strategy="auto", tpu=None, devices=None):
    """Chooses how `model.fit` uses the devices of this machine.

    Args:
        strategy: `"auto"`, `"none"`, `"data_parallel"` (JAX), `"mirrored"`
            (TensorFlow) or `"tpu"` (TensorFlow); see the module docstring.
        tpu: with `strategy="tpu"` only: a TPU name, a `"grpc://host:port"`
            address, `"local"` (TPU VM), or `None` (environment variables or a
            local TPU).
        devices: the devices of a multi-device strategy: an int `n` (the first
            `n` default devices) or a list of names (JAX: `"cpu:0"`, `"gpu:1"`,
            or `jax.Device`s; TensorFlow: `"/gpu:0"`, `"CPU:1"`, ...). Defaults to
            all GPUs (TPU cores on JAX), else all (logical) CPU devices. With
            `"auto"`, more than one device selects the multi-device strategy.

    Returns:
        A `DistributionPlan`.

    Raises:
        ValueError: unknown strategy, a strategy the backend does not support,
            unknown devices, or `strategy="tpu"` with no TPU named or found.
        RuntimeError: the TPU could not be reached or initialised.

    Example:
    >>> plan = distribution_plan("auto")
    >>> print(plan.describe())  # doctest: +SKIP
    distribution: data_parallel (keras.distribution.DataParallel) on jax, 2 replicas on cpu:0, cpu:1
    >>> with plan.scope():
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    ...     model.compile(optimizer="sgd", loss="mse")
    """
    if strategy is None:
        strategy = "none"
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid value for argument `strategy`. Expected one of {STRATEGIES}. "
            f"Received: strategy={strategy!r}"
        )
    backend = keras.backend.backend()
    valid = supported_strategies(backend)
    if strategy not in valid:
        raise ValueError(
            f"strategy={strategy!r} is not supported on the {backend} backend: it is "
            f"the {_STRATEGY_BACKENDS[strategy]} backend's strategy ('data_parallel' "
            "runs on jax; 'mirrored' and 'tpu' on tensorflow; Keras' torch trainer has "
            f"no multi-device data parallelism). Expected one of {valid} on {backend}. "
            f"Received: strategy={strategy!r}"
        )
    if tpu is not None and strategy != "tpu":
        raise ValueError(
            f"Argument `tpu` is only used with strategy='tpu'. Received: tpu={tpu!r} "
            f"with strategy={strategy!r}"
        )
    if strategy == "none":
        if devices is not None:
            raise ValueError(
                "Argument `devices` is only used by multi-device strategies. Received: "
                f"devices={devices!r} with strategy='none'"
            )
        return DistributionPlan("none", backend)
    if backend == "jax":
        return _jax_plan(strategy, devices)
    if backend == "tensorflow":
        if strategy == "tpu":
            if devices is not None:
                raise ValueError(
                    "Argument `devices` is not used with strategy='tpu' (the TPU "
                    f"system's cores are). Received: devices={devices!r}"
                )
            return _tpu_plan(tpu)
        return _mirrored_plan(strategy, devices)
    if devices is not None:
        raise ValueError(
            f"Argument `devices` is only used by multi-device strategies, which the "
            f"{backend} backend does not support. Received: devices={devices!r}"
        )
    return DistributionPlan("none", backend)


def virtual_cpu_devices(n):
    """Splits the host CPU into `n` devices, to try multi-device training anywhere.

    JAX: sets `jax_num_cpu_devices` (like
    `XLA_FLAGS=--xla_force_host_platform_device_count=n`); must run before the
    first JAX computation. TensorFlow: `tf.config.set_logical_device_configuration`
    on the CPU; must run before TensorFlow initialises its runtime (before any
    tensor, variable or model is created). Calling it again with the same `n`
    is harmless.

    Args:
        n: number of CPU devices, >= 1.

    Returns:
        The CPU device names, usable as `distribution_plan(devices=...)`.

    Raises:
        RuntimeError: the backend is already initialised with another count.
        ValueError: on other backends (no multi-device training).

    Example:
    >>> import keras_dynconv.training.distribution as dist  # doctest: +SKIP
    >>> dist.virtual_cpu_devices(2)  # first thing in the script  # doctest: +SKIP
    ['/device:CPU:0', '/device:CPU:1']
    >>> dist.distribution_plan("auto").num_replicas  # doctest: +SKIP
    2
    """
    n = positive_int("n", n)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
            )
        except RuntimeError as error:
            if len(tf.config.list_logical_devices("CPU")) != n:
                raise RuntimeError(
                    f"Cannot split the CPU into {n} TensorFlow devices: TensorFlow is "
                    "already initialised with "
                    f"{len(tf.config.list_logical_devices('CPU'))}. Call "
                    "virtual_cpu_devices() first thing in the program."
                ) from error
        return [device.name for device in tf.config.list_logical_devices("CPU")]
    if backend == "jax":
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", n)
        except RuntimeError as error:
            if len(jax.devices("cpu")) != n:
                raise RuntimeError(
                    f"Cannot split the CPU into {n} JAX devices: JAX is already "
                    f"initialised with {len(jax.devices('cpu'))}. Call "
                    "virtual_cpu_devices() before the first JAX computation, or set "
                    f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before "
                    "starting Python."
                ) from error
        return [f"cpu:{device.id}" for device in jax.devices("cpu")]
    raise ValueError(
        f"virtual_cpu_devices() needs the jax or tensorflow backend: Keras' {backend} "
        "trainer has no multi-device data parallelism. Received: backend="
        f"{backend!r}"
    )


def _select(name_list, devices, backend):
    """Default devices (`devices=None`), the first `n`, or an explicit list."""
    if devices is None:
        return list(name_list)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(name_list):
            raise ValueError(
                f"Invalid value for argument `devices`: {backend} has {len(name_list)} "
                f"device(s) ({', '.join(name_list)}). Received: devices={devices}"
            )
        return list(name_list[:devices])
    if isinstance(devices, str) or not devices:
        raise ValueError(
            "Invalid value for argument `devices`. Expected a positive int or a "
            f"non-empty list of device names. Received: devices={devices!r}"
        )
    return list(devices)


def _jax_plan(strategy, devices):
    available = keras.distribution.list_devices()
    selected = _select(available, devices, "jax")
    names = [_jax_device_name(device) for device in selected]
    unknown = [name for name in names if name not in _jax_all_device_names()]
    if unknown:
        raise ValueError(
            f"Invalid value for argument `devices`: unknown JAX devices {unknown}. "
            f"Available: {available}. Received: devices={devices!r}"
        )
    if strategy == "auto" and len(selected) < 2:
        return DistributionPlan("none", "jax")
    return DistributionPlan(
        "data_parallel", "jax", names, keras.distribution.DataParallel(devices=selected)
    )


def _jax_device_name(device):
    if isinstance(device, str):
        return device.lower()
    return f"{device.platform}:{device.id}"


def _jax_all_device_names():
    import jax

    return {f"{device.platform}:{device.id}" for device in jax.devices()} | {
        f"cpu:{device.id}" for device in jax.devices("cpu")
    }


def _mirrored_plan(strategy, devices):
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    selected = _select(gpus or cpus, devices, "tensorflow")
    known = {_tf_device_key(name): name for name in gpus + cpus}
    try:
        keys = [_tf_device_key(name) for name in selected]
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Invalid value for argument `devices`: {error}. Received: devices={devices!r}"
        ) from error
    unknown = [name for name, key in zip(selected, keys) if key not in known]
    if unknown:
        raise ValueError(
            f"Invalid value for argument `devices`: unknown TensorFlow devices {unknown}. "
            f"Available: {gpus + cpus} (more CPU devices: call virtual_cpu_devices(n) "
            f"before TensorFlow initialises). Received: devices={devices!r}"
        )
    names = [known[key] for key in keys]
    if strategy == "auto" and len(names) < 2:
        return DistributionPlan("none", "tensorflow")
    return DistributionPlan("mirrored", "tensorflow", names, tf.distribute.MirroredStrategy(names))


def _tf_device_key(name):
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(str(name))
    if spec.device_type is None or spec.device_index is None:
        raise ValueError(f"device {name!r} has no type and index (e.g. '/gpu:0')")
    return spec.device_type.upper(), spec.device_index


def _tpu_address(tpu):
    """The `tpu` for the resolver; a fast `ValueError` when nothing points to a TPU.

    Without a name, `TPUClusterResolver` reads the environment variables; with a
    plain TPU name it queries the GCE metadata server. Check first so that a
    machine with no TPU fails at once instead of trying the network.
    """
    if tpu:
        return tpu
    if any(os.environ.get(name) for name in _TPU_ENVIRONMENT_VARIABLES):
        return None
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return "local"
    raise ValueError(
        "strategy='tpu' found no TPU: pass tpu=<TPU name>, tpu='grpc://host:port' or "
        "tpu='local' (TPU VM), or set one of the environment variables "
        f"{', '.join(_TPU_ENVIRONMENT_VARIABLES)}. Received: tpu={tpu!r}"
    )


def _tpu_plan(tpu):
    import tensorflow as tf

    address = _tpu_address(tpu)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    except Exception as error:  # resolver, metadata server and gRPC errors vary
        raise RuntimeError(
            f"strategy='tpu' could not connect to or initialise the TPU {address!r}: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    return DistributionPlan("tpu", "tensorflow", strategy.extended.worker_devices, strategy)
