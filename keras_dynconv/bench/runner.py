"""Several backends: one worker process per backend, rows handed over as JSON.

A Keras process runs one backend, so each backend of a benchmark runs
`python -m keras_dynconv.bench.worker` with KERAS_BACKEND set; the plan goes in and
the rows come back through files in a temporary directory. When only the current
backend is asked (and no thread count), it runs in this process instead
(`in_process="auto"`). A
backend that fails (not installed, crashed, killed) leaves an error row and the
rows it finished; the other backends still run.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from keras_dynconv.bench.spec import BACKENDS
from keras_dynconv.bench.spec import check_choices
from keras_dynconv.bench.spec import new_row

WORKER_MODULE = "keras_dynconv.bench.worker"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "TF_NUM_INTRAOP_THREADS")


@dataclasses.dataclass
class BenchmarkResult:
    """`rows` of every backend (no ratios yet), `notes`, and per backend `backends`:
    `{"device", "gpu", "versions", "process", "error"}`.

    Example:
    >>> result = run_benchmark(plan, backends=["jax", "torch"])  # doctest: +SKIP
    >>> result.backends["torch"]["process"]  # doctest: +SKIP
    'subprocess'
    """

    rows: list
    notes: list
    backends: dict


def current_backend():
    import keras

    return keras.backend.backend()


def worker_environment(backend, threads=None):
    """The environment of `backend`'s worker: this one with KERAS_BACKEND set, quiet
    TensorFlow logs, this package importable, and thread caps when `threads`."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if threads:
        env.update(dict.fromkeys(_THREAD_VARIABLES, str(threads)))
    return env


def _last_error_line(stderr_text):
    lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def _run_worker(backend, plan, progress, interpreter=None):
    """`(rows, notes, backend_info)` of one worker subprocess, run by `interpreter`
    (default: this one)."""
    with tempfile.TemporaryDirectory(prefix="keras-dynconv-bench-") as directory:
        plan_path = os.path.join(directory, "plan.json")
        result_path = os.path.join(directory, "result.json")
        stderr_path = os.path.join(directory, "stderr.txt")
        with open(plan_path, "w") as file:
            file.write(plan.to_json())
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(
                [interpreter or sys.executable, "-m", WORKER_MODULE, plan_path, result_path],
                env=worker_environment(backend, plan.threads), stdout=subprocess.PIPE,
                stderr=stderr, text=True,
            )
            try:
                for line in process.stdout:
                    progress(line.rstrip("\n"))
                code = process.wait()
            finally:
                if process.poll() is None:  # interrupted: leave no orphan behind
                    process.kill()
                    process.wait()
        result = {}
        if os.path.exists(result_path):
            with open(result_path) as file:
                result = json.load(file)
        with open(stderr_path) as file:
            stderr_text = file.read()
    rows, notes = result.get("rows", []), result.get("notes", [])
    info = {**result.get("device", {"backend": backend, "device": None, "gpu": None}),
            "versions": result.get("versions", {}), "process": "subprocess", "error": None}
    if code != 0 or not result.get("finished"):
        info["error"] = f"worker exited with code {code}: {_last_error_line(stderr_text)}"
        rows.append(new_row(backend=backend, framework="keras", model="(worker)",
                            error=info["error"]))
        progress(f"{backend}: {info['error']}")
    return rows, notes, info


def _run_here(plan, progress):
    from keras_dynconv.bench.measure import backend_versions
    from keras_dynconv.bench.measure import device_description
    from keras_dynconv.bench.measure import measure_backend
    from keras_dynconv.bench.report import progress_line

    rows, notes = measure_backend(plan, on_row=lambda row: progress(progress_line(row)))
    info = {**device_description(), "versions": backend_versions(), "process": "in-process",
            "error": None}
    return rows, notes, info


def check_interpreters(interpreters, backends):
    """`interpreters` ({backend: python executable}) checked against `backends`."""
    interpreters = dict(interpreters or {})
    for backend, path in interpreters.items():
        if backend not in backends:
            raise ValueError(
                f"Invalid interpreter for backend {backend!r}: it is not among the "
                f"backends {list(backends)}"
            )
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ValueError(
                f"Invalid interpreter for backend {backend!r}: {path!r} is not an "
                "executable file"
            )
    return interpreters


def run_benchmark(plan, backends=None, in_process="auto", progress=print, interpreters=None):
    """Measures `plan` on each of `backends` (default: the current one) -> `BenchmarkResult`.

    `in_process`: "auto" runs here when `backends` is only the current backend and
    `plan.threads` is not set (XLA and TensorFlow size their thread pools once per
    process), True insists on it (then it must be the only backend), False always
    starts a worker.
    `progress(line)` receives one line per measured row.
    `interpreters` maps a backend to the Python that runs its worker, e.g.
    `{"torch": ".venv-timm/bin/python"}` to compare with timm from an environment
    that has it; that backend then always runs in a worker.

    >>> from keras_dynconv.bench import BenchmarkPlan, run_benchmark
    >>> plan = BenchmarkPlan("mobilenet_v1:alpha=0.25", batch_sizes=(2,), image_size=32,
    ...                      modes=("inference",), warmup=1, repeats=2)
    >>> result = run_benchmark(plan, backends=["jax"])  # doctest: +SKIP
    >>> [row["backend"] for row in result.rows]  # doctest: +SKIP
    ['jax']
    """
    current = current_backend()
    backends = check_choices("backends", backends or (current,), BACKENDS)
    if in_process not in ("auto", True, False):
        raise ValueError(f"Invalid value for argument `in_process`: {in_process!r}")
    interpreters = check_interpreters(interpreters, backends)
    here = backends == (current,) and current not in interpreters and (
        in_process is True or (in_process == "auto" and not plan.threads)
    )
    if in_process is True and not here:
        raise ValueError(
            f"Invalid value for argument `in_process`: True needs backends == ({current!r},) "
            f"and no other interpreter for it, received backends {list(backends)}"
        )
    rows, notes, infos = [], [], {}
    if plan.timm and "torch" not in backends:
        notes.append(f"--timm {plan.timm}: timm runs on torch, which is not among the "
                     f"backends {list(backends)}; no timm rows")
    for backend in backends:
        backend_rows, backend_notes, infos[backend] = (
            _run_here(plan, progress) if here
            else _run_worker(backend, plan, progress, interpreters.get(backend))
        )
        rows += backend_rows
        notes += backend_notes
    return BenchmarkResult(rows=rows, notes=notes, backends=infos)
