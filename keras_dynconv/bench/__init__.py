"""Benchmarks of zoo models: latency, throughput, peak memory, ratios to a baseline.

From the command line (`keras-dynconv bench`, or `python -m keras_dynconv.bench`):

    keras-dynconv bench --models "efficientnet_b0;condconv_efficientnet_b0:num_experts=8" \\
        --backends jax,torch --batch-sizes 1,32 --modes inference,train

From Python:

    from keras_dynconv.bench import BenchmarkPlan, run_benchmark, write_report

    plan = BenchmarkPlan(
        models="mobilenet_v1:alpha=0.25;condconv_mobilenet_v1:alpha=0.25,num_experts=2",
        batch_sizes=(1, 8), modes=("inference",), image_size=64, repeats=5,
    )
    result = run_benchmark(plan, backends=["torch", "jax"])  # one process per backend
    report = write_report(result, plan, output_dir="runs/bench")
    print(report.table)

A model spec is a zoo name with optional `:key=value,...` builder arguments; specs
are separated by `;` (see `parse_model_spec`). Each row (one backend, model, mode,
dtype, batch) holds the median, min, max and quartiles of seconds per batch,
images/s at the median, peak memory with its source, and the ratio of its median to
the baseline model's in the same backend, batch, mode and dtype (`COLUMNS`).
"""

from keras_dynconv.bench.measure import measure_backend
from keras_dynconv.bench.measure import measure_group
from keras_dynconv.bench.measure import measure_row
from keras_dynconv.bench.report import add_ratios
from keras_dynconv.bench.report import machine_description
from keras_dynconv.bench.report import markdown_table
from keras_dynconv.bench.report import read_csv
from keras_dynconv.bench.report import write_report
from keras_dynconv.bench.runner import BenchmarkResult
from keras_dynconv.bench.runner import run_benchmark
from keras_dynconv.bench.spec import COLUMNS
from keras_dynconv.bench.spec import BenchmarkPlan
from keras_dynconv.bench.spec import ModelSpec
from keras_dynconv.bench.spec import parse_model_list
from keras_dynconv.bench.spec import parse_model_spec

__all__ = [
    "COLUMNS",
    "BenchmarkPlan",
    "BenchmarkResult",
    "ModelSpec",
    "add_ratios",
    "machine_description",
    "markdown_table",
    "measure_backend",
    "measure_group",
    "measure_row",
    "parse_model_list",
    "parse_model_spec",
    "read_csv",
    "run_benchmark",
    "write_report",
]
