"""One backend, in this process: build each model, compile its step, time it.

    KERAS_BACKEND=jax python -c "
    from keras_dynconv.bench import BenchmarkPlan, measure_backend
    rows, notes = measure_backend(BenchmarkPlan('mobilenet_v1:alpha=0.25', batch_sizes=(2,),
                                                image_size=32, modes=('inference',)))"

Each row: build the model under its dtype policy, compile the callable (its first
call, timed as `first_call_s`), `warmup` more calls, then `repeats` timed calls with
`time.perf_counter`, each ending once the device is done. The models of one (dtype,
mode, batch) group are prepared first and then timed in turns, call by call. Inference: a jitted
`stateless_call` on JAX, `tf.function(jit_compile=True)` on TensorFlow (without XLA,
noted, if XLA fails; plain `tf.function` with `tf_xla="off"`), `torch.no_grad()` eager calls on torch, or `torch.compile` with
`torch_compile` (eager, noted, if compiling fails). Training: one `train_on_batch` of
SGD with momentum, compiled the way Keras compiles it by default on the backend (on
TensorFlow: XLA only where there is a GPU), or with XLA forced by `tf_xla="on"`.
"""

import ctypes
import gc
import inspect
import os
import resource
import statistics
import sys
import time

import keras
import numpy as np

from keras_dynconv.bench.spec import new_row

SOURCE_RSS = "rss_peak_growth"
SOURCE_PROCESS_RSS = "rss_peak_growth (process peak)"
_AUTOCAST = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _first_line(error):
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


# --- devices and memory ---------------------------------------------------------
def _torch_cuda():
    import torch

    return torch.cuda.is_available()


def _tf_gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def synchronize():
    """Waits for the device to finish what was queued (JAX: block the outputs instead)."""
    backend = keras.backend.backend()
    if backend == "torch" and _torch_cuda():
        import torch

        torch.cuda.synchronize()
    elif backend == "tensorflow" and _tf_gpus():
        import tensorflow as tf

        tf.test.experimental.sync_devices()


def device_description():
    """`{"backend", "device", "gpu"}` of this process (`gpu` None on CPU), and on torch
    on a CPU `native_depthwise`: whether `keras_dynconv.ops.native_depthwise` runs."""
    backend = keras.backend.backend()
    gpu = None
    if backend == "torch" and _torch_cuda():
        import torch

        gpu = torch.cuda.get_device_name(0)
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            gpu = device.device_kind
    elif backend == "tensorflow" and _tf_gpus():
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(_tf_gpus()[0])
        gpu = details.get("device_name", _tf_gpus()[0].name)
    description = {"backend": backend, "device": gpu or "cpu", "gpu": gpu}
    if backend == "torch" and gpu is None:
        from keras_dynconv.ops import native_depthwise

        # Whether CondConv's depthwise layers ran the compiled kernel or the folded path.
        description["native_depthwise"] = (
            native_depthwise.enabled() and native_depthwise.kernel_function() is not None
        )
    return description


def backend_versions():
    """Versions of Keras and of the backend library this process runs."""
    backend = keras.backend.backend()
    return {"keras": keras.__version__, backend: sys.modules[backend].__version__}


def _max_rss_bytes():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB


def _status_bytes(field):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _release_freed_memory():
    """Hands memory freed by earlier rows back to the OS (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_rss_peak():
    """Lowers the process' peak RSS to its current RSS (Linux); False where it can't."""
    _release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of what runs inside `with`, the best way this backend can tell.

    `source` names the figure: the device allocator's peak on GPUs (JAX's is the
    process' peak so far: it cannot be reset), otherwise `rss_peak_growth`, the peak
    resident memory during the block less the resident memory before it (Linux resets
    the peak first). Where the peak cannot be reset, `rss_peak_growth (process peak)`
    is how far the block raised `getrusage`'s peak: 0 when an earlier block of the
    process had peaked higher.
    """

    def __enter__(self):
        backend = keras.backend.backend()
        self.source, self.peak_bytes = SOURCE_RSS, None
        if backend == "torch" and _torch_cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.source = "torch.cuda.max_memory_allocated"
        elif backend == "tensorflow" and _tf_gpus():
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
            self.source = "tf get_memory_info peak"
        elif backend == "jax" and "peak_bytes_in_use" in (self._jax_stats() or {}):
            self.source = "jax peak_bytes_in_use (process peak)"
        if self.source == SOURCE_RSS:
            if _reset_rss_peak():
                self._rss_before = _status_bytes("VmRSS")
            else:
                self.source, self._rss_before = SOURCE_PROCESS_RSS, _max_rss_bytes()
        return self

    @staticmethod
    def _jax_stats():
        import jax

        try:
            return jax.devices()[0].memory_stats()
        except Exception:  # CPU clients may not implement it
            return None

    def __exit__(self, *exc_info):
        if self.source == "torch.cuda.max_memory_allocated":
            import torch

            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        elif self.source == "tf get_memory_info peak":
            import tensorflow as tf

            self.peak_bytes = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        elif self.source.startswith("jax"):
            self.peak_bytes = int(self._jax_stats()["peak_bytes_in_use"])
        elif self.source == SOURCE_RSS:
            self.peak_bytes = int(_status_bytes("VmHWM") - self._rss_before)
        else:
            self.peak_bytes = int(_max_rss_bytes() - self._rss_before)
        return False


def apply_threads(threads):
    """Caps this process' compute threads (CPU); returns notes on what could not be set.

    torch: `torch.set_num_threads`; TensorFlow: intra-op threads (only before its
    runtime starts); XLA (JAX, TF's XLA): the CPUs the process may run on, which its
    thread pool follows: the worker subprocess pins itself before anything starts.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        return []
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError as error:  # the runtime is already initialised
            return [f"tensorflow: --threads not applied in this process ({_first_line(error)})"]
        return []
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > threads:
        return [f"jax: --threads {threads} needs a fresh process (XLA sized its pool already)"]
    return []


# --- the measured callables -------------------------------------------------------
def build_model(spec, image_size):
    """The zoo model of `spec` at `image_size` x `image_size` under the current policy."""
    from keras_dynconv import zoo

    return zoo.get_model(spec.name, input_shape=(image_size, image_size, 3), **spec.arguments)


def _timed_first_call(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _inference(model, images, torch_compile, tf_xla="auto"):
    """`(run, execution, note, first_call_s)`; `run()` returns once the device is done."""
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(images)
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def forward(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        def run():
            jax.block_until_ready(forward(trainable, non_trainable, x))

        return run, "jax.jit(stateless_call)", None, _timed_first_call(run)
    if backend == "tensorflow":
        import tensorflow as tf

        def compiled(jit_compile):
            forward = tf.function(lambda t: model(t, training=False), jit_compile=jit_compile)

            def run():
                forward(x)
                synchronize()

            return run

        if tf_xla == "off":
            run = compiled(False)
            return run, "tf.function(jit_compile=False)", None, _timed_first_call(run)
        run = compiled(True)
        try:
            return run, "tf.function(jit_compile=True)", None, _timed_first_call(run)
        except Exception as error:  # an op without an XLA kernel, or XLA itself
            run = compiled(False)
            note = f"XLA failed, ran jit_compile=False: {_first_line(error)}"
            return run, "tf.function(jit_compile=False)", note, _timed_first_call(run)
    import torch

    def call(module):
        def run():
            with torch.no_grad():
                module(x, training=False)
            synchronize()

        return run

    if torch_compile:
        run = call(torch.compile(model))
        try:
            # torch.compile compiles on the first call: that is where it fails.
            return run, "torch.compile", None, _timed_first_call(run)
        except Exception as error:
            note = f"torch.compile failed, ran eager: {_first_line(error)}"
            torch._dynamo.reset()
            run = call(model)
            return run, "eager no_grad", note, _timed_first_call(run)
    run = call(model)
    return run, "eager no_grad", None, _timed_first_call(run)


def _from_logits(spec):
    from keras_dynconv.zoo import model_entry

    parameter = inspect.signature(model_entry(spec.name).builder).parameters.get(
        "classifier_activation"
    )
    default = "softmax" if parameter is None else parameter.default
    return spec.arguments.get("classifier_activation", default) in (None, "linear")


def _train_step(model, spec, images, rng, tf_xla="auto"):
    """`(run, execution, note, first_call_s)` of one `train_on_batch`."""
    classes = model.output.shape[-1]
    labels = keras.ops.convert_to_tensor(rng.integers(0, classes, len(images)).astype("int32"))
    x = keras.ops.convert_to_tensor(images)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=_from_logits(spec)),
        jit_compile={"on": True, "off": False}.get(tf_xla, "auto")
        if keras.backend.backend() == "tensorflow" else "auto",
    )

    def run():
        # Returns the loss as NumPy: the step has finished on the device.
        model.train_on_batch(x, labels)
        synchronize()

    first = _timed_first_call(run)
    return run, f"train_on_batch (jit_compile={model.jit_compile})", None, first


def _timm_inference(spec, images, dtype):
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model(spec.name, pretrained=False, **spec.arguments).eval().to(device)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    if dtype in ("bfloat16", "float16"):
        model, x = model.to(getattr(torch, dtype)), x.to(getattr(torch, dtype))
    autocast = dtype in _AUTOCAST

    def run():
        with torch.no_grad(), torch.autocast(
            device, dtype=getattr(torch, _AUTOCAST.get(dtype, "bfloat16")), enabled=autocast
        ):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()

    parameters = sum(p.numel() for p in model.parameters())
    execution = "timm eager no_grad" + (" autocast" if autocast else "")
    return run, execution, parameters, _timed_first_call(run)


def summarize(times, batch):
    """Median, min, max, quartiles and IQR of `times` (s), images/s at the median."""
    median = statistics.median(times)
    q1, q3 = (float(q) for q in np.percentile(times, [25, 75]))
    return dict(
        median_s=median, min_s=min(times), max_s=max(times), q1_s=q1, q3_s=q3,
        iqr_s=q3 - q1, images_per_s=batch / median,
    )


def _time_once(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _prepare(spec, mode, dtype, batch, plan, framework):
    """`(row, run)`: the row's fixed fields, compiled, warmed up, memory measured.

    `run` is None when building, compiling or warming up failed (`row["error"]`).
    """
    row = new_row(
        backend=keras.backend.backend(), framework=framework, model=str(spec), mode=mode,
        dtype=dtype, batch=batch, image_size=plan.image_size, warmup=plan.warmup,
        repeats=plan.repeats,
    )
    rng = np.random.default_rng(0)
    size = plan.image_size
    images = rng.uniform(0, 255, size=(batch, size, size, 3)).astype("float32")
    previous_policy = keras.config.dtype_policy()
    try:
        with PeakMemory() as memory:
            if framework == "timm":
                run, execution, parameters, first = _timm_inference(spec, images, dtype)
                note = None
            else:
                keras.config.set_dtype_policy(dtype)
                model = build_model(spec, size)
                keras.config.set_dtype_policy(previous_policy)
                parameters = model.count_params()
                if mode == "inference":
                    run, execution, note, first = _inference(
                        model, images, plan.torch_compile, plan.tf_xla)
                else:
                    run, execution, note, first = _train_step(
                        model, spec, images, rng, plan.tf_xla)
            for _ in range(plan.warmup):
                run()
        row.update(execution=execution, note=note, parameters=int(parameters),
                   first_call_s=first, peak_memory_bytes=memory.peak_bytes,
                   memory_source=memory.source)
        return row, run
    except Exception as error:  # one failing model must not cost the others' rows
        row["error"] = _first_line(error)
        return row, None
    finally:
        keras.config.set_dtype_policy(previous_policy)


def measure_group(jobs, mode, dtype, batch, plan):
    """Rows of `COLUMNS` for `jobs` (`(spec, framework)` pairs) timed interleaved.

    Every job is built, compiled and warmed up first (its peak memory measured alone);
    then the timed calls go round the jobs `repeats` times, so a burst of load on a
    shared machine slows every model of a ratio alike instead of one of them. A failure
    becomes that job's `error`; the others go on.

    Example:
    >>> jobs = [(plan.models[0], "keras"), (plan.models[1], "keras")]  # doctest: +SKIP
    >>> rows = measure_group(jobs, "inference", "float32", 32, plan)  # doctest: +SKIP
    """
    prepared = [_prepare(spec, mode, dtype, batch, plan, framework) for spec, framework in jobs]
    times = [[] for _ in prepared]
    try:
        for _ in range(plan.repeats):
            for index, (row, run) in enumerate(prepared):
                if run is None:
                    continue
                try:
                    times[index].append(_time_once(run))
                except Exception as error:
                    row["error"] = _first_line(error)
                    prepared[index] = (row, None)
        rows = []
        for (row, run), measured in zip(prepared, times):
            if run is not None:
                row.update(summarize(measured, batch))
            rows.append(row)
        return rows
    finally:
        del prepared
        keras.backend.clear_session()
        gc.collect()


def measure_row(spec, mode, dtype, batch, plan, framework="keras"):
    """One row of `COLUMNS` for `spec` measured alone (a group of one).

    Example:
    >>> plan = BenchmarkPlan("mobilenet_v1:alpha=0.25", batch_sizes=(2,), image_size=32,
    ...                      warmup=1, repeats=2)  # doctest: +SKIP
    >>> row = measure_row(plan.models[0], "inference", "float32", 2, plan)  # doctest: +SKIP
    >>> row["median_s"] > 0  # doctest: +SKIP
    True
    """
    return measure_group([(spec, framework)], mode, dtype, batch, plan)[0]


def _timm_notes(plan):
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return [f"--timm {plan.timm}: timm is not installed (pip install timm); no timm rows"]
    if "inference" not in plan.modes:
        return [f"--timm {plan.timm}: timm rows are inference only; none asked"]
    return []


def measure_backend(plan, on_row=None):
    """Measures `plan` on the current backend in this process -> `(rows, notes)`.

    Rows come dtype by dtype, mode by mode, batch by batch, every model in turn; the
    models of one (dtype, mode, batch) group are timed interleaved (`measure_group`),
    so only their ratios are meaningful on a noisy machine. `on_row(row)` is called
    after each.
    With `plan.timm`, the torch backend adds timm's model (inference) after each
    batch's models, when timm is installed (otherwise a note says so).

    Example:
    >>> rows, notes = measure_backend(plan, on_row=print)  # doctest: +SKIP
    """
    from keras_dynconv.bench.spec import parse_model_spec

    notes = apply_threads(plan.threads) if plan.threads else []
    timm_spec = None
    if plan.timm and keras.backend.backend() == "torch":
        timm_notes = _timm_notes(plan)
        notes += timm_notes
        if not timm_notes:
            timm_spec = parse_model_spec(plan.timm, check_registry=False)
    rows = []
    for dtype in plan.dtypes:
        for mode in plan.modes:
            for batch in plan.batch_sizes:
                jobs = [(spec, "keras") for spec in plan.models]
                if timm_spec is not None and mode == "inference":
                    jobs.append((timm_spec, "timm"))
                for row in measure_group(jobs, mode, dtype, batch, plan):
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
    return rows, notes
