"""`python -m keras_dynconv.bench.worker PLAN.json RESULT.json`: one backend's rows.

The runner starts one per backend with KERAS_BACKEND set and reads RESULT.json
(`{"device", "versions", "rows", "notes", "finished"}`), which is rewritten after every
row: a worker that dies half way still hands over what it measured. Progress lines
go to stdout.
"""

import json
import os
import sys


def _pin_cpus(threads):
    """Keeps the process on `threads` CPUs: XLA sizes its thread pool from them."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, cpus[:threads])


def _write(path, result):
    # Written beside and renamed: the runner never reads half a file.
    with open(path + ".part", "w") as file:
        json.dump(result, file, indent=1)
    os.replace(path + ".part", path)


def main(argv=None):
    plan_path, result_path = sys.argv[1:] if argv is None else argv
    from keras_dynconv.bench.spec import BenchmarkPlan

    with open(plan_path) as file:
        plan = BenchmarkPlan.from_json(file.read())
    if plan.threads:
        _pin_cpus(plan.threads)

    from keras_dynconv.bench.measure import backend_versions
    from keras_dynconv.bench.measure import device_description
    from keras_dynconv.bench.measure import measure_backend
    from keras_dynconv.bench.report import progress_line

    result = {"device": device_description(), "versions": backend_versions(),
              "rows": [], "notes": [], "finished": False}

    def on_row(row):
        result["rows"].append(row)
        _write(result_path, result)
        print(progress_line(row), flush=True)

    _write(result_path, result)
    _, notes = measure_backend(plan, on_row=on_row)
    result.update(notes=notes, finished=True)
    _write(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
