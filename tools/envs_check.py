"""make envs-check: prove each step's environment is sufficient on its own.

For every envs/<step>.yaml, build a separate venv from PyPI with only that env's pip
packages (constrained by requirements.lock, so transitive versions match the tested
set) plus pytest, then run that step's unit tests inside it. The venvs are built with
uv (pinned in requirements.lock), which shares one package cache between them: seven
environments install in seconds each instead of a minute or more with pip. Steps are
checked as many at a time as there are cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).with_name("uv")
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from cartcohort.report import env_packages  # noqa: E402

STEP_TESTS = {
    "load": [
        "tests/test_sheets.py",
        "tests/test_io.py",
        "tests/test_airr_reader.py",
        "tests/test_tables.py",
    ],
    "qc": ["tests/test_qc.py"],
    "integrate": ["tests/test_integrate.py"],
    "clonotypes": ["tests/test_clonotypes.py", "tests/test_scirpy_compat.py",
                   "tests/test_kinetics.py"],
    "annotate": ["tests/test_annotate.py", "tests/test_prot.py", "tests/test_browser.py"],
    "associate": ["tests/test_features.py", "tests/test_associate.py"],
    "report": ["tests/test_report.py"],
}

# Reference implementations some step tests compare against, installed beside the env
# for the tests only: load's readers are checked against scanpy's and scirpy's, the
# protein dsb against muon's; the cell browser test drives chromium with selenium. The
# step's own code imports none of them (tests/test_airr_reader.py asserts that, and
# tests/test_env_imports.py checks every import of the step against its env).
TEST_EXTRAS = {"load": ["scanpy", "scirpy"], "annotate": ["muon", "selenium"]}


def _check_step(step: str, root: Path) -> tuple[str, int, str]:
    """Build the step's venv (uv), install its env's pins, run its tests: (step, rc, log)."""
    pins = env_packages(REPO / "envs" / f"{step}.yaml")
    env_dir = root / step
    out = []
    if not (env_dir / "bin" / "python").exists():
        subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable,
                        str(env_dir)], check=True)
    py = str(env_dir / "bin" / "python")
    lock = {l.split("==")[0].lower(): l for l in
            (REPO / "requirements.lock").read_text().splitlines() if "==" in l}
    pytest_pin = lock["pytest"]
    extras = [lock[p.lower()] for p in TEST_EXTRAS.get(step, [])]
    reqs = [f"{k}=={v}" for k, v in sorted(pins.items())] + [pytest_pin] + extras
    out.append(f"== {step}: installing {len(pins)} packages")
    inst = subprocess.run([str(UV), "pip", "install", "--quiet", "--python", py,
                           "-c", str(REPO / "requirements.lock"), *reqs],
                          capture_output=True, text=True)
    if inst.returncode != 0:
        return step, inst.returncode, "\n".join(out) + inst.stdout + inst.stderr
    tests = [t for t in STEP_TESTS[step] if (REPO / t).exists()]
    out.append(f"== {step}: running {' '.join(tests)} in its own env")
    run = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                         cwd=REPO, capture_output=True, text=True)
    return step, run.returncode, "\n".join(out) + "\n" + run.stdout[-6000:] + run.stderr[-3000:]


def main(steps: list[str]) -> int:
    """Check ``steps`` (default all), as many at once as there are cores (each test run
    is one process; the venvs share uv's cache)."""
    from concurrent.futures import ThreadPoolExecutor

    root = Path(sys.argv[0]).resolve().parents[1] / ".envs-check"
    todo = steps or list(STEP_TESTS)
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        for step, rc, log in pool.map(lambda s: _check_step(s, root), todo):
            print(log, flush=True)
            if rc != 0:
                failures.append(step)
    if failures:
        print(f"envs-check FAILED for: {', '.join(failures)}")
        return 1
    print("envs-check: every step's tests pass in its own environment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
