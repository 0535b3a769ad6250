"""`keras-dynconv bench`: latency, throughput and memory of zoo models per backend,
with ratios against a baseline model measured in the same run."""

import argparse
import shlex

EXAMPLES = """model specs:
  a zoo name, optionally `:` and comma-separated KEY=VALUE builder arguments; several
  specs are separated by `;` (quote them) or given by repeating --models:
    "efficientnet_b0;condconv_efficientnet_b0:num_experts=8"
    --models mobilenet_v1:alpha=0.25 --models condconv_mobilenet_v1:alpha=0.25,num_experts=2

examples:
  keras-dynconv bench --models "efficientnet_b0;condconv_efficientnet_b0:num_experts=8"
  keras-dynconv bench --models "efficientnet_b0;condconv_efficientnet_b0:num_experts=8" \\
      --backends jax,tensorflow,torch --batch-sizes 1,32,256 --modes inference,train \\
      --dtypes float32,mixed_bfloat16 --repeats 20
  KERAS_BACKEND=torch python -m keras_dynconv.bench --models "resnet50;condconv_resnet50" \\
      --torch-compile --timm resnet50 --batch-sizes 64 --modes inference
  keras-dynconv bench --models "condconv_efficientnet_b0:num_experts=8" --backends tensorflow,torch \
      --timm tf_efficientnet_cc_b0_8e --python torch=.venv-timm/bin/python --modes inference
  keras-dynconv bench --models "mobilenet_v1:alpha=0.25;condconv_mobilenet_v1:alpha=0.25" \\
      --image-size 64 --batch-sizes 1,8 --threads 1 --output-dir runs/bench   # a quick CPU look

Each backend runs in its own process (the current one in this process when it is the
only one and --threads is not given). Per row: the first (compiling) call and --warmup
calls; then the models of one backend, batch, mode and dtype take turns for --repeats
timed calls each, so load on a shared machine hits them alike. Times are seconds per batch, ratio = median / the baseline's median (same
backend, batch, mode and dtype). Writes results.csv, results.md, machine.json and
ratios.png (with matplotlib) to --output-dir."""

DEFAULT_OUTPUT = "zoo/benchmarks/<date>-<machine tag>"


def add_parser(subparsers):
    help_text = "time zoo models per backend, batch size, mode and dtype"
    parser = subparsers.add_parser(
        "bench", help=help_text, description=help_text, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", action="append", required=True, metavar="SPECS",
                        help="model specs separated by ';' (repeatable), e.g. "
                        "\"efficientnet_b0;condconv_efficientnet_b0:num_experts=8\"")
    parser.add_argument("--baseline", default=None, metavar="SPEC",
                        help="the model the ratios divide by, one of --models (default: the first)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated: tensorflow, jax, torch (default: KERAS_BACKEND)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--modes", default="inference,train",
                        help="inference and/or train (one train_on_batch step)")
    parser.add_argument("--dtypes", default="float32",
                        help="dtype policies: float32, mixed_bfloat16, mixed_float16, "
                        "bfloat16, float16 (default float32)")
    parser.add_argument("--image-size", type=int, default=224, help="square input side (default 224)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed calls after the compiling first one (default 3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls (default 10)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="torch inference through torch.compile (eager if it fails)")
    parser.add_argument("--tf-xla", choices=("auto", "on", "off"), default="auto",
                        help="TensorFlow with XLA: auto (default) compiles inference with XLA "
                        "and training as Keras does (XLA only on GPUs); on: both; off: neither")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per backend (torch.set_num_threads, TensorFlow "
                        "intra-op threads, CPU affinity for XLA)")
    parser.add_argument("--timm", default=None, metavar="MODEL",
                        help="add timm's MODEL (torch, eager, channels first) when timm is installed")
    parser.add_argument("--python", action="append", default=[], metavar="BACKEND=PYTHON",
                        help="run BACKEND's worker with another Python (repeatable), e.g. "
                        "torch=.venv-timm/bin/python for an environment that has timm")
    parser.add_argument("--output-dir", default=None,
                        help=f"where the files go (default {DEFAULT_OUTPUT})")
    parser.set_defaults(run=run)


def _items(flag, text):
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"Invalid value for {flag}: {text!r} (expected a comma-separated list)")
    return items


def _integers(flag, text):
    try:
        return [int(item) for item in _items(flag, text)]
    except ValueError:
        raise ValueError(f"Invalid value for {flag}: {text!r} (expected integers, e.g. 1,32)") from None


def _interpreters(values):
    interpreters = {}
    for value in values:
        backend, separator, path = value.partition("=")
        if not separator or not backend.strip() or not path.strip():
            raise ValueError(
                f"Invalid value for --python: {value!r} (expected BACKEND=PYTHON, "
                "e.g. torch=.venv-timm/bin/python)"
            )
        interpreters[backend.strip()] = path.strip()
    return interpreters


def command_line(plan, backends, output_dir, interpreters=None):
    """The complete command equivalent to this run, every setting spelled out."""
    parts = [
        "keras-dynconv", "bench", "--models", ";".join(str(m) for m in plan.models),
        "--baseline", plan.baseline, "--backends", ",".join(backends),
        "--batch-sizes", ",".join(map(str, plan.batch_sizes)), "--modes", ",".join(plan.modes),
        "--dtypes", ",".join(plan.dtypes), "--image-size", str(plan.image_size),
        "--warmup", str(plan.warmup), "--repeats", str(plan.repeats),
    ]
    parts += ["--torch-compile"] if plan.torch_compile else []
    parts += ["--tf-xla", plan.tf_xla]
    parts += ["--threads", str(plan.threads)] if plan.threads else []
    parts += ["--timm", plan.timm] if plan.timm else []
    for backend, path in (interpreters or {}).items():
        parts += ["--python", f"{backend}={path}"]
    parts += ["--output-dir", output_dir] if output_dir else []
    return shlex.join(parts)


def run(args):
    """`keras-dynconv bench`; returns the `WrittenReport`."""
    from keras_dynconv.bench import BenchmarkPlan
    from keras_dynconv.bench import run_benchmark
    from keras_dynconv.bench import write_report
    from keras_dynconv.bench.runner import current_backend
    from keras_dynconv.bench.spec import BACKENDS
    from keras_dynconv.bench.spec import check_choices

    plan = BenchmarkPlan(
        models=args.models, baseline=args.baseline,
        batch_sizes=tuple(_integers("--batch-sizes", args.batch_sizes)),
        modes=tuple(_items("--modes", args.modes)), dtypes=tuple(_items("--dtypes", args.dtypes)),
        image_size=args.image_size, warmup=args.warmup, repeats=args.repeats,
        torch_compile=args.torch_compile, tf_xla=args.tf_xla, threads=args.threads,
        timm=args.timm,
    )
    backends = check_choices(
        "backends", _items("--backends", args.backends) if args.backends else [current_backend()],
        BACKENDS,
    )
    interpreters = _interpreters(args.python)
    count = f"{len(plan.models)} model{'s' if len(plan.models) > 1 else ''}"
    print(f"{count} on {', '.join(backends)}; baseline {plan.baseline}; "
          f"batch sizes {list(plan.batch_sizes)}, modes {list(plan.modes)}, "
          f"dtypes {list(plan.dtypes)}, {plan.image_size}x{plan.image_size}", flush=True)
    result = run_benchmark(plan, backends, progress=lambda line: print(line, flush=True),
                           interpreters=interpreters)
    report = write_report(result, plan, args.output_dir,
                          command=command_line(plan, backends, args.output_dir, interpreters))
    print()
    print(report.table)
    for note in report.notes:
        print(f"note: {note}")
    failed = sum(1 for row in report.rows if row["error"])
    if failed:
        print(f"{failed} of {len(report.rows)} rows failed: see their error column")
    print(f"wrote {', '.join(sorted(report.paths.values()))}")
    return report
