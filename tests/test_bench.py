"""Tests of the benchmark harness (tools/bench.py); the workflow itself is not run."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench", REPO / "tools" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench"] = bench
_spec.loader.exec_module(bench)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench_file(path: Path, *records: tuple[object, object, object]) -> None:
    """Write a Snakemake benchmark file with (s, max_rss, cpu_time) records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\t0:00:00\t{rss}\t1.0\t1.0\t1.0\t0.0\t0.0\t50.0\t{cpu}\n"
             for s, rss, cpu in records]
    path.write_text(HEADER + "".join(lines))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    root = tmp_path / "run" / "benchmarks"
    _bench_file(root / "annotate.tsv", (12.5, 900.25, 11.0))
    _bench_file(root / "qc_sample" / "A.tsv", (3.0, 300.0, 2.5))
    _bench_file(root / "qc_sample" / "B.tsv", (5.0, 450.5, 4.0))
    _bench_file(root / "qc_sample" / "C.tsv", (1.0, "NA", "NA"))  # exited before sampling
    _bench_file(root / "integrate" / "harmony.tsv", (40.0, 2000.0, 70.0))
    _bench_file(root / "integrate" / "none.tsv", (30.0, 1900.0, 50.0))
    _bench_file(root / "versions" / "qc.tsv", (1.5, "-", "-"))
    return tmp_path / "run"


# --------------------------------------------------------------------- collection


def test_rule_of_uses_first_folder_or_file_stem(tmp_path):
    root = tmp_path / "benchmarks"
    assert bench.rule_of(root / "annotate.tsv", root) == "annotate"
    assert bench.rule_of(root / "qc_sample" / "P01_IP.tsv", root) == "qc_sample"
    assert bench.rule_of(root / "versions" / "sub" / "x.tsv", root) == "versions"


def test_rule_rows_aggregate_wildcard_jobs_exactly(run_dir):
    got = bench.rule_rows(run_dir, scale="20k", n_cells=20000, n_libraries=40)
    assert list(got.columns) == list(bench.RESULT_COLUMNS)
    got = got.set_index("step")
    assert list(got.index) == ["annotate", "integrate", "qc_sample", "versions"]
    assert (got["scale"] == "20k").all() and (got["n_cells"] == 20000).all()
    assert (got["n_libraries"] == 40).all() and (got["status"] == "ok").all()
    qc = got.loc["qc_sample"]
    assert qc["n_jobs"] == 3
    assert qc["wall_s"] == pytest.approx(9.0)
    assert qc["max_job_wall_s"] == pytest.approx(5.0)
    assert qc["cpu_s"] == pytest.approx(6.5)  # NA cpu of job C not counted
    assert qc["peak_rss_mib"] == pytest.approx(450.5)
    integ = got.loc["integrate"]
    assert (integ["n_jobs"], integ["wall_s"], integ["max_job_wall_s"], integ["cpu_s"],
            integ["peak_rss_mib"]) == (2, 70.0, 40.0, 120.0, 2000.0)
    ann = got.loc["annotate"]
    assert (ann["n_jobs"], ann["wall_s"], ann["cpu_s"], ann["peak_rss_mib"]) == (
        1, 12.5, 11.0, 900.25)
    ver = got.loc["versions"]  # never sampled: wall time kept, memory/cpu missing
    assert ver["n_jobs"] == 1 and ver["wall_s"] == 1.5
    assert math.isnan(ver["peak_rss_mib"]) and math.isnan(ver["cpu_s"])


def test_repeated_benchmark_records_count_as_jobs(tmp_path):
    root = tmp_path / "benchmarks"
    _bench_file(root / "x.tsv", (2.0, 10.0, 1.0), (4.0, 30.0, 3.0))
    agg = bench.aggregate_rules(bench.read_benchmark_files(root)).set_index("step")
    assert agg.loc["x", "n_jobs"] == 2 and agg.loc["x", "wall_s"] == 6.0
    assert agg.loc["x", "max_job_wall_s"] == 4.0 and agg.loc["x", "peak_rss_mib"] == 30.0


def test_no_benchmark_folder_gives_no_rows(tmp_path):
    assert bench.rule_rows(tmp_path, scale="2k", n_cells=1, n_libraries=1).empty


def test_non_benchmark_tsv_is_an_error(tmp_path):
    root = tmp_path / "benchmarks"
    root.mkdir()
    (root / "odd.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="odd.tsv"):
        bench.read_benchmark_files(root)


# --------------------------------------------------------------------- merge


def _row(scale, step, wall=1.0, status="ok", rss=100.0):
    return {"scale": scale, "n_cells": bench.scale_size(scale), "n_libraries": 4, "step": step,
            "n_jobs": 1, "wall_s": wall, "max_job_wall_s": float("nan"), "cpu_s": wall,
            "peak_rss_mib": rss, "status": status}


def test_merge_replaces_only_what_was_rerun():
    old = pd.DataFrame([
        _row("20k", "old_rule", 1), _row("20k", "qc_sample", 2),
        _row("20k", "end_to_end_workflow", 3), _row("20k", "report", 4),
        _row("20k", "baseline", 5), _row("200k", "qc_sample", 6),
        _row("200k", "end_to_end_workflow", 7), _row("dry-run", "dry_run", 8),
    ])
    new = pd.DataFrame([_row("20k", "end_to_end_workflow", 30), _row("20k", "qc_sample", 20)])
    got = bench.merge_results(old, new)
    keys = list(zip(got["scale"], got["step"], got["wall_s"], strict=True))
    # 20k workflow rows replaced (old_rule and the old report gone), baseline kept;
    # other scales untouched; order: scale size, rules, run rows, dry run last
    assert keys == [
        ("20k", "qc_sample", 20), ("20k", "end_to_end_workflow", 30), ("20k", "baseline", 5),
        ("200k", "qc_sample", 6), ("200k", "end_to_end_workflow", 7),
        ("dry-run", "dry_run", 8),
    ]


def test_merge_baseline_only_keeps_workflow_rows():
    old = pd.DataFrame([_row("1M", "qc_sample", 1), _row("1M", "baseline", 2, "ok")])
    new = pd.DataFrame([_row("1M", "baseline", 9, "killed: RSS > 16 GiB")])
    got = bench.merge_results(old, new)
    assert list(zip(got["step"], got["status"], strict=True)) == [
        ("qc_sample", "ok"), ("baseline", "killed: RSS > 16 GiB")]


def test_results_round_trip_through_the_file(tmp_path, run_dir):
    rows = bench.rule_rows(run_dir, scale="2k", n_cells=2000, n_libraries=4)
    path = tmp_path / "results.tsv"
    bench.write_table(bench.merge_results(None, rows), path)
    again = bench.merge_results(bench.read_table(path), rows)
    assert len(again) == len(rows)
    assert list(again["step"]) == ["annotate", "integrate", "qc_sample", "versions"]


# --------------------------------------------------------------------- targets


def _targets(rows):
    t = bench.check_targets(pd.DataFrame(rows, columns=list(bench.RESULT_COLUMNS)))
    return dict(zip(t["target"], t["result"], strict=True)), t.set_index("target")


def test_targets_not_run_without_rows():
    res, _ = _targets([])
    assert res == {"report_200k_le_15min": "NOT RUN", "peak_rss_1M_le_16GiB": "NOT RUN",
                   "speedup_200k_ge_1.5x": "NOT RUN", "dry_run_1000_le_10s": "NOT RUN"}


def test_targets_pass():
    rows = [
        _row("200k", "end_to_end_workflow", 600), _row("200k", "report", 200),
        _row("200k", "baseline", 900),
        _row("1M", "end_to_end_workflow", 5000, rss=16 * 1024), _row("1M", "report", 300),
        {**_row("dry-run", "dry_run", 19.0), "n_libraries": 1000},
        {**_row("dry-run", "dry_run_stub_scontrol", 9.0), "n_libraries": 1000},
    ]
    res, t = _targets(rows)
    assert set(res.values()) == {"PASS"}
    assert t.loc["report_200k_le_15min", "value"] == 800
    assert t.loc["speedup_200k_ge_1.5x", "value"] == 1.5
    assert t.loc["dry_run_1000_le_10s", "value"] == 9.0
    assert "19.0" in t.loc["dry_run_1000_le_10s", "detail"]


def test_targets_fail():
    rows = [
        _row("200k", "end_to_end_workflow", 800), _row("200k", "report", 101),
        _row("200k", "baseline", 1199),
        _row("1M", "end_to_end_workflow", 5000, rss=16 * 1024 + 1), _row("1M", "report", 300),
        {**_row("dry-run", "dry_run", 10.5), "n_libraries": 1000},
    ]
    res, _ = _targets(rows)
    assert set(res.values()) == {"FAIL"}


def test_targets_failed_runs_and_killed_baseline():
    rows = [
        _row("200k", "end_to_end_workflow", 100, status="failed (exit 1)"),
        _row("1M", "end_to_end_workflow", 100, status="ok", rss=10.0),  # report missing
    ]
    res, _ = _targets(rows)
    assert res["report_200k_le_15min"] == "FAIL"
    assert res["peak_rss_1M_le_16GiB"] == "FAIL"
    assert res["speedup_200k_ge_1.5x"] == "NOT RUN"  # no baseline row

    killed = "killed: RSS > 16 GiB"
    res, t = _targets([_row("200k", "end_to_end_workflow", 100),
                       _row("200k", "baseline", 200, status=killed)])
    assert res["speedup_200k_ge_1.5x"] == "PASS"  # lower bound 2.0 already enough
    assert "lower bound" in t.loc["speedup_200k_ge_1.5x", "detail"]
    res, _ = _targets([_row("200k", "end_to_end_workflow", 100),
                       _row("200k", "baseline", 120, status=killed)])
    assert res["speedup_200k_ge_1.5x"] == "NOT RUN"  # inconclusive
    res, _ = _targets([_row("200k", "end_to_end_workflow", 100),
                       _row("200k", "baseline", 500, status="failed (exit 1)")])
    assert res["speedup_200k_ge_1.5x"] == "NOT RUN"


def test_format_targets_lines():
    res = bench.check_targets(pd.DataFrame(columns=list(bench.RESULT_COLUMNS)))
    lines = bench.format_targets(res)
    assert len(lines) == 4 and all(line.startswith("NOT RUN") for line in lines)


# --------------------------------------------------------------------- watchdog


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


ALLOC = ("import time, numpy as np; a = np.ones({mib} * 1024 * 1024 // 8); "
         "time.sleep({sleep})")


def test_watchdog_kills_a_child_above_the_rss_limit(tmp_path):
    start = time.perf_counter()
    res = bench.run_monitored(_py(ALLOC.format(mib=400, sleep=30)),
                              max_rss_bytes=200 * bench.MIB, interval_s=0.1,
                              log_path=tmp_path / "child.log")
    assert res.status == "killed: RSS > 200 MiB"
    assert res.returncode == -9 and not res.ok
    assert res.peak_rss_bytes > 200 * bench.MIB
    assert time.perf_counter() - start < 20


def test_watchdog_counts_grandchildren(tmp_path):
    # the parent is small; its child allocates 300 MiB: only the tree sum exceeds 200 MiB
    inner = ALLOC.format(mib=300, sleep=30)
    outer = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {inner!r}])"
    res = bench.run_monitored(_py(outer), max_rss_bytes=200 * bench.MIB, interval_s=0.1)
    assert res.status.startswith("killed: RSS")


def test_run_monitored_ok_failed_and_timeout(tmp_path):
    ok = bench.run_monitored(_py(ALLOC.format(mib=100, sleep=1)), interval_s=0.1,
                             max_rss_bytes=2 * bench.GIB)
    assert ok.status == "ok" and ok.returncode == 0
    assert 100 * bench.MIB < ok.peak_rss_bytes < 1 * bench.GIB
    assert 1.0 <= ok.wall_s < 15 and ok.cpu_s > 0
    bad = bench.run_monitored(_py("import sys; sys.exit(3)"), interval_s=0.1)
    assert bad.status == "failed (exit 3)" and bad.returncode == 3
    slow = bench.run_monitored(_py("import time; time.sleep(30)"), timeout_s=1, interval_s=0.1)
    assert slow.status == "killed: timeout > 1 s" and slow.wall_s < 10


def test_tree_rss_psutil_and_procfs_agree():
    proc = subprocess.Popen(_py(ALLOC.format(mib=150, sleep=5) + "\n"))
    try:
        deadline = time.time() + 15
        while bench.tree_rss_bytes(proc.pid) < 150 * bench.MIB and time.time() < deadline:
            time.sleep(0.1)
        via_proc = bench.tree_rss_bytes(proc.pid, use_psutil=False)
        via_psutil = bench.tree_rss_bytes(proc.pid, use_psutil=True)
    finally:
        proc.kill()
        proc.wait()
    assert via_proc >= 150 * bench.MIB
    assert abs(via_proc - via_psutil) < 20 * bench.MIB


# --------------------------------------------------------------------- scales, sheets


def test_parse_scales():
    assert bench.parse_scales("20k, 1m,20k") == ["20k", "1M"]
    with pytest.raises(Exception, match="unknown scale '3k'"):
        bench.parse_scales("3k")
    assert bench.scale_size("200k") == 200_000 and bench.scale_size("1M") == 1e6
    assert bench.scale_size("dry-run") == float("inf")
    # the advertised sizes: cells per library x libraries the simulator plans
    from cartcohort.datasets import SimParams
    from cartcohort.datasets.plan import plan_libraries, plan_patients

    for name, (n_libs, n_cells) in {"2k": (4, 2_000), "20k": (40, 20_000),
                                    "200k": (40, 200_000), "1M": (100, 1_000_000)}.items():
        spec = bench.SCALES[name]
        params = SimParams(seed=0, **spec.sim_kwargs())
        libs = plan_libraries(params, plan_patients(params))
        assert (len(libs), sum(lib.n_cells for lib in libs)) == (n_libs, n_cells), name


def test_cohort_stamp(tmp_path):
    spec = bench.SCALES["2k"]
    assert bench.cohort_is_current(tmp_path, spec, seed=0) is None
    (tmp_path / "samples.tsv").write_text("sample\n")
    stamp = {"params": {"seed": 0, **spec.sim_kwargs(), "simulator": bench.simulator_digest()},
             "n_libraries": 4, "n_cells": 2000}
    (tmp_path / "bench_params.json").write_text(json.dumps(stamp))
    assert bench.cohort_is_current(tmp_path, spec, seed=0)["n_cells"] == 2000
    # a cohort of another simulator version is simulated again
    stale = dict(stamp, params={**stamp["params"], "simulator": "0" * 64})
    (tmp_path / "bench_params.json").write_text(json.dumps(stale))
    assert bench.cohort_is_current(tmp_path, spec, seed=0) is None
    (tmp_path / "bench_params.json").write_text(json.dumps(stamp))
    assert bench.cohort_is_current(tmp_path, spec, seed=1) is None
    assert bench.cohort_is_current(tmp_path, bench.SCALES["20k"], seed=0) is None


def test_dry_run_sheet_validates(tmp_path):
    from cartcohort.datasets import write_demo_cohort
    from cartcohort.sheets import prepare_inputs

    cohort = tmp_path / "cohort"
    write_demo_cohort(cohort, seed=0, n_patients=2, min_cells=30, max_cells=30,
                      frac_longitudinal=0.0, gex_format="h5")
    row = pd.read_csv(cohort / "samples.tsv", sep="\t").iloc[0]
    samples, clinical = bench.build_dry_run_sheet(
        cohort / row["gex"], cohort / row["vdj"], tmp_path / "sheet", n_libraries=7)
    sheet = pd.read_csv(samples, sep="\t")
    assert len(sheet) == 7 and sheet["sample"].is_unique
    assert all((samples.parent / p).is_file() for p in sheet["gex"])
    config = {"samples": str(samples), "clinical": str(clinical), "primary_timepoint": "IP",
              "exclude_samples": []}
    s, c, _ = prepare_inputs(config, base_dir=tmp_path, check_files=True)
    assert len(s) == 7 and len(c) == 4
    assert set(c["response"]) == {"CR", "PD"}


def test_cli_options():
    args = bench.build_parser().parse_args([])
    assert args.scales == ["20k", "200k", "1M"] and args.cores == 2
    assert args.baseline_max_gib == 16 and args.workdir == REPO / "benchmarks" / "work"
    args = bench.build_parser().parse_args(["--scales", "2k", "--only-baseline"])
    assert args.scales == ["2k"] and args.only_baseline and not args.no_baseline
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--only-baseline", "--no-baseline"])
    with pytest.raises(SystemExit, match="--dry-run-libraries"):
        bench.main(["--only-dry-run"])
