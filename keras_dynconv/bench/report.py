"""Benchmark results: ratios against the baseline, CSV, Markdown, machine, plot.

    report = write_report(result, plan, command="keras-dynconv bench ...")
    print(report.table)          # the Markdown table; files in report.paths

`results.csv` has every column of `COLUMNS` (seconds per batch; `read_csv` reads it
back with numbers), `results.md` the machine, the command, a table and the notes,
`machine.json` the machine and library versions, `ratios.png` the time ratio to the
baseline per batch size, one panel per backend (when matplotlib is installed).
"""

import csv
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re

from keras_dynconv.bench.spec import COLUMNS

_INT_COLUMNS = ("batch", "image_size", "parameters", "warmup", "repeats", "peak_memory_bytes")
_FLOAT_COLUMNS = ("first_call_s", "median_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s",
                  "images_per_s", "ratio")
# Library -> the distributions that install it (TensorFlow comes in several builds).
_DISTRIBUTIONS = {
    "keras": ("keras",), "torch": ("torch",), "jax": ("jax",), "jaxlib": ("jaxlib",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"), "numpy": ("numpy",),
    "keras-dynconv": ("keras-dynconv",), "timm": ("timm",), "matplotlib": ("matplotlib",),
}
_SLUG_NOISE = re.compile(
    r"\(r\)|\(tm\)|@.*$|\b(cpu|processor|intel|amd|nvidia|geforce|tesla|\d+-core)\b"
)


# --- ratios -------------------------------------------------------------------------
def _group(row):
    return row["backend"], row["batch"], row["mode"], row["dtype"]


def add_ratios(rows, baseline):
    """Copies of `rows` with `ratio` = median / the baseline's median in the same
    (backend, batch, mode, dtype); None without a baseline figure there.

    >>> rows = [dict(backend="jax", batch=8, mode="inference", dtype="float32",
    ...              framework="keras", model=m, median_s=t, error=None)
    ...         for m, t in (("b0", 0.02), ("cc_b0", 0.03))]
    >>> [row["ratio"] for row in add_ratios(rows, "b0")]
    [1.0, 1.5]
    """
    reference = {
        _group(row): row["median_s"] for row in rows
        if row["model"] == baseline and row["framework"] == "keras" and not row["error"]
        and row["median_s"]
    }
    result = []
    for row in rows:
        base = reference.get(_group(row))
        ratio = None if base is None or row["error"] else row["median_s"] / base
        result.append({**row, "ratio": ratio})
    return result


# --- CSV ----------------------------------------------------------------------------
def write_csv(rows, path):
    """`rows` as CSV with the `COLUMNS` header (empty cells for None)."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in COLUMNS})


def read_csv(path):
    """The rows of a `results.csv`, numbers as int/float and empty cells as None.

    Example:
    >>> rows = read_csv("zoo/benchmarks/2026-11-26-cpu/timm/results.csv")  # doctest: +SKIP
    >>> [(row["model"], row["ratio"]) for row in rows if row["batch"] == 32]  # doctest: +SKIP
    """
    rows = []
    with open(path, newline="") as file:
        for record in csv.DictReader(file):
            row = {}
            for key, text in record.items():
                if text == "":
                    row[key] = None
                elif key in _INT_COLUMNS:
                    row[key] = int(text)
                elif key in _FLOAT_COLUMNS:
                    row[key] = float(text)
                else:
                    row[key] = text
            rows.append(row)
    return rows


# --- text ---------------------------------------------------------------------------
def _ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _mib(row):
    if row["peak_memory_bytes"] is None:
        return "-"
    return f"{row['peak_memory_bytes'] / 2**20:.0f}"


def model_label(row):
    return row["model"] + (f" ({row['framework']})" if row["framework"] != "keras" else "")


def progress_line(row):
    """One line per measured row, as the benchmark prints it."""
    head = f"{row['backend']} {model_label(row)} {row['mode']} {row['dtype']} batch {row['batch']}"
    if row["error"]:
        return f"{head}: FAILED {row['error']}"
    line = (
        f"{head}: median {_ms(row['median_s'])} ms (IQR {_ms(row['iqr_s'])}, "
        f"min {_ms(row['min_s'])}, max {_ms(row['max_s'])}), "
        f"{row['images_per_s']:.1f} images/s, first call {row['first_call_s']:.2f} s, "
        f"peak {_mib(row)} MiB ({row['memory_source']}), {row['execution']}"
    )
    return line + (f"; note: {row['note']}" if row["note"] else "")


def markdown_table(rows):
    """A Markdown table of `rows` (times in ms per batch, memory in MiB).

    Example:
    >>> print(markdown_table(add_ratios(result.rows, plan.baseline)))  # doctest: +SKIP
    """
    header = ("backend", "model", "mode", "dtype", "batch", "execution", "median ms",
              "IQR ms", "min-max ms", "images/s", "ratio", "peak MiB", "memory source",
              "note")
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if h in header[4:5] + header[6:12] else "---"
                                for h in header) + " |"]
    for row in rows:
        failed = bool(row["error"])
        cells = (
            row["backend"], model_label(row), row["mode"] or "-", row["dtype"] or "-",
            "-" if row["batch"] is None else str(row["batch"]), row["execution"] or "-",
            _ms(row["median_s"]), _ms(row["iqr_s"]),
            "-" if failed else f"{_ms(row['min_s'])}-{_ms(row['max_s'])}",
            "-" if failed else f"{row['images_per_s']:.1f}",
            "-" if row.get("ratio") is None else f"{row['ratio']:.3f}",
            _mib(row), row["memory_source"] or "-",
            f"error: {row['error']}" if failed else row["note"] or "",
        )
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def markdown_report(rows, machine, notes):
    """`results.md`: what ran where, the table and the notes."""
    gpu = machine["gpu"] or "no GPU"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        f"# Benchmark {machine['date'][:10]}: {gpu}, {machine['cpu_model']}",
        "",
        f"{machine['cpu_count']} CPUs ({machine['usable_cpus']} usable), {versions}.",
        f"Baseline: `{machine['plan']['baseline']}` (ratio = median time / the baseline's "
        "median time, same backend, batch, mode and dtype). Times are per batch, median "
        f"of {_plural(machine['plan']['repeats'], 'timed call')} after the compiling first "
        f"call and {_plural(machine['plan']['warmup'], 'warm-up call')}.",
        "",
        "```bash",
        machine["command"] or "(not recorded)",
        "```",
        "",
    ]
    environment = machine.get("environment")
    if environment:
        settings = ", ".join(f"`{name}={value}`" for name, value in environment.items())
        lines += [f"Environment: {settings}.", ""]
    lines += [markdown_table(rows)]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# --- the machine ----------------------------------------------------------------------
def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def installed_versions():
    """Versions of the installed libraries a benchmark depends on (None: absent)."""
    versions = dict.fromkeys(_DISTRIBUTIONS)
    for library, distributions in _DISTRIBUTIONS.items():
        for distribution in distributions:
            try:
                versions[library] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
    return versions


# Settings that change timings without changing the code: thread counts, compiler
# flags, the allocator (glibc's MALLOC_* variables, a preloaded jemalloc/tcmalloc,
# torch's huge pages for large CPU tensors).
_TIMING_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS", "XLA_FLAGS", "TF_XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS",
    "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE", "KERAS_DYNCONV_NATIVE",
)


def timing_environment(environ=None):
    """The environment variables set here that change timings (`_TIMING_VARIABLES` and
    every `MALLOC_*`), name -> value; the benchmark's workers inherit them.

    Example:
    >>> timing_environment({"MALLOC_TRIM_THRESHOLD_": "2147483648", "HOME": "/root",
    ...                     "THP_MEM_ALLOC_ENABLE": "1"})
    {'MALLOC_TRIM_THRESHOLD_': '2147483648', 'THP_MEM_ALLOC_ENABLE': '1'}
    """
    environ = os.environ if environ is None else environ
    return {
        name: environ[name]
        for name in sorted(environ)
        if name in _TIMING_VARIABLES or name.startswith("MALLOC_")
    }


def machine_description(backends, command=None, plan=None):
    """What `machine.json` holds: date, CPU, cores, GPU, versions, command, the
    environment variables that change timings, plan.

    `backends` is `BenchmarkResult.backends` (each backend's device and versions).

    Example:
    >>> machine_description(result.backends, command="keras-dynconv bench ...")["cpu"]  # doctest: +SKIP
    """
    gpus = [info["gpu"] for info in backends.values() if info.get("gpu")]
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count())
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(usable),
        "gpu": gpus[0] if gpus else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": installed_versions(),
        "backends": backends,
        "command": command,
        "environment": timing_environment(),
        "plan": None if plan is None else json.loads(plan.to_json()),
    }


def _slug(text, words=3):
    return "-".join(re.findall(r"[a-z0-9]+", _SLUG_NOISE.sub(" ", text.lower()))[:words])


def machine_tag(machine):
    """A short tag naming the hardware, never the host: `h200`, `cpu2-xeon-platinum-8375c`."""
    if machine["gpu"]:
        return _slug(machine["gpu"]) or "gpu"
    return f"cpu{machine['usable_cpus']}-" + (_slug(machine["cpu_model"]) or "unknown")


def default_output_dir(machine):
    """`zoo/benchmarks/<date>-<machine tag>` (relative to the current directory)."""
    return os.path.join("zoo", "benchmarks", f"{machine['date'][:10]}-{machine_tag(machine)}")


# --- the plot -------------------------------------------------------------------------
def plot_ratios(rows, path, baseline):
    """Writes the time ratio per batch size, one panel per backend, to `path`.

    Returns None, or a note saying why there is no plot (no matplotlib, no ratios).
    Uses the Agg canvas directly: the caller's pyplot backend is left alone.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no ratios.png"
    compared = [row for row in rows if row["ratio"] is not None
                and not (row["model"] == baseline and row["framework"] == "keras")]
    backends = sorted({row["backend"] for row in compared})
    if not backends:
        return "no model to compare with the baseline: no ratios.png"
    figure = Figure(figsize=(5.5 * len(backends), 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(backends), squeeze=False, sharey=True)[0]
    for axis, backend in zip(axes, backends):
        series = {}
        for row in compared:
            if row["backend"] == backend:
                key = f"{model_label(row)}, {row['mode']}, {row['dtype']}"
                series.setdefault(key, []).append((row["batch"], row["ratio"]))
        for label, points in series.items():
            batches, ratios = zip(*sorted(points))
            axis.plot(batches, ratios, marker="o", label=label)
        axis.axhline(1.0, color="gray", linestyle="--", linewidth=1, label=f"{baseline} (baseline)")
        batches = sorted({row["batch"] for row in compared if row["backend"] == backend})
        axis.set_xscale("log", base=2)
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.set_title(backend)
        axis.set_xlabel("batch size")
        axis.legend(fontsize=7)
    axes[0].set_ylabel("time per batch / baseline's")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return None


# --- everything -----------------------------------------------------------------------
@dataclasses.dataclass
class WrittenReport:
    """What `write_report` wrote: rows with ratios, the machine, notes and paths."""

    output_dir: str
    paths: dict
    rows: list
    machine: dict
    notes: list
    table: str


def write_report(result, plan, output_dir=None, command=None):
    """Adds ratios to `result` (a `BenchmarkResult`) and writes results.csv,
    results.md, machine.json and ratios.png to `output_dir` (default
    `default_output_dir`) -> `WrittenReport`.

    >>> report = write_report(run_benchmark(plan), plan, "/tmp/bench")  # doctest: +SKIP
    >>> sorted(report.paths)  # doctest: +SKIP
    ['csv', 'machine', 'markdown', 'plot']
    """
    rows = add_ratios(result.rows, plan.baseline)
    machine = machine_description(result.backends, command=command, plan=plan)
    output_dir = output_dir or default_output_dir(machine)
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, file) for name, file in (
        ("csv", "results.csv"), ("markdown", "results.md"), ("machine", "machine.json"),
        ("plot", "ratios.png"))}
    notes = list(result.notes)
    missing_plot = plot_ratios(rows, paths["plot"], plan.baseline)
    if missing_plot:
        notes.append(missing_plot)
        if os.path.exists(paths["plot"]):  # an earlier run's plot would mislead
            os.remove(paths["plot"])
        del paths["plot"]
    write_csv(rows, paths["csv"])
    with open(paths["machine"], "w") as file:
        json.dump({**machine, "notes": notes}, file, indent=2)
    with open(paths["markdown"], "w") as file:
        file.write(markdown_report(rows, machine, notes))
    return WrittenReport(output_dir=output_dir, paths=paths, rows=rows, machine=machine,
                         notes=notes, table=markdown_table(rows))
