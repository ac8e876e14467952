"""The small simulated cohort of the fault and id tests, and how those tests run Snakemake.

One cohort (6 patients, 150-300 cells per library, 10 libraries, 2,000 background genes)
and two clean runs of it are session fixtures (``conftest.py``): ``test_faults`` checks
repeat, resume and keep-going against them, ``test_ids`` a run with renamed sample ids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SIM_ARGS = [
    "--seed",
    "0",
    "--n-patients",
    "6",
    "--min-cells",
    "150",
    "--max-cells",
    "300",
    "--frac-longitudinal",
    "0.34",
    # What is tested here (identical tables, resume, keep-going) does not depend on the
    # size of the gene space; 2,000 background genes keep these runs short.
    "--n-background-genes",
    "2000",
]
CONFIGFILE = REPO / "config" / "config.yaml"
# What these tests compare is results/tables/: the runs build the `tables` target (the
# whole analysis without figures and report pages), which keeps them short.
TARGET = "tables"
ENV = dict(os.environ, PYTHONHASHSEED="0")


def snakemake_cmd(workdir: Path, config: dict[str, str], *args: str) -> list[str]:
    """The command line run_snakemake (conftest) uses, for runs we start ourselves."""
    return [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        *args,  # targets before --config, which takes a list
        "--configfile",
        str(CONFIGFILE),
        "--config",
        *[f"{k}={v}" for k, v in config.items()],
    ]


def start(workdir: Path, config: dict[str, str], *args: str) -> subprocess.Popen:
    """Start snakemake in its own process group (session), output to workdir/run.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "run.log", "w") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            snakemake_cmd(workdir, config, *args),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=ENV,
            start_new_session=True,
        )


def finish(proc: subprocess.Popen, workdir: Path, timeout: float = 1200) -> None:
    """Wait for a run started with `start`; fail with its log tail when it failed."""
    rc = proc.wait(timeout=timeout)
    if rc != 0:
        text = (workdir / "run.log").read_text(errors="replace")
        raise AssertionError(f"snakemake failed ({rc}) in {workdir}:\n{text[-8000:]}")


def sheet_config(samples: Path, clinical: Path) -> dict[str, str]:
    return {"samples": str(samples), "clinical": str(clinical)}



def simulate(out: Path) -> Path:
    """Simulate the small cohort into ``out``."""
    subprocess.run(
        [sys.executable, str(REPO / "workflow" / "scripts" / "simulate_demo.py"), "--out",
         str(out), *SIM_ARGS],
        check=True, capture_output=True, env=ENV,
    )
    return out


def two_clean_runs(root: Path, config: dict[str, str]) -> tuple[Path, Path]:
    """Two clean runs of the whole workflow in two project folders, at the same time."""
    dirs = (root / "run_a", root / "run_b")
    t0 = time.perf_counter()
    procs = [start(d, config, TARGET) for d in dirs]
    try:
        for p, d in zip(procs, dirs):
            finish(p, d)
    finally:  # a failed run: do not leave the other one running
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    print(f"two concurrent clean runs: {time.perf_counter() - t0:.0f} s")
    return dirs
