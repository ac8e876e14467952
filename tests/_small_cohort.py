"""The small simulated cohort of the fault and id tests, and how those tests run Snakemake.

One cohort (6 patients, 150-300 cells per library, 10 libraries, 2,000 background genes)
and two runs of it at the same time, a clean one and one with its sample ids renamed,
are session fixtures (``conftest.py``): ``test_faults`` checks resume and keep-going
against the clean run, ``test_ids`` the renamed one. (Repeats give the same bytes: the
e2e demo run equals the recorded checksums of ``make run``, tests/test_workflow_e2e.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

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


def renamed_sheets(cohort: Path, dst: Path) -> dict[str, str]:
    """The cohort's sample sheet with every sample renamed to 001..0NN in the order of the
    sorted ids (so both the sheet order and the sorted order of the libraries stay the
    same), its paths made absolute; the clinical table copied. ``new -> old``."""
    import csv
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    with open(cohort / "samples.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    new = {old: f"{i:03d}" for i, old in enumerate(sorted(r["sample"] for r in rows), start=1)}
    for r in rows:
        r["sample"] = new[r["sample"]]
        for col in ("gex", "vdj"):
            if r[col]:
                r[col] = str(cohort / r[col])
    with open(dst / "samples.tsv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    shutil.copy(cohort / "clinical.tsv", dst / "clinical.tsv")
    return {v: k for k, v in new.items()}


class CleanRuns(NamedTuple):
    """The clean run of the small cohort and, run at the same time in another project
    folder, the run of the same cohort with its sample ids renamed."""

    clean: Path
    renamed: Path
    #: renamed id -> original id
    old_ids: dict[str, str]


def clean_and_renamed_runs(root: Path, cohort: Path, config: dict[str, str]) -> CleanRuns:
    """The clean run and the renamed-ids run of the whole analysis (target ``tables``), in
    two project folders at the same time (which also shows that runs in different folders
    share no scratch files)."""
    old = renamed_sheets(cohort, root / "renamed_sheets")
    runs = [(root / "clean", config),
            (root / "renamed", sheet_config(root / "renamed_sheets" / "samples.tsv",
                                            root / "renamed_sheets" / "clinical.tsv"))]
    t0 = time.perf_counter()
    procs = [start(d, c, TARGET) for d, c in runs]
    try:
        for p, (d, _) in zip(procs, runs):
            finish(p, d)
    finally:  # a failed run: do not leave the other one running
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    print(f"clean and renamed runs at the same time: {time.perf_counter() - t0:.0f} s")
    return CleanRuns(root / "clean", root / "renamed", old)
