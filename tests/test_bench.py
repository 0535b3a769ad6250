"""`keras-dynconv bench`: model specs, rows, ratios, report files, the CLI, the runner.

Timings are never asserted: only that they exist, are consistent and are reported.
"""

import dataclasses
import importlib.util
import json
import math
import os
import sys

import keras
import pytest

from conftest import BACKEND
from keras_dynconv import bench
from keras_dynconv.bench import runner
from keras_dynconv.bench.measure import backend_versions
from keras_dynconv.bench.measure import device_description
from keras_dynconv.cli import main

BASELINE = "mobilenet_v1:alpha=0.25"
OTHER = "condconv_mobilenet_v1:alpha=0.25,num_experts=2"
TINY_MODELS = f"{BASELINE};{OTHER}"
TINY = dict(batch_sizes=(2,), image_size=32, warmup=1, repeats=2)
TINY_FLAGS = ["--models", TINY_MODELS, "--batch-sizes", "2", "--image-size", "32",
              "--warmup", "1", "--repeats", "2", "--modes", "inference"]
TIMM_INSTALLED = importlib.util.find_spec("timm") is not None


@pytest.fixture(scope="module")
def measured():
    """Both tiny models' inference and the CondConv one's training step, measured once.

    The baseline's training step is left out: compiling it (11 s on JAX) would check
    nothing more; its absence checks that a group without a baseline has no ratio.
    """
    plan = bench.BenchmarkPlan(TINY_MODELS, modes=("inference", "train"), **TINY)
    rows, notes = bench.measure_backend(dataclasses.replace(plan, modes=("inference",)))
    rows.append(bench.measure_row(plan.models[1], "train", "float32", 2, plan))
    info = {**device_description(), "versions": backend_versions(), "process": "in-process",
            "error": None}
    return plan, bench.BenchmarkResult(rows=rows, notes=notes, backends={BACKEND: info})


def _check_figures(row):
    assert row["error"] is None, row["error"]
    times = [row[key] for key in ("min_s", "q1_s", "median_s", "q3_s", "max_s")]
    assert all(math.isfinite(t) and t > 0 for t in times)
    assert times == sorted(times)
    assert row["iqr_s"] == row["q3_s"] - row["q1_s"]
    assert row["images_per_s"] == row["batch"] / row["median_s"]
    assert row["first_call_s"] > 0 and row["parameters"] > 0
    assert isinstance(row["peak_memory_bytes"], int) and row["memory_source"]


# --- model specs and plans -------------------------------------------------------------
def test_model_specs_parse_names_and_typed_arguments():
    spec = bench.parse_model_spec(" condconv_mobilenet_v1:alpha=0.25,num_experts=2,"
                                  "strategy=mixture,include_top=true,pooling=none ")
    assert spec.name == "condconv_mobilenet_v1"
    assert spec.arguments == {"alpha": 0.25, "num_experts": 2, "strategy": "mixture",
                              "include_top": True, "pooling": None}
    assert str(spec) == ("condconv_mobilenet_v1:alpha=0.25,num_experts=2,strategy=mixture,"
                         "include_top=true,pooling=none")
    assert bench.parse_model_spec("efficientnet_b0").arguments == {}
    specs = bench.parse_model_list(["efficientnet_b0; condconv_efficientnet_b0:num_experts=8;",
                                    "resnet50"])
    assert [str(s) for s in specs] == [
        "efficientnet_b0", "condconv_efficientnet_b0:num_experts=8", "resnet50"]


@pytest.mark.parametrize("text, message", [
    ("", "expected NAME"),
    (":alpha=1", "model name is empty"),
    ("mobilenet_v1:", "nothing after ':'"),
    ("mobilenet_v1:alpha", "expected KEY=VALUE"),
    ("mobilenet_v1:alpha=", "expected KEY=VALUE"),
    ("mobilenet_v1:=1", "expected KEY=VALUE"),
    ("mobilenet_v1:alpha=1,alpha=2", "given twice"),
    ("mobilenet_v1:input_shape=64", "set by the benchmark's image size"),
    ("mobilenet_v1:2x=1", "not an argument name"),
    ("condconv_nothing", "Unknown model 'condconv_nothing'"),
    ("mobilenet_v1:num_expert=4", "has no argument 'num_expert'"),
    ("ssd300_mobilenet_v1", "is a detection model"),
])
def test_bad_model_specs_raise_a_clear_value_error(text, message):
    with pytest.raises(ValueError) as error:
        bench.parse_model_spec(text)
    assert message in str(error.value)


@pytest.mark.parametrize("change, message", [
    (dict(models=f"{BASELINE};{BASELINE}"), "listed twice"),
    (dict(models=" ; "), "no model spec"),
    (dict(baseline="resnet50"), "`baseline`"),
    (dict(batch_sizes=(0,)), "`batch_sizes`"),
    (dict(modes=("predict",)), "`modes`"),
    (dict(dtypes=("float64",)), "`dtypes`"),
    (dict(image_size=16), "`image_size`"),
    (dict(repeats=0), "`repeats`"),
    (dict(threads=0), "`threads`"),
    (dict(tf_xla="yes"), "`tf_xla`"),
])
def test_plans_refuse_bad_settings(change, message):
    settings = dict(models=TINY_MODELS, **TINY)
    settings.update(change)
    with pytest.raises(ValueError, match=message):
        bench.BenchmarkPlan(**settings)


def test_plans_round_trip_through_json_and_default_the_baseline():
    plan = bench.BenchmarkPlan(TINY_MODELS, dtypes=("float32", "mixed_bfloat16"), **TINY)
    assert plan.baseline == BASELINE
    assert bench.BenchmarkPlan.from_json(plan.to_json()) == plan
    assert bench.BenchmarkPlan(TINY_MODELS, baseline=OTHER).baseline == OTHER


# --- rows, ratios, files ---------------------------------------------------------------
def test_rows_have_every_column_and_consistent_figures(measured):
    plan, result = measured
    assert [(r["mode"], r["model"]) for r in result.rows] == [
        ("inference", BASELINE), ("inference", OTHER), ("train", OTHER)]
    for row in result.rows:
        assert set(row) == set(bench.COLUMNS)
        assert (row["backend"], row["framework"], row["dtype"], row["batch"]) == (
            BACKEND, "keras", "float32", 2)
        assert (row["warmup"], row["repeats"], row["image_size"]) == (1, 2, 32)
        _check_figures(row)
    assert result.rows[1]["parameters"] > result.rows[0]["parameters"]  # 2 experts
    assert result.rows[0]["execution"] == {
        "jax": "jax.jit(stateless_call)", "tensorflow": "tf.function(jit_compile=True)",
        "torch": "eager no_grad"}[BACKEND]
    assert result.rows[2]["execution"].startswith("train_on_batch")
    if BACKEND == "tensorflow":  # tf_xla="auto": Keras' default, no XLA on a CPU
        assert result.rows[2]["execution"] == "train_on_batch (jit_compile=False)"


def test_rows_come_dtype_by_mode_by_batch_with_every_model_in_turn(monkeypatch):
    calls = []

    def fake_group(jobs, mode, dtype, batch, plan):
        calls.extend((dtype, mode, batch, str(spec)) for spec, _ in jobs)
        return [bench.spec.new_row(model=str(spec)) for spec, _ in jobs]

    monkeypatch.setattr(bench.measure, "measure_group", fake_group)
    plan = bench.BenchmarkPlan(TINY_MODELS, batch_sizes=(1, 4), modes=("inference", "train"),
                               dtypes=("float32", "mixed_bfloat16"), image_size=32)
    seen = []
    rows, notes = bench.measure_backend(plan, on_row=seen.append)
    assert calls == [(d, m, b, s) for d in plan.dtypes for m in plan.modes
                     for b in plan.batch_sizes for s in (BASELINE, OTHER)]
    assert seen == rows and len(rows) == 16 and notes == []


def test_a_group_is_timed_in_turns_and_a_failing_model_leaves_the_others(monkeypatch):
    calls = []

    def fake_prepare(spec, mode, dtype, batch, plan, framework):
        name = str(spec)

        def run():
            calls.append(name)
            if name == OTHER and calls.count(OTHER) == 3:
                raise RuntimeError("out of memory\ndetails")

        return bench.spec.new_row(model=name, batch=batch), run

    monkeypatch.setattr(bench.measure, "_prepare", fake_prepare)
    plan = bench.BenchmarkPlan(TINY_MODELS, image_size=32, warmup=1, repeats=4)
    specs = [(spec, "keras") for spec in plan.models]
    base, other = bench.measure_group(specs, "inference", "float32", 2, plan)
    # Round by round; OTHER drops out at its third call.
    assert calls == [BASELINE, OTHER, BASELINE, OTHER, BASELINE, OTHER, BASELINE]
    assert base["error"] is None and base["median_s"] > 0
    assert other["error"] == "RuntimeError: out of memory" and other["median_s"] is None


def test_ratios_divide_by_the_baseline_of_the_same_group(measured):
    plan, result = measured
    rows = bench.add_ratios(result.rows, plan.baseline)
    base, other, train = rows
    assert base["model"] == BASELINE and base["ratio"] == 1.0
    assert other["ratio"] == other["median_s"] / base["median_s"]
    assert train["ratio"] is None  # no baseline measured in its group
    failed = dict(result.rows[0], error="RuntimeError: out of memory")
    assert [r["ratio"] for r in bench.add_ratios([failed, result.rows[1]], BASELINE)] == [
        None, None]


@pytest.mark.skipif(BACKEND == "jax", reason="JAX has one way to compile: jit")
def test_a_failed_compilation_runs_uncompiled_and_says_so(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    if BACKEND == "torch":
        import torch

        monkeypatch.setattr(torch, "compile", lambda module, **kwargs: refuse)
        expected = ("eager no_grad", "torch.compile failed, ran eager: RuntimeError: no compiler here")
    else:
        import tensorflow as tf

        function = tf.function

        def xla_refuses_the_benchmark(fn=None, jit_compile=None, **kwargs):
            # Keras compiles its own functions too: refuse only the benchmark's.
            if jit_compile and "_inference" in getattr(fn, "__qualname__", ""):
                return refuse
            return function(fn, jit_compile=jit_compile, **kwargs)

        monkeypatch.setattr(tf, "function", xla_refuses_the_benchmark)
        expected = ("tf.function(jit_compile=False)",
                    "XLA failed, ran jit_compile=False: RuntimeError: no compiler here")
    plan = bench.BenchmarkPlan(BASELINE, torch_compile=True, modes=("inference",), **TINY)
    row = bench.measure_row(plan.models[0], "inference", "float32", 2, plan)
    _check_figures(row)
    assert (row["execution"], row["note"]) == expected


def _markdown_rows(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert len({len(row) for row in cells}) == 1  # every line has the header's columns
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def test_report_writes_csv_markdown_machine_and_plot(measured, tmp_path, monkeypatch):
    plan, result = measured
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "2147483648")
    report = bench.write_report(result, plan, str(tmp_path), command="keras-dynconv bench ...")
    assert sorted(os.listdir(tmp_path)) == [
        "machine.json", "ratios.png", "results.csv", "results.md"]
    assert bench.read_csv(report.paths["csv"]) == report.rows
    with open(report.paths["markdown"]) as file:
        markdown = file.read()
    table = _markdown_rows(markdown)
    assert "Environment: `MALLOC_TRIM_THRESHOLD_=2147483648`" in markdown
    assert [(r["model"], r["mode"], r["ratio"]) for r in table] == [
        (BASELINE, "inference", "1.000"), (OTHER, "inference", f"{report.rows[1]['ratio']:.3f}"),
        (OTHER, "train", "-")]
    with open(report.paths["machine"]) as file:
        machine = json.load(file)
    assert machine["versions"]["keras"] == keras.__version__
    for library in ("torch", "jax", "tensorflow", "numpy"):
        assert machine["versions"][library]  # the suite's environment has all three
    assert machine["backends"][BACKEND]["versions"]["keras"] == keras.__version__
    assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["date"]
    assert machine["command"] == "keras-dynconv bench ..."
    assert machine["environment"]["MALLOC_TRIM_THRESHOLD_"] == "2147483648"
    assert machine["plan"]["baseline"] == BASELINE
    with open(report.paths["plot"], "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ratio_spread_script_collects_each_runs_ratios(measured, monkeypatch, capsys, repo_root):
    """scripts/bench_ratio_spread.py: one bench process per run (faked here by writing
    the measured report), every run's ratio to the baseline, and their spread."""
    spec = importlib.util.spec_from_file_location(
        "bench_ratio_spread", os.path.join(repo_root, "scripts", "bench_ratio_spread.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    plan, result = measured
    commands = []

    def fake_bench_process(command, check, stdout):
        commands.append(command)
        scaled = [dict(row, median_s=row["median_s"] * (1 + 0.5 * len(commands)))
                  if row["model"] == OTHER else row for row in result.rows]
        bench.write_report(dataclasses.replace(result, rows=scaled), plan,
                           command[command.index("--output-dir") + 1])

    monkeypatch.setattr(script.subprocess, "run", fake_bench_process)
    script.main(["--runs", "2", "--", "--models", TINY_MODELS])
    assert [command[1:5] for command in commands] == [
        ["-m", "keras_dynconv.bench", "--models", TINY_MODELS]] * 2
    base, other = (row["median_s"] for row in result.rows[:2])
    ratios = [other * 1.5 / base, other * 2.0 / base]
    table = capsys.readouterr().out.splitlines()[-1]
    assert table == (
        f"| {BACKEND} | {OTHER} | inference | float32 | 2 | {ratios[0]:.3f}, {ratios[1]:.3f} | "
        f"{ratios[0]:.3f} | {sum(ratios) / 2:.3f} | {ratios[1]:.3f} |")


def test_default_output_dir_names_the_date_and_hardware_not_the_host():
    machine = dict(date="2026-12-01T10:00:00+00:00", gpu="NVIDIA H100 80GB HBM3",
                   cpu_model="AMD EPYC 7B13 64-Core Processor", usable_cpus=16)
    assert bench.report.default_output_dir(machine) == os.path.join(
        "zoo", "benchmarks", "2026-12-01-h100-80gb-hbm3")
    machine.update(gpu=None)
    assert bench.report.machine_tag(machine) == "cpu16-epyc-7b13"


# --- the command line ------------------------------------------------------------------
def test_cli_measures_writes_files_and_notes_missing_timm(tmp_path, capsys):
    output = str(tmp_path / "bench")
    assert main(["bench", *TINY_FLAGS, "--timm", "resnet18", "--output-dir", output]) == 0
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith(f"{BACKEND} ")]
    assert len(progress) == 2 and all("images/s" in line for line in progress)
    rows = bench.read_csv(os.path.join(output, "results.csv"))
    assert [(r["model"], r["ratio"] == 1.0) for r in rows] == [(BASELINE, True), (OTHER, False)]
    for row in rows:
        _check_figures(row)
    with open(os.path.join(output, "results.md")) as file:
        assert len(_markdown_rows(file.read())) == 2
    with open(os.path.join(output, "machine.json")) as file:
        machine = json.load(file)
    assert machine["command"].startswith("keras-dynconv bench --models")
    assert machine["backends"][BACKEND]["process"] == "in-process"
    # timm is not in the test environment: one clear note, not an error.
    if not TIMM_INSTALLED:
        expected = ("timm is not installed" if BACKEND == "torch"
                    else "timm runs on torch, which is not among the backends")
        notes = [line for line in out.splitlines() if line.startswith("note: --timm")]
        assert len(notes) == 1 and expected in notes[0]
        assert any(expected in note for note in machine["notes"])


def test_help_shows_the_spec_syntax_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "num_experts=8" in out and "--torch-compile" in out


@pytest.mark.parametrize("change, message", [
    (["--models", "condconv_nothing"], "Unknown model 'condconv_nothing'"),
    (["--models", "mobilenet_v1:alpha"], "expected KEY=VALUE"),
    (["--baseline", "resnet50"], "is not one of the models"),
    (["--batch-sizes", "2,x"], "--batch-sizes"),
    (["--backends", "theano"], "`backends`"),
    (["--modes", "predict"], "`modes`"),
    (["--python", "torch"], "expected BACKEND=PYTHON"),
    (["--python", f"{BACKEND}=/no/such/python"], "is not an executable file"),
    (["--python", "theano=/usr/bin/python3"], "not among the backends"),
])
def test_cli_user_mistakes_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, change,
                                                                   message):
    arguments = ["bench", *TINY_FLAGS, "--output-dir", str(tmp_path)]
    if change[0] in arguments:
        arguments[arguments.index(change[0]) + 1] = change[1]
    else:
        arguments += change
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not os.listdir(tmp_path)


# --- the runner: one process per backend ---------------------------------------------
@pytest.mark.orchestration
def test_runner_measures_another_backend_in_its_own_process(other_backend, tmp_path):
    # The worker runs under the interpreter given for its backend (here a wrapper that
    # leaves a mark), as `--python torch=.venv-timm/bin/python` does for timm.
    mark = tmp_path / "wrapper-ran"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\ntouch "{mark}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    plan = bench.BenchmarkPlan(TINY_MODELS, modes=("inference",), **TINY)
    lines = []
    result = bench.run_benchmark(plan, backends=[other_backend], progress=lines.append,
                                 interpreters={other_backend: str(wrapper)})
    assert mark.exists()
    assert [(r["backend"], r["model"]) for r in result.rows] == [
        (other_backend, BASELINE), (other_backend, OTHER)]
    for row in result.rows:
        assert set(row) == set(bench.COLUMNS)
        _check_figures(row)
    info = result.backends[other_backend]
    assert info["process"] == "subprocess" and info["error"] is None
    assert other_backend in info["versions"]
    assert len([line for line in lines if line.startswith(f"{other_backend} ")]) == 2


@pytest.mark.orchestration
def test_a_failing_backend_leaves_an_error_row(monkeypatch):
    # A top-level module: Python fails at once, without importing keras_dynconv first.
    monkeypatch.setattr(runner, "WORKER_MODULE", "no_such_bench_worker")
    plan = bench.BenchmarkPlan(TINY_MODELS, modes=("inference",), **TINY)
    lines = []
    result = bench.run_benchmark(plan, backends=["jax", "torch"], progress=lines.append)
    assert [r["backend"] for r in result.rows] == ["jax", "torch"]
    for row in result.rows:
        assert set(row) == set(bench.COLUMNS)
        assert "worker exited with code 1" in row["error"] and "no_such_bench_worker" in row["error"]
    assert bench.add_ratios(result.rows, plan.baseline)[0]["ratio"] is None
