"""Live timm parity tests: markers, the timm reference files and a summary of the results.

Every test in this directory is `timm_live` and `large`, so the default suite
(`-m 'not large'`) deselects them; run them with `bash scripts/test-timm-live.sh`.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
REFERENCE_SCRIPT = REPO_ROOT / "scripts" / "timm_reference.py"
DEFAULT_TIMM_PYTHON = REPO_ROOT / ".venv-timm" / "bin" / "python"
# Generous: the reference run imports a CUDA build of torch and runs every model in
# float32 and float64 on the CPU (75-315 s for all seven on 2 shared, busy cores).
REFERENCE_TIMEOUT_S = 1200

# {timm model: measurements}, filled by the tests, printed at the end of the session.
RESULTS = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "timm_live: compares zoo models with timm run live in .venv-timm "
        "(bash scripts/test-timm-live.sh)",
    )


def pytest_collection_modifyitems(config, items):
    # Before the `-m` deselection (conftest hooks run before pytest's own).
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.timm_live)
            item.add_marker(pytest.mark.large)


def unavailable(reason):
    """Skips, or fails where the caller demands the live tests (scripts/test-timm-live.sh)."""
    if os.environ.get("TIMM_LIVE_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def timm_python():
    """The timm environment's interpreter: $TIMM_PYTHON, else .venv-timm/bin/python."""
    configured = os.environ.get("TIMM_PYTHON")
    candidates = [Path(configured)] if configured else []
    candidates.append(DEFAULT_TIMM_PYTHON)
    for candidate in candidates:
        resolved = shutil.which(str(candidate))
        if resolved:
            return resolved
    unavailable(
        f"no timm environment: neither TIMM_PYTHON ({configured or 'unset'}) nor "
        f"{DEFAULT_TIMM_PYTHON} exists; create it with `bash scripts/setup-timm-venv.sh`"
    )


def _requested_models(session):
    return sorted({
        item.callspec.params["timm_name"]
        for item in session.items
        if hasattr(item, "callspec") and "timm_name" in item.callspec.params
    })


@pytest.fixture(scope="session")
def timm_reference_dir(request, tmp_path_factory):
    """A folder with `<model>.safetensors` and `<model>.npz` for every collected model.

    Made once per session by scripts/timm_reference.py in the timm environment (a
    subprocess: torch and timm never share a process with keras here). With
    $TIMM_REFERENCE_DIR the files go there and models already there are not rerun:
    scripts/test-timm-live.sh thus makes them once for all backends.
    """
    python = timm_python()
    shared = os.environ.get("TIMM_REFERENCE_DIR")
    out_dir = Path(shared) if shared else tmp_path_factory.mktemp("timm_reference")
    out_dir.mkdir(parents=True, exist_ok=True)
    models = _requested_models(request.session)
    missing = [
        name for name in models
        if not (out_dir / f"{name}.npz").exists() or not (out_dir / f"{name}.safetensors").exists()
    ]
    if missing:
        # The timm environment must not see this one's packages or backend settings.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        command = [python, str(REFERENCE_SCRIPT), "--out", str(out_dir), *missing]
        start = time.perf_counter()
        try:
            run = subprocess.run(
                command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                timeout=REFERENCE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(command)} ran over {REFERENCE_TIMEOUT_S} s", pytrace=False)
        if run.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}",
                pytrace=False,
            )
        RESULTS["_reference"] = dict(
            seconds=time.perf_counter() - start, log=run.stdout.strip())
    return out_dir


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("timm live parity")
    reference = RESULTS.get("_reference")
    if reference:
        write(f"timm references made in {reference['seconds']:.0f} s:")
        for line in reference["log"].splitlines():
            write(f"  {line}")
    write(f"{'model':<26} {'max |ours - timm|':>18} {'timm f32 vs f64':>16} "
          f"{'logits std':>11} {'params':>12}")
    for name, result in sorted(RESULTS.items()):
        if name.startswith("_"):
            continue
        write(f"{name:<26} {result['max_abs_diff']:>18.3g} {result['float32_round_off']:>16.3g} "
              f"{result['logits_std']:>11.3f} {result['params']:>12,}")
