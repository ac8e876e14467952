"""Scale benchmark of cart-cohort (``make bench``; not part of ``make test``).

For each requested scale the harness

1. simulates a cohort with the demo simulator (``workflow/scripts/simulate_demo.py``)
   into ``<workdir>/<scale>/cohort/`` (skipped when a stamp with the same
   parameters is already there);
2. runs the workflow (``snakemake --cores N``) in a fresh ``<workdir>/<scale>/run/``
   and then ``snakemake --report results/report.html``, each timed, with the peak
   of the summed RSS of the whole process tree sampled every 0.5 s;
3. runs ``benchmarks/baseline_one_script.py`` (the same analysis as one plain
   scanpy/scirpy process) on the same cohort under the same sampler, with a
   watchdog that kills it when its tree RSS exceeds ``--baseline-max-gib``;
4. collects the Snakemake ``benchmark:`` files of the run into one row per rule
   and writes ``benchmarks/results.tsv`` (rows of other scales kept) and
   ``benchmarks/targets.tsv`` (the issue's targets as PASS / FAIL / NOT RUN).

``--dry-run-libraries 1000`` also times ``snakemake -n`` on a 1,000-library sheet.

Example::

    .venv/bin/python tools/bench.py --scales 20k,200k,1M --cores 2
    .venv/bin/python tools/bench.py --scales 2k --workdir /tmp/bench_smoke --dry-run-libraries 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from cartcohort.tables import read_table, write_table  # noqa: E402

log = logging.getLogger("cartcohort.bench")

GIB = 1024**3
MIB = 1024**2

RESULT_COLUMNS: tuple[str, ...] = (
    "scale",
    "n_cells",
    "n_libraries",
    "step",
    "n_jobs",
    "wall_s",
    "max_job_wall_s",
    "cpu_s",
    "peak_rss_mib",
    "status",
)
TARGET_COLUMNS: tuple[str, ...] = ("target", "scale", "value", "threshold", "result", "detail")
#: Rows that are not per-rule rows, in the order they are written after the rules.
RUN_STEPS: tuple[str, ...] = ("end_to_end_workflow", "report", "baseline")
DRY_RUN_SCALE = "dry-run"
DRY_RUN_STEPS: tuple[str, ...] = (
    "dry_run",
    "dry_run_warm",
    "dry_run_stub_scontrol",
    "dry_run_stub_scontrol_warm",
)

# Issue #10 targets.
REPORT_MAX_S = 900.0
REPORT_SCALE = "200k"
PEAK_MAX_GIB = 16.0
PEAK_SCALE = "1M"
SPEEDUP_MIN = 1.5
SPEEDUP_SCALE = "200k"
DRY_RUN_MAX_S = 10.0


# --------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScaleSpec:
    """Size of one simulated benchmark cohort.

    Parameters
    ----------
    name
        Label used in paths and tables (``20k``, ``200k``, ``1M``).
    n_patients
        Patients (half responders); each has an infusion-product library (``IP``).
    frac_longitudinal
        Fraction of patients per response group that also have ``D14`` and ``M3``
        blood libraries (the simulator rounds per group).
    cells_per_library
        Cells per library (the simulator's ``min_cells`` = ``max_cells``).
    """

    name: str
    n_patients: int
    frac_longitudinal: float
    cells_per_library: int

    def sim_kwargs(self) -> dict[str, object]:
        """Keyword arguments of :func:`cartcohort.datasets.write_demo_cohort` (besides seed)."""
        return {
            "n_patients": self.n_patients,
            "frac_longitudinal": self.frac_longitudinal,
            "min_cells": self.cells_per_library,
            "max_cells": self.cells_per_library,
        }


#: 20 patients (10 CR vs 10 PD/SD) with half of them followed up (IP, D14, M3) give 40
#: libraries; 1M needs 100 libraries, i.e. 40 patients (20 vs 20) with 3/4 followed up.
#: ``2k`` is a smoke-test size (4 product libraries), not run by default.
SCALES: dict[str, ScaleSpec] = {
    "2k": ScaleSpec("2k", n_patients=4, frac_longitudinal=0.0, cells_per_library=500),
    "20k": ScaleSpec("20k", n_patients=20, frac_longitudinal=0.5, cells_per_library=500),
    "200k": ScaleSpec("200k", n_patients=20, frac_longitudinal=0.5, cells_per_library=5000),
    "1M": ScaleSpec("1M", n_patients=40, frac_longitudinal=0.75, cells_per_library=10000),
}
DEFAULT_SCALES: tuple[str, ...] = ("20k", "200k", "1M")


def parse_scales(text: str) -> list[str]:
    """Split a comma-separated ``--scales`` value and check every name.

    Parameters
    ----------
    text
        E.g. ``"20k,200k"``; case-insensitive (``1m`` = ``1M``).

    Returns
    -------
    list of str
        Canonical scale names, duplicates removed, in the order given.

    Raises
    ------
    argparse.ArgumentTypeError
        On an unknown name.
    """
    lookup = {k.lower(): k for k in SCALES}
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() not in lookup:
            raise argparse.ArgumentTypeError(
                f"unknown scale {part!r}; choose from {', '.join(SCALES)}"
            )
        name = lookup[part.lower()]
        if name not in out:
            out.append(name)
    if not out:
        raise argparse.ArgumentTypeError("no scale given")
    return out


def scale_size(name: str) -> float:
    """Sort key of a scale label: ``2k`` -> 2000, ``1M`` -> 1e6; other labels sort last."""
    text = str(name)
    mult = {"k": 1e3, "K": 1e3, "M": 1e6, "m": 1e6}.get(text[-1:], 1.0)
    number = text[:-1] if text[-1:] in "kKmM" else text
    try:
        return float(number) * mult
    except ValueError:
        return float("inf")


# --------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------


def simulator_digest() -> str:
    """SHA-256 of the simulator's code and fitted data (``cartcohort/datasets``): a cohort
    simulated by another version of the simulator is simulated again."""
    root = REPO / "workflow" / "scripts" / "cartcohort" / "datasets"
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _stamp_content(spec: ScaleSpec, *, seed: int) -> dict[str, object]:
    return {"seed": int(seed), **spec.sim_kwargs(), "simulator": simulator_digest()}


def cohort_is_current(cohort_dir: Path, spec: ScaleSpec, *, seed: int) -> dict | None:
    """The stamp of a cohort simulated with these parameters, or None.

    Parameters
    ----------
    cohort_dir
        ``<workdir>/<scale>/cohort``.
    spec, seed
        Parameters the cohort must have been simulated with.

    Returns
    -------
    dict or None
        The stamp (``params``, ``n_libraries``, ``n_cells``) when
        ``bench_params.json`` matches and the sheets exist.
    """
    stamp = cohort_dir / "bench_params.json"
    if not (stamp.is_file() and (cohort_dir / "samples.tsv").is_file()):
        return None
    try:
        data = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("params") != _stamp_content(spec, seed=seed):
        return None
    return data


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def simulate_scale(
    spec: ScaleSpec, cohort_dir: Path, *, seed: int = 0, log_path: Path | None = None
) -> dict:
    """Simulate the cohort of ``spec`` unless an identical one is already there.

    The simulator runs in a child process (``simulate_demo.py``; it streams one
    library at a time), so its memory is released before the workflow runs. The
    stamp ``bench_params.json`` is written last, so an interrupted simulation is
    redone.

    Parameters
    ----------
    spec
        Scale to simulate.
    cohort_dir
        Output folder.
    seed
        Simulator master seed.
    log_path
        Where the simulator's output goes (default ``<cohort_dir>/../logs/simulate.log``).

    Returns
    -------
    dict
        ``params``, ``n_libraries``, ``n_cells``, ``simulate_s`` and ``reused`` (bool).

    Raises
    ------
    RuntimeError
        When the simulator exits non-zero (message names its log).
    """
    current = cohort_is_current(cohort_dir, spec, seed=seed)
    if current is not None:
        log.info("%s: cohort %s is up to date, not simulated again", spec.name, cohort_dir)
        return {**current, "reused": True}
    log_path = log_path or cohort_dir.parent / "logs" / "simulate.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (cohort_dir / "bench_params.json").unlink(missing_ok=True)
    cmd = [sys.executable, str(REPO / "workflow" / "scripts" / "simulate_demo.py"),
           "--out", str(cohort_dir), "--seed", str(seed)]
    for key, value in spec.sim_kwargs().items():
        cmd += ["--" + key.replace("_", "-"), str(value)]
    log.info("%s: simulating %s", spec.name, " ".join(cmd[2:]))
    start = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"simulator failed (exit {proc.returncode}); see {log_path}")
    n_libraries = _count_lines(cohort_dir / "samples.tsv") - 1
    n_cells = _count_lines(cohort_dir / "truth_cells.tsv") - 1
    stamp = {
        "params": _stamp_content(spec, seed=seed),
        "n_libraries": n_libraries,
        "n_cells": n_cells,
        "simulate_s": round(elapsed, 1),
    }
    (cohort_dir / "bench_params.json").write_text(json.dumps(stamp, indent=1) + "\n")
    log.info("%s: %d libraries, %d cells simulated in %.0f s", spec.name, n_libraries,
             n_cells, elapsed)
    return {**stamp, "reused": False}


# --------------------------------------------------------------------------------------
# Process-tree sampling and the watchdog
# --------------------------------------------------------------------------------------


def _proc_tree_rss_procfs(pid: int) -> int:
    """Summed RSS (bytes) of ``pid`` and all its descendants, read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # comm may contain spaces/parentheses: fields follow the last ')'
        rest = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(rest[1]), []).append(int(entry.name))
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(children.get(p, ()))
    return total


def tree_rss_bytes(pid: int, *, use_psutil: bool | None = None) -> int:
    """Summed resident set size of a process and all its descendants.

    Shared pages are counted once per process (as ``ps`` would add them up), so
    this is an upper bound of the tree's real memory use.

    Parameters
    ----------
    pid
        Root process.
    use_psutil
        ``None``: psutil when importable, else ``/proc``; ``True``/``False`` force.

    Returns
    -------
    int
        Bytes; 0 when the process is gone.
    """
    if use_psutil is None:
        try:
            import psutil  # noqa: F401

            use_psutil = True
        except ImportError:
            use_psutil = False
    if not use_psutil:
        return _proc_tree_rss_procfs(pid)
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # process gone
        return []
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    stat = fh.read().decode(errors="replace")
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(
                int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant (children first)."""
    for child in reversed(_descendants(pid)):
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Outcome of :func:`run_monitored`.

    Attributes
    ----------
    returncode
        Exit status (negative: killed by that signal).
    wall_s
        Wall-clock seconds from start to exit.
    cpu_s
        User + system CPU seconds of the process and its waited-for descendants.
    peak_rss_bytes
        Largest summed RSS of the process tree seen by the sampler.
    status
        ``ok``, ``failed (exit N)``, ``killed: RSS > X GiB`` or ``killed: timeout > N s``.
    """

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    status: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.status == "ok"


def _fmt_gib(n_bytes: float) -> str:
    gib = n_bytes / GIB
    return f"{gib:g} GiB" if gib >= 1 else f"{n_bytes / MIB:g} MiB"


def run_monitored(
    cmd: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | str | None = None,
    max_rss_bytes: int | None = None,
    timeout_s: float | None = None,
    interval_s: float = 0.5,
) -> RunResult:
    """Run a command, sample its process tree's summed RSS, kill it over the limits.

    Parameters
    ----------
    cmd
        Command and arguments.
    cwd, env
        Working directory and environment of the child.
    log_path
        File receiving the child's stdout and stderr (default: discarded).
    max_rss_bytes
        Watchdog: kill the whole tree as soon as its summed RSS exceeds this.
    timeout_s
        Watchdog: kill the whole tree after this many seconds.
    interval_s
        Sampling interval.

    Returns
    -------
    RunResult
        Never raises for a failing or killed child; the status says what happened.
    """
    out = open(log_path, "w") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        peak, killed = 0, None
        while True:
            # os.wait4 (not Popen.poll) so the child's rusage (CPU of the tree) is kept
            pid, wstatus, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            rss = tree_rss_bytes(proc.pid)
            peak = max(peak, rss)
            if killed is None and max_rss_bytes is not None and rss > max_rss_bytes:
                killed = f"killed: RSS > {_fmt_gib(max_rss_bytes)}"
                log.warning("%s: tree RSS %.2f GiB > limit, killing it", cmd[0], rss / GIB)
                kill_tree(proc.pid)
            elif killed is None and timeout_s and time.perf_counter() - start > timeout_s:
                killed = f"killed: timeout > {timeout_s:g} s"
                log.warning("%s: running for more than %g s, killing it", cmd[0], timeout_s)
                kill_tree(proc.pid)
            time.sleep(interval_s)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(wstatus)
        # orphans left behind by a killed tree (e.g. worker processes) are removed too
        if killed is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    finally:
        if log_path is not None:
            out.close()
    if killed is not None:
        status = killed
    elif proc.returncode == 0:
        status = "ok"
    else:
        status = f"failed (exit {proc.returncode})"
    return RunResult(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=rusage.ru_utime + rusage.ru_stime,
        peak_rss_bytes=peak,
        status=status,
    )


# --------------------------------------------------------------------------------------
# Snakemake benchmark files -> per-rule rows
# --------------------------------------------------------------------------------------


def rule_of(bench_file: Path, bench_root: Path) -> str:
    """Rule name of a Snakemake benchmark file.

    ``benchmarks/annotate.tsv`` -> ``annotate``; files of wildcard jobs
    (``benchmarks/qc_sample/P01_IP.tsv``) -> the first folder below the root
    (``qc_sample``).
    """
    rel = Path(bench_file).relative_to(bench_root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _num(value: object) -> float:
    """Benchmark-file value as float; Snakemake writes ``NA`` or ``-`` when not sampled."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return out


def read_benchmark_files(bench_root: Path) -> pd.DataFrame:
    """Every record of every ``*.tsv`` below a run's ``benchmarks/`` folder.

    Parameters
    ----------
    bench_root
        ``<run>/benchmarks``.

    Returns
    -------
    pandas.DataFrame
        Columns ``rule, file, s, max_rss, cpu_time`` (``max_rss`` in MiB as
        Snakemake writes it; NaN where Snakemake wrote ``NA``/``-``), one row per
        record (a file holds one record per ``repeat``), ordered by file path.

    Raises
    ------
    ValueError
        A file without the ``s`` column (not a Snakemake benchmark file).
    """
    rows = []
    root = Path(bench_root)
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if "s" not in df.columns:
            raise ValueError(f"{path}: no 's' column; not a Snakemake benchmark file")
        for _, rec in df.iterrows():
            rows.append(
                {
                    "rule": rule_of(path, root),
                    "file": str(path.relative_to(root)),
                    "s": _num(rec.get("s")),
                    "max_rss": _num(rec.get("max_rss")),
                    "cpu_time": _num(rec.get("cpu_time")),
                }
            )
    return pd.DataFrame(rows, columns=["rule", "file", "s", "max_rss", "cpu_time"])


def aggregate_rules(records: pd.DataFrame) -> pd.DataFrame:
    """One row per rule from benchmark records (wildcard jobs aggregated).

    Parameters
    ----------
    records
        Output of :func:`read_benchmark_files`.

    Returns
    -------
    pandas.DataFrame
        ``step`` (rule), ``n_jobs`` (records), ``wall_s`` (sum of ``s``),
        ``max_job_wall_s`` (max ``s``), ``cpu_s`` (sum of ``cpu_time``),
        ``peak_rss_mib`` (max ``max_rss``; NaN when never sampled), sorted by rule.
    """
    cols = ["step", "n_jobs", "wall_s", "max_job_wall_s", "cpu_s", "peak_rss_mib"]
    if records.empty:
        return pd.DataFrame(columns=cols)
    g = records.groupby("rule", sort=True)
    out = pd.DataFrame(
        {
            "n_jobs": g.size(),
            "wall_s": g["s"].sum(min_count=1),
            "max_job_wall_s": g["s"].max(),
            "cpu_s": g["cpu_time"].sum(min_count=1),
            "peak_rss_mib": g["max_rss"].max(),
        }
    )
    out = out.rename_axis("step").reset_index()
    out["n_jobs"] = out["n_jobs"].astype(int)
    return out[cols]


def rule_rows(run_dir: Path, *, scale: str, n_cells: int, n_libraries: int) -> pd.DataFrame:
    """Per-rule result rows of one workflow run (status ``ok``)."""
    agg = aggregate_rules(read_benchmark_files(Path(run_dir) / "benchmarks"))
    agg.insert(0, "n_libraries", n_libraries)
    agg.insert(0, "n_cells", n_cells)
    agg.insert(0, "scale", scale)
    agg["status"] = "ok"
    return agg[list(RESULT_COLUMNS)]


def run_row(
    result: RunResult,
    *,
    scale: str,
    step: str,
    n_cells: float,
    n_libraries: int,
    n_jobs: float = float("nan"),
) -> dict[str, object]:
    """One result row for a timed command (workflow, report, baseline, dry run)."""
    return {
        "scale": scale,
        "n_cells": n_cells,
        "n_libraries": n_libraries,
        "step": step,
        "n_jobs": n_jobs,
        "wall_s": round(result.wall_s, 2),
        "max_job_wall_s": float("nan"),
        "cpu_s": round(result.cpu_s, 2),
        "peak_rss_mib": round(result.peak_rss_bytes / MIB, 1),
        "status": result.status,
    }


# --------------------------------------------------------------------------------------
# results.tsv: merge, order
# --------------------------------------------------------------------------------------


def _kind(step: str) -> str:
    if step == "baseline":
        return "baseline"
    if step in DRY_RUN_STEPS:
        return "dry_run"
    return "workflow"


def sort_results(df: pd.DataFrame) -> pd.DataFrame:
    """Order rows: scales by size (dry run last), then rules A-Z, then the run rows.

    Stable (mergesort), so equal keys keep their order.
    """
    out = df.copy()
    step_group = {s: i + 1 for i, s in enumerate(RUN_STEPS)}
    step_group.update({s: 10 + i for i, s in enumerate(DRY_RUN_STEPS)})
    out["_scale"] = [scale_size(s) for s in out["scale"]]
    out["_group"] = [step_group.get(s, 0) for s in out["step"]]
    out = out.sort_values(["_scale", "scale", "_group", "step"], kind="mergesort")
    return out.drop(columns=["_scale", "_group"]).reset_index(drop=True)


def merge_results(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Merge new rows into earlier results; a re-run replaces what it measured.

    Rows come in three kinds per scale: workflow (rules, ``end_to_end_workflow``,
    ``report``), ``baseline`` and dry-run rows. For every (scale, kind) present in
    ``new``, all earlier rows of that scale and kind are dropped (so a rule that no
    longer exists disappears); everything else in ``old`` is kept.

    Parameters
    ----------
    old
        Earlier ``results.tsv`` (or None).
    new
        Rows of this invocation, columns :data:`RESULT_COLUMNS`.

    Returns
    -------
    pandas.DataFrame
        Sorted with :func:`sort_results`.
    """
    new = new.reindex(columns=list(RESULT_COLUMNS))
    if old is None or old.empty:
        return sort_results(new)
    old = old.reindex(columns=list(RESULT_COLUMNS))
    replaced = {(str(sc), _kind(st)) for sc, st in zip(new["scale"], new["step"], strict=True)}
    keep = [
        (str(sc), _kind(st)) not in replaced
        for sc, st in zip(old["scale"], old["step"], strict=True)
    ]
    parts = [df for df in (old.loc[keep], new) if not df.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else new
    return sort_results(merged)


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


def _row(results: pd.DataFrame, scale: str, step: str) -> pd.Series | None:
    sel = results[(results["scale"].astype(str) == scale) & (results["step"] == step)]
    return None if sel.empty else sel.iloc[-1]


def check_targets(results: pd.DataFrame) -> pd.DataFrame:
    """Evaluate the issue's targets on ``results.tsv`` rows.

    * ``report_200k_le_15min``: 200k workflow + report wall time <= 900 s.
    * ``peak_rss_1M_le_16GiB``: at 1M, workflow and report complete and the larger
      of their sampled peak tree RSS <= 16 GiB.
    * ``speedup_200k_ge_1.5x``: baseline wall / workflow wall >= 1.5 at 200k. A
      baseline killed by the watchdog gives a lower bound (its wall time at the
      kill): PASS if that already reaches 1.5, else NOT RUN (inconclusive); a
      baseline that failed on its own is NOT RUN.
    * ``dry_run_1000_le_10s``: ``snakemake -n`` on 1,000 libraries <= 10 s (the
      cold run without the Slurm probe when ``scontrol`` was stubbed).

    A target whose rows are missing is NOT RUN; one whose workflow failed is FAIL.

    Parameters
    ----------
    results
        Rows of ``results.tsv``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TARGET_COLUMNS`, one row per target.
    """
    out = []

    def add(target, scale, value, threshold, result, detail):
        out.append({"target": target, "scale": scale, "value": value,
                    "threshold": threshold, "result": result, "detail": detail})

    # 1. 200k raw -> report <= 15 min
    wf, rep = _row(results, REPORT_SCALE, "end_to_end_workflow"), _row(
        results, REPORT_SCALE, "report")
    name = "report_200k_le_15min"
    if wf is None:
        add(name, REPORT_SCALE, np.nan, REPORT_MAX_S, "NOT RUN", "no 200k workflow run")
    elif wf["status"] != "ok" or rep is None or rep["status"] != "ok":
        why = wf["status"] if wf["status"] != "ok" else (
            "report not run" if rep is None else f"report {rep['status']}")
        add(name, REPORT_SCALE, np.nan, REPORT_MAX_S, "FAIL", f"workflow/report: {why}")
    else:
        total = float(wf["wall_s"]) + float(rep["wall_s"])
        add(name, REPORT_SCALE, round(total, 1), REPORT_MAX_S,
            "PASS" if total <= REPORT_MAX_S else "FAIL",
            f"workflow {float(wf['wall_s']):.0f} s + report {float(rep['wall_s']):.0f} s")

    # 2. 1M completes within 16 GiB
    wf, rep = _row(results, PEAK_SCALE, "end_to_end_workflow"), _row(results, PEAK_SCALE, "report")
    name = "peak_rss_1M_le_16GiB"
    limit_mib = PEAK_MAX_GIB * 1024
    if wf is None:
        add(name, PEAK_SCALE, np.nan, limit_mib, "NOT RUN", "no 1M workflow run")
    else:
        peaks = [float(r["peak_rss_mib"]) for r in (wf, rep) if r is not None]
        peak = max(peaks)
        ok_runs = wf["status"] == "ok" and rep is not None and rep["status"] == "ok"
        detail = f"workflow {wf['status']}, report {'not run' if rep is None else rep['status']}"
        add(name, PEAK_SCALE, round(peak, 1), limit_mib,
            "PASS" if ok_runs and peak <= limit_mib else "FAIL", detail)

    # 3. workflow >= 1.5x faster than the one-script baseline at 200k
    wf, base = _row(results, SPEEDUP_SCALE, "end_to_end_workflow"), _row(
        results, SPEEDUP_SCALE, "baseline")
    name = "speedup_200k_ge_1.5x"
    if wf is None or base is None:
        missing = "workflow" if wf is None else "baseline"
        add(name, SPEEDUP_SCALE, np.nan, SPEEDUP_MIN, "NOT RUN", f"no 200k {missing} run")
    elif wf["status"] != "ok":
        add(name, SPEEDUP_SCALE, np.nan, SPEEDUP_MIN, "FAIL", f"workflow {wf['status']}")
    else:
        ratio = float(base["wall_s"]) / float(wf["wall_s"])
        detail = f"baseline {float(base['wall_s']):.0f} s / workflow {float(wf['wall_s']):.0f} s"
        if base["status"] == "ok":
            add(name, SPEEDUP_SCALE, round(ratio, 3), SPEEDUP_MIN,
                "PASS" if ratio >= SPEEDUP_MIN else "FAIL", detail)
        elif str(base["status"]).startswith("killed"):
            add(name, SPEEDUP_SCALE, round(ratio, 3), SPEEDUP_MIN,
                "PASS" if ratio >= SPEEDUP_MIN else "NOT RUN",
                f"baseline {base['status']}; ratio is a lower bound ({detail})")
        else:
            add(name, SPEEDUP_SCALE, np.nan, SPEEDUP_MIN, "NOT RUN",
                f"baseline {base['status']}")

    # 4. snakemake -n on 1,000 libraries <= 10 s
    name = "dry_run_1000_le_10s"
    raw = _row(results, DRY_RUN_SCALE, "dry_run")
    stub = _row(results, DRY_RUN_SCALE, "dry_run_stub_scontrol")
    use = stub if stub is not None else raw
    if use is None:
        add(name, DRY_RUN_SCALE, np.nan, DRY_RUN_MAX_S, "NOT RUN", "no dry run")
    else:
        libs = int(use["n_libraries"])
        parts = [f"{libs} libraries"]
        if raw is not None:
            parts.append(f"with the Slurm probe {float(raw['wall_s']):.1f} s")
        if stub is not None:
            parts.append(f"scontrol stubbed {float(stub['wall_s']):.1f} s")
        wall = float(use["wall_s"])
        passed = use["status"] == "ok" and wall <= DRY_RUN_MAX_S and libs >= 1000
        add(name, DRY_RUN_SCALE, round(wall, 2), DRY_RUN_MAX_S,
            "PASS" if passed else "FAIL", "; ".join(parts + [f"status {use['status']}"]))
    return pd.DataFrame(out, columns=list(TARGET_COLUMNS))


def format_targets(targets: pd.DataFrame) -> list[str]:
    """Human-readable ``RESULT target: value (threshold) detail`` lines."""
    lines = []
    for _, t in targets.iterrows():
        value = "-" if pd.isna(t["value"]) else f"{t['value']:g}"
        lines.append(f"{t['result']:<7} {t['target']}: {value} "
                     f"(threshold {t['threshold']:g}) {t['detail']}")
    return lines


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


def snakemake_exe() -> Path:
    """The ``snakemake`` next to this Python (the project's .venv)."""
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        exe = REPO / ".venv" / "bin" / "snakemake"
    return exe


def scontrol_stub_dir(workdir: Path) -> Path:
    """Folder with an ``scontrol`` that exits 1 at once (as ``tests/conftest.py`` uses).

    snakemake-executor-plugin-slurm runs ``scontrol show config`` (10 s timeout)
    when snakemake starts; with Slurm client tools but no controller this adds
    ~10 s to every snakemake call, unrelated to the workflow.
    """
    stub_dir = Path(workdir) / ".stubs"
    stub_dir.mkdir(parents=True, exist_ok=True)
    stub = stub_dir / "scontrol"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    return stub_dir


def command_env(*, stub_dir: Path | None) -> dict[str, str]:
    """Environment of the timed commands (optional scontrol stub first on PATH)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if stub_dir is not None:
        env["PATH"] = f"{stub_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake_cmd(run_dir: Path, samples: Path, clinical: Path, *, cores: int,
                  extra: Sequence[str] = ()) -> list[str]:
    """The workflow command line used for a benchmark run."""
    return [
        str(snakemake_exe()), "--cores", str(cores), "-s", str(REPO / "Snakefile"),
        "-d", str(run_dir), "--configfile", str(REPO / "config" / "config.yaml"),
        "--config", f"samples={samples}", f"clinical={clinical}", *extra,
    ]


def baseline_env(threads: int, stub_dir: Path | None) -> dict[str, str]:
    """Environment of the baseline: BLAS/OpenMP/numba threads capped at ``threads``."""
    env = command_env(stub_dir=stub_dir)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    return env


def bench_scale(
    spec: ScaleSpec,
    *,
    workdir: Path,
    cores: int,
    seed: int,
    run_workflow: bool,
    run_baseline: bool,
    baseline_max_bytes: int,
    baseline_timeout_s: float | None,
    stub_dir: Path | None,
    mem_mb: int | None = None,
) -> pd.DataFrame:
    """Simulate, run and measure one scale; returns its result rows.

    ``mem_mb`` is passed to the workflow as ``--resources mem_mb=N``: the memory the
    scheduler may hand out to concurrent jobs (their ``mem_mb`` model,
    docs/RESOURCES.md), as a user states a machine's memory."""
    base = Path(workdir) / spec.name
    cohort = base / "cohort"
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sim = simulate_scale(spec, cohort, seed=seed)
    n_cells, n_libs = int(sim["n_cells"]), int(sim["n_libraries"])
    samples, clinical = cohort / "samples.tsv", cohort / "clinical.tsv"
    env = command_env(stub_dir=stub_dir)
    rows: list[dict] = []
    frames: list[pd.DataFrame] = []
    if run_workflow:
        run_dir = base / "run"
        if run_dir.exists():
            log.info("%s: removing the previous run %s", spec.name, run_dir)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        log.info("%s: running the workflow (%d libraries, %d cells, --cores %d)",
                 spec.name, n_libs, n_cells, cores)
        extra = ["--resources", f"mem_mb={mem_mb}"] if mem_mb else []
        wf = run_monitored(snakemake_cmd(run_dir, samples, clinical, cores=cores, extra=extra),
                           cwd=run_dir, env=env, log_path=logs / "workflow.log")
        log.info("%s: workflow %s in %.0f s, peak tree RSS %.2f GiB", spec.name, wf.status,
                 wf.wall_s, wf.peak_rss_bytes / GIB)
        per_rule = rule_rows(run_dir, scale=spec.name, n_cells=n_cells, n_libraries=n_libs)
        frames.append(per_rule)
        rows.append(run_row(wf, scale=spec.name, step="end_to_end_workflow", n_cells=n_cells,
                            n_libraries=n_libs, n_jobs=int(per_rule["n_jobs"].sum())))
        if wf.ok:
            rep = run_monitored(
                snakemake_cmd(run_dir, samples, clinical, cores=cores,
                              extra=["--report", "results/report.html"]),
                cwd=run_dir, env=env, log_path=logs / "report.log",
            )
            log.info("%s: report %s in %.0f s", spec.name, rep.status, rep.wall_s)
            rows.append(run_row(rep, scale=spec.name, step="report", n_cells=n_cells,
                                n_libraries=n_libs))
        else:
            log.error("%s: workflow failed; see %s", spec.name, logs / "workflow.log")
    if run_baseline:
        out_dir = base / "baseline"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        cmd = [sys.executable, str(REPO / "benchmarks" / "baseline_one_script.py"),
               "--samples", str(samples), "--clinical", str(clinical),
               "--signatures", str(REPO / "resources" / "signatures" / "t_cell_states.yaml"),
               "--out", str(out_dir), "--threads", str(cores), "--seed", str(seed)]
        log.info("%s: running the one-script baseline (watchdog %.3g GiB)", spec.name,
                 baseline_max_bytes / GIB)
        res = run_monitored(cmd, cwd=out_dir, env=baseline_env(cores, stub_dir),
                            log_path=logs / "baseline.log", max_rss_bytes=baseline_max_bytes,
                            timeout_s=baseline_timeout_s)
        log.info("%s: baseline %s in %.0f s, peak tree RSS %.2f GiB", spec.name, res.status,
                 res.wall_s, res.peak_rss_bytes / GIB)
        rows.append(run_row(res, scale=spec.name, step="baseline", n_cells=n_cells,
                            n_libraries=n_libs, n_jobs=1))
    frames.append(pd.DataFrame(rows, columns=list(RESULT_COLUMNS)))
    frames = [f for f in frames if not f.empty]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=list(RESULT_COLUMNS)))


# --------------------------------------------------------------------------------------
# Dry run on a 1,000-library sheet
# --------------------------------------------------------------------------------------


def _distinct_copies(library: Path, vdj: Path, folder: Path, *, index: int) -> None:
    """Copies of ``library`` (h5) and ``vdj`` (10x CSV) in ``folder``, made unique by
    an HDF5 attribute and by the ``reads`` of the first contig (``+ index``)."""
    import csv

    import h5py

    shutil.copyfile(library, folder / library.name)
    with h5py.File(folder / library.name, "r+") as f:
        f.attrs["bench_copy"] = index
    with open(vdj, newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("reads")
    rows[1][col] = str(int(rows[1][col]) + index)
    with open(folder / vdj.name, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def build_dry_run_sheet(
    library: Path, vdj: Path, out_dir: Path, *, n_libraries: int
) -> tuple[Path, Path]:
    """A sample sheet of ``n_libraries`` rows that are copies of one library.

    Every row gets its own folder ``libs/<sample>/`` with copies of ``library``
    (a Cell Ranger h5) and ``vdj`` (a 10x contig CSV) that differ in one value (an
    HDF5 attribute, the ``reads`` of the first contig): two libraries with the same
    checksum are refused, as a row copied by mistake. Patients have two libraries
    each: the product (``IP``) and a ``D14`` blood sample; responses alternate CR / PD.

    Parameters
    ----------
    library, vdj
        Files every row points at.
    out_dir
        Folder receiving ``samples.tsv``, ``clinical.tsv`` and ``libs/``.
    n_libraries
        Rows of the sheet.

    Returns
    -------
    samples, clinical
        Paths of the two sheets.
    """
    out_dir = Path(out_dir)
    libs = out_dir / "libs"
    if libs.exists():
        shutil.rmtree(libs)
    rows, patients = [], []
    n_pat = (n_libraries + 1) // 2
    width = len(str(n_pat))
    for i in range(n_libraries):
        patient = f"P{i // 2 + 1:0{width}d}"
        tp, day, comp = ("IP", 0, "product") if i % 2 == 0 else ("D14", 14, "PB")
        sample = f"{patient}_{tp}"
        folder = libs / sample
        folder.mkdir(parents=True)
        _distinct_copies(library, vdj, folder, index=i)
        rows.append({"sample": sample, "patient": patient, "timepoint": tp,
                     "timepoint_day": day, "compartment": comp, "batch": f"b{i % 3 + 1}",
                     "sort": "CD3+", "gex": f"libs/{sample}/{library.name}",
                     "vdj": f"libs/{sample}/{vdj.name}"})
        if i % 2 == 0:
            patients.append({"patient": patient, "response": ("CR", "PD")[(i // 2) % 2]})
    samples, clinical = out_dir / "samples.tsv", out_dir / "clinical.tsv"
    write_table(pd.DataFrame(rows), samples)
    write_table(pd.DataFrame(patients), clinical)
    return samples, clinical


def bench_dry_run(
    n_libraries: int, *, workdir: Path, cores: int, seed: int, scontrol_on_path: bool
) -> pd.DataFrame:
    """Time ``snakemake -n`` on an ``n_libraries`` sheet, cold and warm.

    Cold = a fresh project folder (the sheet checker reads every library);
    warm = the same folder again (its input-check cache is used). With
    ``scontrol`` on PATH both are also measured with the stub first on PATH.
    """
    base = Path(workdir) / DRY_RUN_SCALE
    spec = ScaleSpec("dry-run-library", n_patients=2, frac_longitudinal=0.0,
                     cells_per_library=100)
    cohort = base / "cohort"
    current = cohort_is_current(cohort, spec, seed=seed)
    if current is None:
        simulate_scale(spec, cohort, seed=seed, log_path=base / "simulate.log")
    sheet = pd.read_csv(cohort / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    h5_rows = sheet[sheet["gex"].str.endswith(".h5") & sheet["vdj"].str.endswith(".csv")]
    if h5_rows.empty:
        raise RuntimeError(f"{cohort}/samples.tsv has no h5 library with a 10x contig CSV")
    first = h5_rows.iloc[0]
    samples, clinical = build_dry_run_sheet(
        cohort / first["gex"], cohort / first["vdj"], base, n_libraries=n_libraries)
    variants = [("dry_run", None)]
    if scontrol_on_path:
        variants.append(("dry_run_stub_scontrol", scontrol_stub_dir(workdir)))
    rows = []
    for step, stub in variants:
        run_dir = base / f"run_{step}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        env = command_env(stub_dir=stub)
        for suffix in ("", "_warm"):
            res = run_monitored(snakemake_cmd(run_dir, samples, clinical, cores=cores,
                                              extra=["-n"]),
                                cwd=run_dir, env=env,
                                log_path=base / f"{step}{suffix}.log")
            log.info("dry run %s%s (%d libraries): %s in %.1f s", step, suffix, n_libraries,
                     res.status, res.wall_s)
            rows.append(run_row(res, scale=DRY_RUN_SCALE, step=step + suffix,
                                n_cells=float("nan"), n_libraries=n_libraries))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        description="Scale benchmark: simulate cohorts, run workflow and one-script baseline.",
    )
    p.add_argument("--scales", type=parse_scales, default=list(DEFAULT_SCALES),
                   help=f"comma-separated, from {', '.join(SCALES)} (default "
                        f"{','.join(DEFAULT_SCALES)}); 2k is a smoke-test size")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--only-baseline", action="store_true",
                       help="run only the one-script baseline (not the workflow)")
    which.add_argument("--no-baseline", action="store_true",
                       help="do not run the one-script baseline")
    which.add_argument("--only-dry-run", action="store_true",
                       help="run only the --dry-run-libraries timing (no scale)")
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work",
                   help="simulated cohorts and runs (default benchmarks/work)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results.tsv",
                   help="results table, merged with its earlier rows "
                        "(default benchmarks/results.tsv)")
    p.add_argument("--targets", type=Path, default=None,
                   help="target checks (default: targets.tsv next to --results)")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    p.add_argument("--mem-mb", type=int, default=16384,
                   help="snakemake --resources mem_mb=N for the workflow runs: memory the "
                        "scheduler may give to concurrent jobs (default 16384 = the 16 GiB "
                        "target; 0 = unlimited)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument("--baseline-max-gib", type=float, default=PEAK_MAX_GIB,
                   help="kill the baseline when its tree RSS exceeds this (default 16)")
    p.add_argument("--baseline-timeout-s", type=float, default=0,
                   help="kill the baseline after this many seconds (default 0 = no limit)")
    p.add_argument("--dry-run-libraries", type=int, default=0,
                   help="also time `snakemake -n` on a sheet of this many libraries "
                        "(e.g. 1000; default 0 = skip)")
    p.add_argument("--no-scontrol-stub", action="store_true",
                   help="run the workflow with the real `scontrol` on PATH (by default a "
                        "stub that exits 1 is put first when scontrol exists, to skip the "
                        "Slurm plugin's 10 s probe)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns 0 unless a measured run failed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cores < 1:
        raise SystemExit("--cores must be >= 1")
    if args.only_dry_run and args.dry_run_libraries < 1:
        raise SystemExit("--only-dry-run needs --dry-run-libraries N (e.g. 1000)")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scontrol_on_path = shutil.which("scontrol") is not None
    stub_dir = None
    if scontrol_on_path and not args.no_scontrol_stub:
        stub_dir = scontrol_stub_dir(workdir)
        log.info("scontrol is on PATH: timed runs use a stub scontrol (%s) to skip the Slurm "
                 "plugin's 10 s probe; --no-scontrol-stub to keep it", stub_dir)
    frames = []
    if not args.only_dry_run:
        for name in args.scales:
            frames.append(bench_scale(
                SCALES[name], workdir=workdir, cores=args.cores, seed=args.seed,
                run_workflow=not args.only_baseline, run_baseline=not args.no_baseline,
                baseline_max_bytes=int(args.baseline_max_gib * GIB),
                mem_mb=args.mem_mb or None,
                baseline_timeout_s=args.baseline_timeout_s or None, stub_dir=stub_dir,
            ))
    if args.dry_run_libraries:
        frames.append(bench_dry_run(args.dry_run_libraries, workdir=workdir, cores=args.cores,
                                    seed=args.seed, scontrol_on_path=scontrol_on_path))
    new = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=list(RESULT_COLUMNS))
    old = read_table(args.results) if args.results.is_file() else None
    results = merge_results(old, new)
    write_table(results, args.results)
    targets = check_targets(results)
    targets_path = args.targets or args.results.with_name("targets.tsv")
    write_table(targets, targets_path)
    log.info("wrote %s and %s", args.results, targets_path)
    sys.stdout.write("\n".join(format_targets(targets)) + "\n")
    failed = [s for s in new["status"] if s != "ok" and not str(s).startswith("killed")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
