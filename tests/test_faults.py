"""Fault tolerance: repeated runs, a killed run, a corrupt library, and no code in config.

One small simulated cohort (6 patients, 150-300 cells per library, 2 of them with
D14/M3 follow-up: 10 libraries; ``tests/_small_cohort.py``) is generated once for the
session, and its clean run is shared with ``test_ids``. Every run uses the
CLI as a user would (``snakemake -s <repo>/Snakefile -d <project> --cores 2``) on a
project folder under pytest's tmp.

- A clean run (run at the same time as ``test_ids``' renamed-ids run in another project
  folder) writes the contract tables; repeats give byte-identical ``results/tables/*``
  (the e2e demo run against the recorded checksums of ``make run``).
- A run killed with SIGKILL (snakemake and its jobs: one process group) in the middle
  of the per-library steps, resumed with ``--unlock`` + ``--rerun-incomplete``, gives
  the same bytes as the clean runs.
- A library whose MatrixMarket header is intact but whose body is garbled passes the
  parse-time validation and fails in ``load_sample``; with ``--keep-going`` the other
  libraries are still processed, the run exits non-zero naming the sample and saying
  how to exclude it (``exclude_samples: ['<id>']``), no cohort table is written, and
  the per-library tables of the other libraries are those of the clean run (the ones
  kept are not rewritten). Re-running with ``exclude_samples`` completes without it,
  leaves every other library's tables as they were, and the overview page lists it as
  skipped. (To save time this starts from a copy of a finished clean run with every
  cohort-level result deleted, and the per-library results of the bad library and of
  three good ones deleted: those three must be rebuilt by ``--keep-going`` while the
  bad library fails.)
- Static check: no rule runs ``shell:``/``run:`` (the rules as Snakemake parses them), no
  ``eval``/``exec`` in ``workflow/``, YAML only read with safe loaders; the config is
  loaded safely (a ``!!python`` tag is refused, never run) and validated by a dry run.
"""

from __future__ import annotations

import difflib
import gzip
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from _snakemake_dump import demo_project
from cartcohort import io, sheets
from cartcohort.errors import InputError
from _small_cohort import CONFIGFILE, TARGET, sheet_config, start
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.e2e

# --------------------------------------------------------------------------- helpers


def tables(workdir: Path) -> dict[str, bytes]:
    folder = workdir / "results" / "tables"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _text(name: str, data: bytes) -> list[str]:
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace").splitlines()


def assert_same_tables(ref: Path, other: Path, what: str) -> None:
    """Every file of results/tables/ byte-identical; on mismatch show the first diff lines."""
    a, b = tables(ref), tables(other)
    assert a, f"{ref}/results/tables is empty"
    assert sorted(a) == sorted(b), f"{what}: different table files: {sorted(a)} vs {sorted(b)}"
    report = []
    for name in a:
        if a[name] == b[name]:
            continue
        la, lb = _text(name, a[name]), _text(name, b[name])
        first = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
        diff = difflib.unified_diff(
            la[max(0, first - 1) : first + 4],
            lb[max(0, first - 1) : first + 4],
            fromfile=f"{ref.name}/{name}",
            tofile=f"{other.name}/{name}",
            lineterm="",
            n=0,
        )
        report.append(
            f"{name}: first difference at line {first + 1} "
            f"({len(la)} vs {len(lb)} lines)\n" + "\n".join(list(diff)[:12])
        )
    assert not report, f"{what}: tables differ:\n" + "\n\n".join(report)


def library_tables(workdir: Path, samples: list[str]) -> dict[str, bytes]:
    """The per-library tables of `samples`: results/load/<id>.*.tsv, results/qc/<id>.tsv."""
    found = {}
    for s in samples:
        for p in [*(workdir / "results" / "load").glob(f"{s}.*.tsv"),
                  workdir / "results" / "qc" / f"{s}.tsv"]:
            found[str(p.relative_to(workdir))] = p.read_bytes()
    return found


def mtimes(workdir: Path, samples: list[str]) -> dict[str, int]:
    """Modification times of every per-library result (results/load, results/qc) of `samples`."""
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for s in samples
        for p in [*(workdir / "results" / "load").glob(f"{s}.*"),
                  *(workdir / "results" / "qc").glob(f"{s}.*")]
    }


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cohort(small_cohort) -> Path:
    return small_cohort


@pytest.fixture(scope="module")
def cohort_config(small_cohort_config) -> dict[str, str]:
    return small_cohort_config


@pytest.fixture(scope="module")
def clean_run(small_clean_runs) -> Path:
    """The clean run of the whole analysis (target ``tables``)."""
    return small_clean_runs.clean


# --------------------------------------------------------------------------- (a) clean


def test_clean_run_writes_the_contract_tables(clean_run):
    names = set(tables(clean_run))
    assert {
        "cells.tsv.gz",
        "qc_samples.tsv",
        "association.tsv",
        "clone_tracking.tsv",
        "sample_features.tsv",
    } <= names, names


# --------------------------------------------------------------------------- (b) SIGKILL


def test_killed_run_resumes_to_identical_tables(tmp_path, clean_run, cohort_config):
    work = tmp_path / "killed"
    t0 = time.perf_counter()
    proc = start(work, cohort_config, TARGET)
    qc_dir, cells = work / "results" / "qc", work / "results" / "tables" / "cells.tsv.gz"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"the run ended (rc {proc.returncode}) before it could be killed:\n"
                    + (work / "run.log").read_text()[-3000:]
                )
            if qc_dir.is_dir() and any(p.is_file() for p in qc_dir.iterdir()):
                break
            if time.perf_counter() - t0 > 900:
                pytest.fail(
                    "no results/qc/ file after 900 s:\n" + (work / "run.log").read_text()[-3000:]
                )
            time.sleep(0.1)
        assert not cells.exists(), "cells.tsv.gz already written: the kill came too late"
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it runs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for _ in range(100):  # the killed jobs are gone (no writer left behind)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"processes of the killed group {proc.pid} are still running")
    killed_at = time.perf_counter() - t0
    assert not cells.exists()
    assert (work / ".snakemake" / "locks").is_dir() and any(
        (work / ".snakemake" / "locks").iterdir()
    ), "a SIGKILLed run should leave its lock behind"

    run_snakemake(work, "--unlock", configfile=CONFIGFILE, config=cohort_config)
    run_snakemake(
        work, "--rerun-incomplete", TARGET, configfile=CONFIGFILE, config=cohort_config
    )
    print(
        f"killed after {killed_at:.0f} s; resumed run finished after "
        f"{time.perf_counter() - t0:.0f} s in all"
    )
    assert_same_tables(clean_run, work, "killed + resumed run vs clean run")
    # nothing is left to do: the resumed run is complete and consistent
    dry = run_snakemake(work, "-n", TARGET, configfile=CONFIGFILE, config=cohort_config)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


# --------------------------------------------------------------------------- (c) bad library


def _garble_mtx(folder: Path) -> None:
    """Keep the MatrixMarket header and size line, truncate and garble the entries."""
    path = folder / "matrix.mtx.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    n_head = next(i for i, line in enumerate(lines) if not line.startswith("%")) + 1
    body = lines[n_head:]
    broken = lines[:n_head] + body[: len(body) // 2] + ["17 4x 1"]
    path.write_bytes(gzip.compress(("\n".join(broken) + "\n").encode(), mtime=0))


def test_corrupt_library_keep_going_then_exclude(tmp_path, cohort, clean_run):
    sheet = pd.read_csv(cohort / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    is_mtx = ~sheet["gex"].str.endswith(".h5")
    bad = sheet.loc[is_mtx & (sheet["timepoint"] != "IP"), "sample"].iloc[0]
    good = [s for s in sheet["sample"] if s != bad]

    # a sheet with the absolute paths the workflow resolved for the clean runs (so the
    # good libraries' results stay up to date); only the bad library points elsewhere
    bad_dir = tmp_path / "bad_inputs"
    resolved, _, _ = sheets.prepare_inputs(
        {"samples": str(cohort / "samples.tsv"), "clinical": str(cohort / "clinical.tsv")},
        check_files=False,
    )
    for col in ("gex", "vdj"):
        sheet[col] = resolved.loc[sheet["sample"], col].to_numpy()
    src = Path(sheet.loc[sheet["sample"] == bad, "gex"].iloc[0])
    shutil.copytree(src, bad_dir / bad / src.name)
    _garble_mtx(bad_dir / bad / src.name)
    sheet.loc[sheet["sample"] == bad, "gex"] = str(bad_dir / bad / src.name)
    sheet.to_csv(bad_dir / "samples.tsv", sep="\t", index=False)
    config = sheet_config(bad_dir / "samples.tsv", cohort / "clinical.tsv")

    # the cheap parse-time validation lets it through; the load-time reader does not
    samples, _, _ = sheets.prepare_inputs(dict(config, primary_timepoint="IP"), check_files=True)
    assert bad in samples.index
    with pytest.raises(InputError, match="cannot be read as a MatrixMarket"):
        io.read_gex(bad_dir / bad / src.name, sample=bad)

    # project folder: a copy of a finished clean run (its per-library results are
    # valid for the good libraries) without any cohort-level result, and without the
    # per-library results of three good libraries, which --keep-going must rebuild
    # while the bad library fails
    work = tmp_path / "project"
    shutil.copytree(clean_run, work, symlinks=True)
    for p in (work / "results").iterdir():
        if p.name not in ("load", "qc"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    rebuilt = good[::4][:3]
    for s in [bad, *rebuilt]:
        for p in [
            *(work / "results" / "load").glob(f"{s}.*"),
            *(work / "results" / "qc").glob(f"{s}.*"),
        ]:
            p.unlink()
    clean_tables = library_tables(clean_run, good)
    kept = [s for s in good if s not in rebuilt]
    kept_mtimes = mtimes(work, kept)
    t0 = time.time()

    # the bad library is scheduled first, so the other libraries' jobs run after it failed
    proc = run_snakemake(
        work,
        "--keep-going",
        TARGET,
        "--prioritize",
        f"results/load/{bad}.h5mu",
        configfile=CONFIGFILE,
        config=config,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    blocks = [out[m.start() : m.start() + 800] for m in re.finditer("Error in rule", out)]
    assert blocks and all(b.startswith("Error in rule load_sample:") for b in blocks), out[-5000:]
    assert any(f"results/load/{bad}.h5mu" in b for b in blocks), blocks
    bad_log = work / "logs" / "load_sample" / f"{bad}.log"
    log = bad_log.read_text()
    assert str(bad_dir / bad / src.name) in log and "cannot be read" in log, log[-3000:]
    # the message says how to go on without the library, in the output and in its log
    hint = f"add it to the config's exclude_samples (exclude_samples: ['{bad}'])"
    assert hint in out and hint in log, out[-5000:]
    # the other libraries: the same per-library tables as the clean run; those kept untouched
    assert library_tables(work, good) == clean_tables
    assert mtimes(work, kept) == kept_mtimes, "per-library results of good libraries rewritten"
    for s in good:
        h5mu = work / "results" / "qc" / f"{s}.h5mu"
        assert h5mu.is_file(), f"{s}: qc output missing after --keep-going"
    rebuilt_at = [(work / "results" / "qc" / f"{s}.h5mu").stat().st_mtime for s in rebuilt]
    assert min(rebuilt_at) >= t0 - 1, "the deleted libraries were not rebuilt"
    assert max(rebuilt_at) > bad_log.stat().st_mtime, "nothing ran after the failure"
    assert not (work / "results" / "qc" / f"{bad}.h5mu").exists()
    assert not (work / "results" / "tables" / "cells.tsv.gz").exists()
    leftovers = (
        list((work / "results" / "tables").glob("*"))
        if (work / "results" / "tables").exists()
        else []
    )
    assert not leftovers, f"cohort tables written despite the failed library: {leftovers}"

    good_mtimes = mtimes(work, good)
    run_snakemake(
        work,
        "--",
        TARGET,
        "results/overview.html",
        configfile=CONFIGFILE,
        config=dict(config, exclude_samples=f"[{bad}]"),
    )
    assert library_tables(work, good) == clean_tables
    assert mtimes(work, good) == good_mtimes, "excluding a library re-ran the others' jobs"
    cells = pd.read_csv(
        work / "results" / "tables" / "cells.tsv.gz", sep="\t", usecols=["sample"], dtype=str
    )
    assert bad not in set(cells["sample"])
    qc = pd.read_csv(work / "results" / "tables" / "qc_samples.tsv", sep="\t", dtype=str)
    assert bad not in set(qc["sample"]) and set(good) == set(qc["sample"])
    html = (work / "results" / "overview.html").read_text()
    skipped = html.split("Skipped analyses and samples", 1)[1]
    assert f"sample {bad}" in skipped and "exclude_samples" in skipped, skipped[:2000]
    # left out on purpose: not a warning
    warnings = pd.read_csv(work / "results" / "tables" / "warnings.tsv", sep="\t", dtype=str)
    assert bad not in set(warnings["sample"].dropna()), warnings


# --------------------------------------------------------------------------- (d) static


def _rule_files() -> list[Path]:
    """The Snakefile and every rule file, for the text scan of forbidden calls."""
    return [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def _strip_comments(text: str) -> str:
    return "\n".join(
        line.split("#", 1)[0] if not line.lstrip().startswith(("'", '"')) else line
        for line in text.splitlines()
    )


def test_no_shell_run_eval_exec_and_safe_yaml(workflow_dump):
    """Rules only declare `script:`; nothing in workflow/ evaluates strings; config and
    other YAML are read with safe loaders only."""
    problems = []
    # every rule as Snakemake parsed it: a script, never a shell command or Python `run:`
    for name, rule in workflow_dump["rules"].items():
        if rule["shellcmd"] is not None:
            problems.append(f"rule {name}: 'shell:' directive")
        if rule["is_run"]:
            problems.append(f"rule {name}: 'run:' directive")
    rule_files = _rule_files()
    assert len(rule_files) >= 8
    # a text scan for calls anywhere in the code (not a rule parser): rule files too
    code_files = [*rule_files, *sorted((REPO / "workflow").rglob("*.py"))]
    call = re.compile(r"(?<![\w.])(eval|exec)\s*\(")
    unsafe_yaml = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\s*\(([^)]*)")
    for path in code_files:
        text = _strip_comments(path.read_text())
        for m in call.finditer(text):
            problems.append(f"{path.relative_to(REPO)}: {m.group(1)}( call")
        for m in unsafe_yaml.finditer(text):
            if m.group(1) in ("load", "load_all") and "SafeLoader" in m.group(2):
                continue
            problems.append(f"{path.relative_to(REPO)}: yaml.{m.group(1)}({m.group(2)[:40]}")
        if re.search(r"\bpickle\.loads?\(|\bmarshal\.loads?\(", text):
            problems.append(f"{path.relative_to(REPO)}: pickle/marshal load")
    assert not problems, "\n".join(problems)


def test_config_is_safe_loaded_and_validated(tmp_path, demo_dir):
    """The config is read by Snakemake's configfile: with a safe YAML loader (a python tag
    is refused, never run) and validated against the schema before anything runs."""
    paths = (f"samples: {demo_dir / 'samples.tsv'}\n"
               f"clinical: {demo_dir / 'clinical.tsv'}\n")
    marker = tmp_path / "executed"
    for name, extra in (
        ("python_tag", f"seed: !!python/object/apply:os.system ['touch {marker}']\n"),
        ("invalid", "integrate:\n  n_pcs: thirty\n"),
    ):
        project = demo_project(tmp_path / name)
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(paths + extra)
        proc = run_snakemake(project, "-n", configfile=cfg, cores=1, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{name}: the dry run accepted the config\n{out[-3000:]}"
        assert not (project / "results").exists()
        if name == "python_tag":
            assert not marker.exists(), "a !!python tag in the config was executed"
        else:
            assert "key 'integrate.n_pcs'" in out, out[-3000:]
