"""How far a benchmark ratio moves from one process to the next, with the same code.

    python scripts/bench_ratio_spread.py --runs 5 -- \
        --models "efficientnet_b0;condconv_efficientnet_b0:num_experts=8" \
        --backends torch --batch-sizes 32 --modes inference --repeats 7 --warmup 1

Runs `python -m keras_dynconv.bench` with the arguments after `--` in `--runs` fresh
processes, one after the other, and prints every run's ratio to the baseline and their
spread. On a shared machine one run's interquartile range says how steady the calls of
that process were, not how much the next process will differ: on torch's CPU the
allocator's state (glibc's dynamic mmap threshold) differs from process to process,
and with it the cost of page faults in both models.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from keras_dynconv.bench import read_csv


def ratio_rows(output_dir):
    """`((backend, model, mode, dtype, batch), ratio)` of every model but the baseline
    in one bench report."""
    with open(os.path.join(output_dir, "machine.json")) as file:
        baseline = json.load(file)["plan"]["baseline"]
    for row in read_csv(os.path.join(output_dir, "results.csv")):
        if row["model"] != baseline and row["ratio"] is not None:
            key = (row["backend"], row["model"], row["mode"], row["dtype"], str(row["batch"]))
            yield key, row["ratio"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        sys.exit("usage: bench_ratio_spread.py [--runs N] -- BENCH_ARGUMENTS")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes (default 5)")
    args = parser.parse_args(argv[:split])
    bench_arguments = argv[split + 1 :]
    ratios = {}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.runs):
            output_dir = os.path.join(scratch, f"run{run}")
            command = [sys.executable, "-m", "keras_dynconv.bench", *bench_arguments,
                       "--output-dir", output_dir]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            for key, ratio in ratio_rows(output_dir):
                ratios.setdefault(key, []).append(ratio)
                print(f"run {run + 1}/{args.runs}: {' '.join(key)}: ratio {ratio:.3f}", flush=True)
    print("\n| backend | model | mode | dtype | batch | ratios | min | median | max |")
    print("| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: |")
    for key, values in ratios.items():
        listed = ", ".join(f"{value:.3f}" for value in values)
        print(f"| {' | '.join(key)} | {listed} | {min(values):.3f} | "
              f"{statistics.median(values):.3f} | {max(values):.3f} |")


if __name__ == "__main__":
    main()
