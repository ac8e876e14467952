"""Tests of cartcohort.sheets: sample sheet / clinical table validation.

Builders of tiny Cell Ranger-style inputs (v3 h5, mtx folders, cellranger
multi folders, contig tables, AIRR TSVs) live here and are reused by
tests/test_io.py.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cartcohort import sheets
from cartcohort.errors import InputError, Problem

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- builders

ACGT = np.array(list("ACGT"))


def make_barcodes(n: int, *, seed: int, suffix: str = "-1") -> list[str]:
    """``n`` distinct 16-mer barcodes."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out["".join(rng.choice(ACGT, 16)) + suffix] = None
    return list(out)


def tiny_features(n_genes: int = 6, *, adt: Sequence[str] = (), car: str | None = None):
    """(ids, names, types): genes incl. a duplicated symbol, ADTs, a CAR feature."""
    ids = [f"ENSG{i:011d}" for i in range(n_genes)]
    names = [f"GENE{i}" for i in range(n_genes)]
    if n_genes >= 3:
        names[2] = names[1]  # duplicated symbol, as in real references
    types = ["Gene Expression"] * n_genes
    for a in adt:
        ids.append(a)
        names.append(a)
        types.append("Antibody Capture")
    if car is not None:
        ids.append(car)
        names.append(car)
        types.append("Custom")
    return ids, names, types


def tiny_counts(n_features: int, n_cells: int, *, seed: int) -> np.ndarray:
    """Dense features x cells integer counts, every cell with >= 1 count."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(1.5, size=(n_features, n_cells)).astype(np.int64)
    X[0, X.sum(axis=0) == 0] = 1
    return X


def write_10x_h5(
    path: Path,
    X: np.ndarray,
    barcodes: Sequence[str],
    ids: Sequence[str],
    names: Sequence[str],
    types: Sequence[str],
    *,
    genome: str = "GRCh38",
) -> Path:
    """Write a Cell Ranger v3+ ``filtered_feature_bc_matrix.h5`` (X: features x cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    csc = sp.csc_matrix(np.asarray(X))
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        m.create_dataset("data", data=csc.data.astype(np.int32))
        m.create_dataset("indices", data=csc.indices.astype(np.int64))
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(X.shape, dtype=np.int32))
        g = m.create_group("features")
        g.create_dataset("id", data=np.array(ids, dtype="S"))
        g.create_dataset("name", data=np.array(names, dtype="S"))
        g.create_dataset("feature_type", data=np.array(types, dtype="S"))
        g.create_dataset("genome", data=np.array([genome] * len(ids), dtype="S"))
        g.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    return path


def _write_text(path: Path, text: str, *, gz: bool) -> None:
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


def write_mtx_folder(
    folder: Path,
    X: np.ndarray,
    barcodes: Sequence[str],
    ids: Sequence[str],
    names: Sequence[str],
    types: Sequence[str] | None,
    *,
    gz: bool = True,
    header_shape: tuple[int, int] | None = None,
) -> Path:
    """Write a ``filtered_feature_bc_matrix/`` folder (``types=None``: legacy genes.tsv)."""
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    coo = sp.coo_matrix(np.asarray(X))
    r, c = header_shape if header_shape is not None else X.shape
    lines = [
        "%%MatrixMarket matrix coordinate integer general",
        "%metadata_json: {}",
        f"{r} {c} {coo.nnz}",
    ]
    lines += [f"{i + 1} {j + 1} {v}" for i, j, v in zip(coo.row, coo.col, coo.data)]
    _write_text(folder / f"matrix.mtx{sfx}", "\n".join(lines) + "\n", gz=gz)
    _write_text(folder / f"barcodes.tsv{sfx}", "".join(f"{b}\n" for b in barcodes), gz=gz)
    if types is None:
        text = "".join(f"{i}\t{n}\n" for i, n in zip(ids, names))
        _write_text(folder / f"genes.tsv{sfx}", text, gz=gz)
    else:
        text = "".join(f"{i}\t{n}\t{t}\n" for i, n, t in zip(ids, names, types))
        _write_text(folder / f"features.tsv{sfx}", text, gz=gz)
    return folder


CSV_HEADER = [
    "barcode",
    "is_cell",
    "contig_id",
    "high_confidence",
    "length",
    "chain",
    "v_gene",
    "d_gene",
    "j_gene",
    "c_gene",
    "full_length",
    "productive",
    "cdr3",
    "cdr3_nt",
    "reads",
    "umis",
    "raw_clonotype_id",
    "raw_consensus_id",
]

_TRA = ("TRAV1-2", "TRAJ33", "TRAC", "CAVMDSNYQLIW", "TGTGCTGTGATGGATAGCAACTATCAGTTAATCTGG")
_TRB = (
    "TRBV6-4",
    "TRBJ2-1",
    "TRBC2",
    "CASSDSGQGNEQFF",
    "TGTGCCAGCAGTGACTCGGGACAGGGGAATGAGCAGTTCTTC",
)
_IGH = ("IGHV3-23", "IGHJ4", "IGHM", "CAKDRGYW", "TGTGCGAAAGATCGCGGCTACTGG")


def contig_rows(barcodes: Sequence[str], *, loci: Sequence[str] = ("TRA", "TRB")) -> list[dict]:
    """10x contig-table rows: one contig per locus per barcode, CDR3s varying by cell."""
    rows = []
    genes = {"TRA": _TRA, "TRB": _TRB, "IGH": _IGH}
    for k, bc in enumerate(barcodes):
        for j, locus in enumerate(loci, start=1):
            v, jj, c, aa, nt = genes[locus]
            aa = aa[:4] + "ACDEFGHIKLMNPQRSTVWY"[k % 20] + aa[5:]
            rows.append(
                {
                    "barcode": bc,
                    "is_cell": "true",
                    "contig_id": f"{bc}_contig_{j}",
                    "high_confidence": "true",
                    "length": 500,
                    "chain": locus,
                    "v_gene": v,
                    "d_gene": "",
                    "j_gene": jj,
                    "c_gene": c,
                    "full_length": "true",
                    "productive": "true",
                    "cdr3": aa,
                    "cdr3_nt": nt,
                    "reads": 1000 + k,
                    "umis": 3 + (k % 5),
                    "raw_clonotype_id": f"clonotype{k + 1}",
                    "raw_consensus_id": f"clonotype{k + 1}_consensus_{j}",
                }
            )
    return rows


def write_contigs_csv(
    path: Path, rows: list[dict], *, gz: bool = False, columns: Sequence[str] = CSV_HEADER
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = pd.DataFrame(rows, columns=list(columns)).to_csv(index=False)
    _write_text(path, text, gz=gz)
    return path


def write_airr_tsv(
    path: Path, rows: list[dict], *, gz: bool = False, drop: Sequence[str] = ()
) -> Path:
    """AIRR rearrangement TSV from 10x-style contig rows."""
    recs = [
        {
            "cell_id": r["barcode"],
            "sequence_id": r["contig_id"],
            "sequence": "",
            "rev_comp": "F",
            "productive": "T",
            "locus": r["chain"],
            "v_call": r["v_gene"],
            "d_call": "",
            "j_call": r["j_gene"],
            "c_call": r["c_gene"],
            "sequence_alignment": "",
            "germline_alignment": "",
            "junction": r["cdr3_nt"],
            "junction_aa": r["cdr3"],
            "v_cigar": "",
            "d_cigar": "",
            "j_cigar": "",
            "umi_count": r["umis"],
            "consensus_count": r["reads"],
        }
        for r in rows
    ]
    df = pd.DataFrame(recs).drop(columns=list(drop))
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, df.to_csv(sep="\t", index=False), gz=gz)
    return path


def write_h5ad(
    path: Path,
    X: np.ndarray,
    barcodes: Sequence[str],
    names: Sequence[str],
    ids: Sequence[str] | None = None,
) -> Path:
    import anndata as ad

    var = pd.DataFrame(index=pd.Index(list(names)))
    if ids is not None:
        var["gene_ids"] = list(ids)
    adata = ad.AnnData(
        X=sp.csr_matrix(np.asarray(X).T, dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index(list(barcodes))),
        var=var,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return path


SHEET_COLUMNS = [
    "sample",
    "patient",
    "timepoint",
    "timepoint_day",
    "compartment",
    "batch",
    "sort",
    "gex",
    "vdj",
]


def write_sheet(
    path: Path,
    rows: Sequence[Sequence[str]],
    columns: Sequence[str] = SHEET_COLUMNS,
    sep: str = "\t",
) -> Path:
    lines = [sep.join(columns)] + [sep.join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_cohort(root: Path) -> dict:
    """A valid tiny cohort under ``root`` (sheets in ``root/config``).

    S1: v3 h5 with ADT + CAR, 10x contig CSV. S2: gzipped mtx folder (genes + CAR),
    AIRR TSV. S3: cellranger multi run (single sample, vdj_t found automatically).
    S4: h5ad with raw counts (genes + CAR), no TCR. Every library holds the CAR
    feature of ``car_features``.
    """
    data = root / "data"
    ids, names, types = tiny_features(6, adt=["CD4_TotalSeqC"], car="CAR")
    bc = {s: make_barcodes(8, seed=i) for i, s in enumerate(["S1", "S2", "S3", "S4"])}
    X = {s: tiny_counts(len(ids), 8, seed=10 + i) for i, s in enumerate(bc)}
    write_10x_h5(
        data / "S1" / "filtered_feature_bc_matrix.h5", X["S1"], bc["S1"], ids, names, types
    )
    write_contigs_csv(data / "S1" / "filtered_contig_annotations.csv", contig_rows(bc["S1"][:5]))
    keep = [*range(6), len(ids) - 1]  # the genes and the CAR, no ADT
    write_mtx_folder(
        data / "S2" / "filtered_feature_bc_matrix",
        X["S2"][keep],
        bc["S2"],
        [ids[i] for i in keep],
        [names[i] for i in keep],
        [types[i] for i in keep],
    )
    write_airr_tsv(data / "S2" / "airr_rearrangement.tsv", contig_rows(bc["S2"][:4]))
    pso = data / "S3run" / "outs" / "per_sample_outs" / "S3"
    write_10x_h5(
        pso / "count" / "sample_filtered_feature_bc_matrix.h5", X["S3"], bc["S3"], ids, names, types
    )
    write_contigs_csv(pso / "vdj_t" / "filtered_contig_annotations.csv", contig_rows(bc["S3"][:6]))
    write_h5ad(
        data / "S4" / "S4.h5ad",
        X["S4"][keep],
        bc["S4"],
        names[:1] + [f"G{i}" for i in range(1, 6)] + ["CAR"],
        ids[:6] + ["CAR"],
    )
    cfg = root / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    rows = [
        [
            "S1",
            "P1",
            "IP",
            "0",
            "product",
            "b1",
            "CAR+",
            "../data/S1/filtered_feature_bc_matrix.h5",
            "../data/S1/filtered_contig_annotations.csv",
        ],
        [
            "S2",
            "P1",
            "D7",
            "7",
            "blood",
            "b1",
            "CD3+",
            "../data/S2/filtered_feature_bc_matrix",
            "../data/S2/airr_rearrangement.tsv",
        ],
        ["S3", "P2", "IP", "", "product", "b2", "CAR+", "../data/S3run", ""],
        ["S4", "P2", "D7", "7.5", "blood", "b2", "none", str(data / "S4" / "S4.h5ad"), ""],
    ]
    write_sheet(cfg / "samples.tsv", rows)
    (cfg / "clinical.tsv").write_text(
        "patient\tresponse\tage\tprior_lines\tpfs_days\tpfs_event\n"
        "P1\tCR\t61\t2\t400\t0\nP2\tPD\t55\t3\t90\t1\n"
    )
    config = {
        "samples": "config/samples.tsv",
        "clinical": "config/clinical.tsv",
        "primary_timepoint": "IP",
        "exclude_samples": [],
        "car_features": ["CAR"],
    }
    return {"root": root, "data": data, "cfg": cfg, "config": config, "barcodes": bc, "rows": rows}


def problems_of(config: dict, root: Path, **kw) -> list[Problem]:
    with pytest.raises(InputError) as exc:
        sheets.prepare_inputs(config, base_dir=root, **kw)
    assert str(exc.value).count("\n  - ") == len(exc.value.problems)
    return exc.value.problems


# --------------------------------------------------------------------------- happy path


def test_valid_cohort_resolves_paths_and_types(tmp_path):
    c = make_cohort(tmp_path)
    samples, clinical, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path)
    assert list(samples.index) == ["S1", "S2", "S3", "S4"]
    assert samples.index.name == "sample"
    data = c["data"].resolve()
    assert samples.loc["S1", "gex"] == str(data / "S1" / "filtered_feature_bc_matrix.h5")
    assert samples.loc["S2", "gex"] == str(data / "S2" / "filtered_feature_bc_matrix")
    # cellranger multi: gex resolved to the per-sample h5, vdj filled from vdj_t/
    pso = data / "S3run" / "outs" / "per_sample_outs" / "S3"
    assert samples.loc["S3", "gex"] == str(pso / "count" / "sample_filtered_feature_bc_matrix.h5")
    assert samples.loc["S3", "vdj"] == str(pso / "vdj_t" / "filtered_contig_annotations.csv")
    assert samples.loc["S4", "vdj"] == ""
    assert samples["timepoint_day"].dtype == float
    assert samples.loc["S1", "timepoint_day"] == 0.0
    assert np.isnan(samples.loc["S3", "timepoint_day"])
    assert samples.loc["S4", "timepoint_day"] == 7.5
    assert all(Path(p).is_absolute() for p in samples["gex"])
    assert list(clinical.index) == ["P1", "P2"]
    assert clinical.loc["P2", "response"] == "PD"
    assert clinical.loc["P1", "prior_lines"] == 2.0


def test_relative_paths_resolve_against_sheet_folder_not_cwd(tmp_path, monkeypatch):
    c = make_cohort(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = dict(
        c["config"], samples=str(c["cfg"] / "samples.tsv"), clinical=str(c["cfg"] / "clinical.tsv")
    )
    samples, _, _ = sheets.prepare_inputs(cfg)
    assert samples.loc["S1", "gex"].startswith(str(c["data"].resolve()))


def test_check_files_false_only_checks_tables(tmp_path):
    c = make_cohort(tmp_path)
    shutil.rmtree(c["data"] / "S1")
    samples, _, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path, check_files=False)
    assert samples.loc["S1", "gex"].endswith("S1/filtered_feature_bc_matrix.h5")
    probs = problems_of(c["config"], tmp_path)
    assert {p.where for p in probs} == {"line 2, column 'gex'", "line 2, column 'vdj'"}


def test_clinical_patient_without_sample_is_a_warning(tmp_path, caplog):
    c = make_cohort(tmp_path)
    with open(c["cfg"] / "clinical.tsv", "a") as fh:
        fh.write("P9\tSD\t70\t1\t100\t1\n")
    with caplog.at_level(logging.WARNING, logger="cartcohort.sheets"):
        _, clinical, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path)
    assert "P9" in clinical.index
    assert any("P9" in r.getMessage() and "no sample" in r.getMessage() for r in caplog.records)


def test_excluded_sample_with_corrupt_file_is_only_a_warning(tmp_path, caplog):
    c = make_cohort(tmp_path)
    h5 = c["data"] / "S1" / "filtered_feature_bc_matrix.h5"
    h5.write_bytes(h5.read_bytes()[:300])
    assert any("cannot be opened" in p.what for p in problems_of(c["config"], tmp_path))
    cfg = dict(c["config"], exclude_samples=["S1"])
    with caplog.at_level(logging.WARNING, logger="cartcohort.sheets"):
        samples, _, _ = sheets.prepare_inputs(cfg, base_dir=tmp_path)
    assert "S1" in samples.index
    assert any("excluded sample S1" in r.getMessage() for r in caplog.records)


def test_barcode_suffix_mismatch_is_tolerated(tmp_path):
    c = make_cohort(tmp_path)
    rows = contig_rows([b[:-2] for b in c["barcodes"]["S1"][:5]])  # no "-1" in contigs
    write_contigs_csv(c["data"] / "S1" / "filtered_contig_annotations.csv", rows)
    sheets.prepare_inputs(c["config"], base_dir=tmp_path)


def test_returned_tables_pass_snakemake_validate(tmp_path):
    """rules/common.smk re-validates the returned frames with snakemake's validate()."""
    # snakemake is the engine, not part of the load step's env (make envs-check)
    validate = pytest.importorskip("snakemake.utils", reason="snakemake not in this env").validate

    c = make_cohort(tmp_path)
    samples, clinical, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path)
    validate(samples.reset_index(), schema=str(REPO / "config/schemas/samples.schema.yaml"))
    validate(clinical.reset_index(), schema=str(REPO / "config/schemas/clinical.schema.yaml"))


def test_cache_skips_unchanged_libraries_and_notices_changes(tmp_path, monkeypatch):
    c = make_cohort(tmp_path)
    cache = ".snakemake/cartcohort_input_checks.json"
    first, _, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)
    assert (tmp_path / cache).is_file()

    def boom(*a, **k):
        raise AssertionError("a cached, unchanged library was inspected again")

    with monkeypatch.context() as m:
        m.setattr(sheets.samples, "inspect_gex", boom)
        m.setattr(sheets.samples, "inspect_vdj", boom)
        again, _, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)
    pd.testing.assert_frame_equal(first, again)
    # a library changed since: checked again, and its problem is reported
    h5 = _s1_h5(c)
    h5.write_bytes(h5.read_bytes()[:400])
    probs = problems_of(c["config"], tmp_path, cache_path=cache)
    assert [(Path(p.file).name, p.where) for p in probs] == [("filtered_feature_bc_matrix.h5", "")]
    # a new sample appearing in a cellranger multi run is noticed too
    make_cohort(tmp_path)
    sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)
    _multi_two_samples(c)
    probs = problems_of(c["config"], tmp_path, cache_path=cache)
    assert [p.where for p in probs] == ["line 4, column 'gex'"]


def test_cli_reports_problems(tmp_path, capsys):
    c = make_cohort(tmp_path)
    import yaml

    cfgfile = tmp_path / "config.yaml"
    cfgfile.write_text(yaml.safe_dump(dict(c["config"], primary_timepoint="D99")))
    assert sheets.main([str(cfgfile), "--base-dir", str(tmp_path)]) == 1
    assert "key 'primary_timepoint'" in capsys.readouterr().err
    cfgfile.write_text(yaml.safe_dump(c["config"]))
    assert sheets.main([str(cfgfile), "--base-dir", str(tmp_path)]) == 0


def test_ids_spelled_na_are_refused(tmp_path):
    """The workflow's tables write a missing value as NA (cartcohort.tables), so a
    sample or patient id spelled NA would be read back as missing: refused here."""
    c = make_cohort(tmp_path)
    sheet, clinical = c["cfg"] / "samples.tsv", c["cfg"] / "clinical.tsv"
    sheet.write_text(sheet.read_text().replace("S1\t", "NA\t", 1))
    clinical.write_text(clinical.read_text().replace("P1\t", "NA\t", 1))
    sheet.write_text(sheet.read_text().replace("\tP1\t", "\tNA\t"))
    probs = problems_of(c["config"], tmp_path)
    na = [(Path(p.file).name, p.where) for p in probs if "'NA'" in p.what]
    assert na == [
        ("samples.tsv", "line 2, column 'sample'"),
        ("samples.tsv", "line 2, column 'patient'"),
        ("samples.tsv", "line 3, column 'patient'"),
        ("clinical.tsv", "line 2, column 'patient'"),
    ], probs
    assert all("read back as missing" in p.what for p in probs if "'NA'" in p.what)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "value, expected",
    [
        ("P01_IP.r1-a", ""),
        ("P 01", "contains space"),
        ("P01/IP", "contains slash '/'"),
        ("P01;rm", "contains semicolon ';'"),
        ("P$HOME", "contains dollar '$'"),
        ("-P01", "starts with '-'"),
        ("Pé", "contains non-ASCII character 'é'"),
    ],
)
def test_describe_unsafe_id(value, expected):
    assert sheets.describe_unsafe_id(value) == expected


def test_match_barcodes_suffix_rules():
    gex = ["AAAC-1", "CCCG-1", "TTTA-2", "GGGA-1", "GGGA-2"]
    m = sheets.match_barcodes(["AAAC-1", "CCCG", "TTTA-1", "GGGA", "NNNN-1"], gex)
    # exact; suffix-less query; different suffixes stay apart; ambiguous core unmatched
    assert m == {"AAAC-1": "AAAC-1", "CCCG": "CCCG-1"}
    assert sheets.match_barcodes(["AAAC-1", "CCCG-1"], ["AAAC", "TTTT"]) == {"AAAC-1": "AAAC"}


def test_open_text_reads_plain_file_named_gz(tmp_path):
    p = tmp_path / "barcodes.tsv.gz"
    p.write_text("A-1\nB-1\n")
    assert sheets.read_lines(p) == ["A-1", "B-1"]
    with gzip.open(p, "wt") as fh:
        fh.write("C-1\n")
    assert sheets.read_lines(p) == ["C-1"]


# --------------------------------------------------------------------------- malformed inputs
# Each case mutates a valid cohort and names the exact problem expected:
# (file relative to the cohort root, where, a phrase of `what`).


def _rewrite_sheet(c, fn):
    path = c["cfg"] / "samples.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _set_cell(c, line: int, column: str, value: str, table: str = "samples.tsv"):
    path = c["cfg"] / table
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    fields = lines[line - 1].split("\t")
    fields += [""] * (len(header) - len(fields))
    fields[header.index(column)] = value
    lines[line - 1] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")


def _append_clinical(c, text):
    with open(c["cfg"] / "clinical.tsv", "a") as fh:
        fh.write(text)


def _s1_h5(c):
    return c["data"] / "S1" / "filtered_feature_bc_matrix.h5"


def _s2_mtx(c):
    return c["data"] / "S2" / "filtered_feature_bc_matrix"


def _truncate(path: Path, n: int):
    path.write_bytes(path.read_bytes()[:n])


def _h5_edit(c, fn):
    with h5py.File(_s1_h5(c), "a") as f:
        fn(f)


def _zero_cell_h5(c):
    ids, names, types = tiny_features(3)
    write_10x_h5(_s1_h5(c), np.zeros((3, 0), dtype=int), [], ids, names, types)


def _mtx_header(c, shape):
    bc = c["barcodes"]["S2"]
    ids, names, types = tiny_features(6)
    X = tiny_counts(6, 8, seed=11)
    write_mtx_folder(_s2_mtx(c), X, bc, ids, names, types, header_shape=shape)


def _bad_csv(c, rows=None, columns=CSV_HEADER):
    rows = contig_rows(c["barcodes"]["S1"][:5]) if rows is None else rows
    write_contigs_csv(c["data"] / "S1" / "filtered_contig_annotations.csv", rows, columns=columns)


def _bad_airr(c, rows=None, drop=()):
    rows = contig_rows(c["barcodes"]["S2"][:4]) if rows is None else rows
    write_airr_tsv(c["data"] / "S2" / "airr_rearrangement.tsv", rows, drop=drop)


def _json_vdj(c):
    p = c["data"] / "S1" / "all_contig_annotations.json"
    p.write_text('[{"barcode": "AAAC-1", "chain": "TRA"}, {"barcode": "AAAC-1", ')
    _set_cell(c, 2, "vdj", "../data/S1/all_contig_annotations.json")


def _h5ad_lognorm(c):
    import anndata as ad

    p = c["data"] / "S4" / "S4.h5ad"
    a = ad.read_h5ad(p)
    a.X = sp.csr_matrix(np.log1p(a.X.toarray() / 3.0), dtype=np.float32)
    a.write_h5ad(p)


def _multi_two_samples(c):
    pso = c["data"] / "S3run" / "outs" / "per_sample_outs"
    shutil.copytree(pso / "S3", pso / "S3b")


S1H5 = "data/S1/filtered_feature_bc_matrix.h5"
S1CSV = "data/S1/filtered_contig_annotations.csv"
S2MTX = "data/S2/filtered_feature_bc_matrix"
S2AIRR = "data/S2/airr_rearrangement.tsv"
SHEET = "config/samples.tsv"
CLIN = "clinical.tsv"
CLIN_FILE = "config/clinical.tsv"

MALFORMED: list[tuple[str, Callable, dict, str, str, str]] = [
    # id, mutation, config overrides, file, where, what-phrase
    (
        "sheet-missing-column",
        lambda c: _rewrite_sheet(
            c, lambda ls: ["\t".join(x.split("\t")[:7] + x.split("\t")[8:]) for x in ls]
        ),
        {},
        SHEET,
        "line 1 (header)",
        "required column 'gex' is missing",
    ),
    (
        "sheet-misspelled-column",
        lambda c: _rewrite_sheet(c, lambda ls: [ls[0].replace("sample", "Sample", 1)] + ls[1:]),
        {},
        SHEET,
        "line 1 (header)",
        "required column 'sample' is missing",
    ),
    (
        "sheet-comma-separated",
        lambda c: write_sheet(c["cfg"] / "samples.tsv", c["rows"], sep=","),
        {},
        SHEET,
        "line 1 (header)",
        "looks comma-separated",
    ),
    (
        "sheet-duplicate-column",
        lambda c: _rewrite_sheet(c, lambda ls: [ls[0] + "\tbatch"] + [x + "\tb9" for x in ls[1:]]),
        {},
        SHEET,
        "line 1 (header)",
        "column 'batch' appears twice",
    ),
    (
        "sheet-too-many-fields",
        lambda c: _rewrite_sheet(c, lambda ls: ls[:2] + [ls[2] + "\textra"] + ls[3:]),
        {},
        SHEET,
        "line 3",
        "has 10 tab-separated fields but the header has 9",
    ),
    (
        "sheet-no-rows",
        lambda c: _rewrite_sheet(c, lambda ls: ls[:1]),
        {},
        SHEET,
        "",
        "has a header but no data rows",
    ),
    (
        "sheet-file-missing",
        lambda c: (c["cfg"] / "samples.tsv").unlink(),
        {},
        SHEET,
        "",
        "the sample sheet does not exist",
    ),
    (
        "sample-duplicate",
        lambda c: _set_cell(c, 3, "sample", "S1"),
        {},
        SHEET,
        "line 3, column 'sample'",
        "sample id 'S1' is also used on line 2",
    ),
    (
        "sample-space",
        lambda c: _set_cell(c, 2, "sample", "S 1"),
        {},
        SHEET,
        "line 2, column 'sample'",
        "sample id 'S 1' contains space",
    ),
    (
        "sample-slash",
        lambda c: _set_cell(c, 2, "sample", "P1/S1"),
        {},
        SHEET,
        "line 2, column 'sample'",
        "contains slash '/'",
    ),
    (
        "sample-shell-metachar",
        lambda c: _set_cell(c, 2, "sample", "S1;rm"),
        {},
        SHEET,
        "line 2, column 'sample'",
        "contains semicolon ';'",
    ),
    (
        "sample-leading-dash",
        lambda c: _set_cell(c, 4, "sample", "-S3"),
        {},
        SHEET,
        "line 4, column 'sample'",
        "starts with '-'",
    ),
    (
        "timepoint-day-not-number",
        lambda c: _set_cell(c, 3, "timepoint_day", "day7"),
        {},
        SHEET,
        "line 3, column 'timepoint_day'",
        "'day7' is not a number",
    ),
    (
        "patient-empty",
        lambda c: _set_cell(c, 5, "patient", ""),
        {},
        SHEET,
        "line 5, column 'patient'",
        "value is empty but the column is required",
    ),
    (
        "gex-missing-file",
        lambda c: _set_cell(c, 2, "gex", "../data/S1/nope.h5"),
        {},
        SHEET,
        "line 2, column 'gex'",
        "'../data/S1/nope.h5' does not exist",
    ),
    (
        "vdj-missing-file",
        lambda c: _set_cell(c, 3, "vdj", "../data/S2/nope.tsv"),
        {},
        SHEET,
        "line 3, column 'vdj'",
        "'../data/S2/nope.tsv' does not exist",
    ),
    (
        "gex-path-reused",
        lambda c: _set_cell(c, 3, "gex", "../data/S1/filtered_feature_bc_matrix.h5"),
        {},
        SHEET,
        "line 3, column 'gex'",
        "is also used by sample 'S1' on line 2",
    ),
    (
        "gex-points-at-matrix-file",
        lambda c: _set_cell(c, 3, "gex", "../data/S2/filtered_feature_bc_matrix/matrix.mtx.gz"),
        {},
        SHEET,
        "line 3, column 'gex'",
        "is the matrix file of a MatrixMarket folder",
    ),
    (
        "multi-several-samples",
        _multi_two_samples,
        {},
        SHEET,
        "line 4, column 'gex'",
        "holds 2 samples (S3, S3b)",
    ),
    (
        "patient-not-in-clinical",
        lambda c: _set_cell(c, 5, "patient", "P7"),
        {},
        SHEET,
        "line 5, column 'patient'",
        "patient 'P7' is not in the clinical table",
    ),
    (
        "clinical-bad-response",
        lambda c: _set_cell(c, 2, "response", "responder", CLIN),
        {},
        CLIN_FILE,
        "line 2, column 'response'",
        "response 'responder' of patient 'P1' is none of the codes of the config",
    ),
    (
        "clinical-lowercase-response",
        lambda c: _set_cell(c, 3, "response", "pd", CLIN),
        {},
        CLIN_FILE,
        "line 3, column 'response'",
        "response 'pd' of patient 'P2' is none of the codes of the config",
    ),
    (
        "clinical-duplicate-patient",
        lambda c: _append_clinical(c, "P1\tPR\t61\t2\t400\t0\n"),
        {},
        CLIN_FILE,
        "line 4, column 'patient'",
        "patient 'P1' is also listed on line 2",
    ),
    (
        "clinical-age-text",
        lambda c: _set_cell(c, 2, "age", "sixty", CLIN),
        {},
        CLIN_FILE,
        "line 2, column 'age'",
        "'sixty' is not a number",
    ),
    (
        "clinical-prior-lines-fraction",
        lambda c: _set_cell(c, 3, "prior_lines", "1.5", CLIN),
        {},
        CLIN_FILE,
        "line 3, column 'prior_lines'",
        "'1.5' is not a whole number",
    ),
    (
        "clinical-pfs-event-2",
        lambda c: _set_cell(c, 2, "pfs_event", "2", CLIN),
        {},
        CLIN_FILE,
        "line 2, column 'pfs_event'",
        "'2' is not one of 0/1",
    ),
    (
        "clinical-negative-pfs",
        lambda c: _set_cell(c, 2, "pfs_days", "-5", CLIN),
        {},
        CLIN_FILE,
        "line 2, column 'pfs_days'",
        "'-5' is out of range",
    ),
    (
        "clinical-missing-response-column",
        lambda c: (c["cfg"] / "clinical.tsv").write_text("patient\tage\nP1\t61\nP2\t55\n"),
        {},
        CLIN_FILE,
        "line 1 (header)",
        "required column 'response' is missing",
    ),
    (
        "primary-timepoint-absent",
        lambda c: None,
        {"primary_timepoint": "Day0"},
        "config",
        "key 'primary_timepoint'",
        "'Day0' is not the timepoint of any",
    ),
    (
        "exclude-unknown-sample",
        lambda c: None,
        {"exclude_samples": ["S9"]},
        "config",
        "key 'exclude_samples'",
        "names sample(s) not in samples.tsv: 'S9'",
    ),
    ("h5-truncated", lambda c: _truncate(_s1_h5(c), 500), {}, S1H5, "", "cannot be opened as HDF5"),
    (
        "h5-not-hdf5",
        lambda c: _s1_h5(c).write_text("barcode,count\n"),
        {},
        S1H5,
        "",
        "cannot be opened as HDF5",
    ),
    (
        "h5-no-matrix-group",
        lambda c: _h5_edit(c, lambda f: f.move("matrix", "mat")),
        {},
        S1H5,
        "",
        "has no 'matrix' group",
    ),
    (
        "h5-cellranger-v2",
        lambda c: _h5_edit(
            c,
            lambda f: (
                f.move("matrix", "GRCh38"),
                f["GRCh38"].create_dataset("genes", data=[b"x"]),
            ),
        ),
        {},
        S1H5,
        "",
        "is a Cell Ranger v2 matrix (genome group 'GRCh38')",
    ),
    (
        "h5-zero-cells",
        _zero_cell_h5,
        {},
        S1H5,
        "dataset 'matrix/shape'",
        "the library has zero cells",
    ),
    (
        "h5-barcodes-shape",
        lambda c: _h5_edit(
            c,
            lambda f: (
                f["matrix"].pop("barcodes"),
                f["matrix"].create_dataset("barcodes", data=np.array([b"A-1"] * 3)),
            ),
        ),
        {},
        S1H5,
        "dataset 'matrix/barcodes'",
        "has 3 barcodes but matrix/shape says 8 cells",
    ),
    (
        "mtx-header-features",
        lambda c: _mtx_header(c, (7, 8)),
        {},
        S2MTX,
        "matrix.mtx.gz: size line",
        "says 7 features (rows) but features.tsv.gz has 6",
    ),
    (
        "mtx-header-barcodes",
        lambda c: _mtx_header(c, (6, 9)),
        {},
        S2MTX,
        "matrix.mtx.gz: size line",
        "says 9 barcodes (columns) but barcodes.tsv.gz has 8",
    ),
    (
        "mtx-transposed",
        lambda c: _mtx_header(c, (8, 6)),
        {},
        S2MTX,
        "matrix.mtx.gz: size line",
        "the matrix is transposed",
    ),
    (
        "mtx-missing-barcodes",
        lambda c: (_s2_mtx(c) / "barcodes.tsv.gz").unlink(),
        {},
        S2MTX,
        "",
        "lacks barcodes.tsv[.gz]",
    ),
    (
        "mtx-empty-barcodes",
        lambda c: _write_text(_s2_mtx(c) / "barcodes.tsv.gz", "", gz=True),
        {},
        S2MTX,
        "barcodes.tsv.gz",
        "the library has zero cells",
    ),
    (
        "mtx-not-matrixmarket",
        lambda c: _write_text(_s2_mtx(c) / "matrix.mtx.gz", "hello\n", gz=True),
        {},
        S2MTX,
        "matrix.mtx.gz: header",
        "does not start with '%%MatrixMarket'",
    ),
    (
        "mtx-truncated-gzip",
        lambda c: _truncate(_s2_mtx(c) / "barcodes.tsv.gz", 30),
        {},
        S2MTX,
        "barcodes.tsv.gz",
        "is unreadable",
    ),
    (
        "csv-missing-chain-column",
        lambda c: _bad_csv(c, columns=[x for x in CSV_HEADER if x != "chain"]),
        {},
        S1CSV,
        "line 1 (header)",
        "lacks column(s) 'chain'",
    ),
    (
        "csv-no-shared-barcodes",
        lambda c: _bad_csv(c, rows=contig_rows(make_barcodes(5, seed=99))),
        {},
        SHEET,
        "line 2, column 'vdj'",
        "shares no cell barcode with the GEX file",
    ),
    (
        "csv-only-bcr",
        lambda c: _bad_csv(c, rows=contig_rows(c["barcodes"]["S1"][:5], loci=("IGH",))),
        {},
        S1CSV,
        "column 'chain'",
        "contains only BCR contigs",
    ),
    ("csv-header-only", lambda c: _bad_csv(c, rows=[]), {}, S1CSV, "", "contains no contigs"),
    (
        "airr-missing-cell-id",
        lambda c: _bad_airr(c, drop=["cell_id"]),
        {},
        S2AIRR,
        "line 1 (header)",
        "lacks column(s) 'cell_id'",
    ),
    (
        "airr-empty-cell-id",
        lambda c: _bad_airr(
            c,
            rows=[
                dict(r, barcode="") if i == 1 else r
                for i, r in enumerate(contig_rows(c["barcodes"]["S2"][:4]))
            ],
        ),
        {},
        S2AIRR,
        "line 3, column 'cell_id'",
        "1 contig(s) have an empty cell_id",
    ),
    (
        "json-truncated",
        _json_vdj,
        {},
        "data/S1/all_contig_annotations.json",
        "",
        "is not a JSON list of contigs",
    ),
    (
        "vdj-unknown-format",
        lambda c: (
            (c["data"] / "S1" / "contigs.xlsx").write_bytes(b"PK"),
            _set_cell(c, 2, "vdj", "../data/S1/contigs.xlsx"),
        ),
        {},
        SHEET,
        "line 2, column 'vdj'",
        "cannot tell the format",
    ),
    (
        "h5ad-log-normalised",
        _h5ad_lognorm,
        {},
        "data/S4/S4.h5ad",
        "X",
        "holds non-integer or negative values",
    ),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_the_exact_problem(tmp_path, case):
    _, mutate, overrides, file, where, phrase = case
    c = make_cohort(tmp_path)
    mutate(c)
    config = dict(c["config"], **overrides)
    probs = problems_of(config, tmp_path)
    expected_file = "config" if file == "config" else str((tmp_path / file).resolve())
    hits = [p for p in probs if p.file == expected_file and p.where == where and phrase in p.what]
    assert hits, "expected ({!r}, {!r}, {!r}) among:\n{}".format(
        expected_file, where, phrase, "\n".join(map(str, probs))
    )
    assert hits[0].fix  # every problem says what to do


def test_at_least_25_malformed_cases():
    assert len(MALFORMED) >= 25


def test_all_problems_are_reported_at_once(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 2, "sample", "S 1")  # unsafe id
    _set_cell(c, 3, "timepoint_day", "seven")  # type
    _set_cell(c, 5, "patient", "P7")  # not in clinical
    _set_cell(c, 3, "response", "yes", CLIN)  # unknown response code
    _truncate(_s1_h5(c), 400)  # corrupt h5
    _mtx_header(c, (6, 9))  # mtx header vs barcodes
    config = dict(c["config"], primary_timepoint="D0", exclude_samples=["S9"])
    probs = problems_of(config, tmp_path)
    got = {(Path(p.file).name, p.where) for p in probs}
    assert got == {
        ("samples.tsv", "line 2, column 'sample'"),
        ("samples.tsv", "line 3, column 'timepoint_day'"),
        ("samples.tsv", "line 5, column 'patient'"),
        ("clinical.tsv", "line 3, column 'response'"),
        ("filtered_feature_bc_matrix.h5", ""),
        ("filtered_feature_bc_matrix", "matrix.mtx.gz: size line"),
        ("config", "key 'primary_timepoint'"),
        ("config", "key 'exclude_samples'"),
    }
    # the file-content problem names the sheet row it came from
    h5p = next(p for p in probs if p.file.endswith(".h5"))
    assert "sample 'S 1', samples.tsv line 2, column 'gex'" in h5p.what


def test_sheet_from_spreadsheet_export_is_accepted(tmp_path):
    """BOM, CRLF line ends, quoted values, trailing tabs and a missing last field."""
    c = make_cohort(tmp_path)
    path = c["cfg"] / "samples.tsv"
    lines = path.read_text().splitlines()
    lines[1] = "\t".join(f'"{v}"' for v in lines[1].split("\t")) + "\t\t"
    lines[3] = lines[3].rstrip("\t")  # S3: empty vdj dropped at the end of the line
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    samples, _, _ = sheets.prepare_inputs(c["config"], base_dir=tmp_path)
    assert list(samples.index) == ["S1", "S2", "S3", "S4"]
    assert samples.loc["S1", "patient"] == "P1"
    assert samples.loc["S3", "vdj"].endswith("vdj_t/filtered_contig_annotations.csv")


def test_comment_lines_keep_file_line_numbers(tmp_path):
    c = make_cohort(tmp_path)
    _set_cell(c, 3, "timepoint_day", "x")  # S2's row
    _rewrite_sheet(c, lambda ls: ["# cohort sheet", ""] + ls)  # ...now on line 5
    probs = problems_of(c["config"], tmp_path)
    assert [p.where for p in probs] == ["line 5, column 'timepoint_day'"]


# --------------------------------------------------------------------------- speed


def test_prepare_inputs_1000_libraries_and_its_cache(tmp_path):
    """Parse-time validation of a 1,000-library sheet pointing at tiny files; the warm
    cache gives the same sheet without reading the files again. (How long it takes is a
    benchmark target, ``make bench``'s 1,000-library dry run, not a test: a timed test
    fails on a busy machine.)"""
    data = tmp_path / "data"
    ids, names, types = tiny_features(20, adt=["CD4_TotalSeqC"], car="CAR")
    rows = []
    n = 1000
    for i in range(n):
        s = f"L{i:04d}"
        bc = make_barcodes(30, seed=i)
        X = tiny_counts(len(ids), 30, seed=i)
        if i % 2 == 0:
            gex = write_10x_h5(data / s / "filtered_feature_bc_matrix.h5", X, bc, ids, names, types)
            vdj = write_contigs_csv(
                data / s / "filtered_contig_annotations.csv", contig_rows(bc[:20])
            )
        else:  # genes and the CAR, no ADT
            keep = [*range(20), len(ids) - 1]
            gex = write_mtx_folder(
                data / s / "filtered_feature_bc_matrix",
                X[keep],
                bc,
                [ids[i] for i in keep],
                [names[i] for i in keep],
                [types[i] for i in keep],
            )
            vdj = write_airr_tsv(data / s / "airr_rearrangement.tsv", contig_rows(bc[:20]))
        rows.append(
            [
                s,
                f"P{i // 4}",
                "IP" if i % 4 == 0 else "D7",
                str(i % 30),
                "blood",
                f"b{i % 7}",
                "none",
                str(gex.relative_to(tmp_path)),
                str(vdj.relative_to(tmp_path)),
            ]
        )
    write_sheet(tmp_path / "samples.tsv", rows)
    (tmp_path / "clinical.tsv").write_text(
        "patient\tresponse\n" + "".join(f"P{i}\tCR\n" for i in range(n // 4))
    )
    cfg = {
        "samples": "samples.tsv",
        "clinical": "clinical.tsv",
        "primary_timepoint": "IP",
        "exclude_samples": [],
    }
    t0 = time.perf_counter()
    samples, _, _ = sheets.prepare_inputs(cfg, base_dir=tmp_path)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    sheets.prepare_inputs(cfg, base_dir=tmp_path, check_files=False)
    elapsed_tables = time.perf_counter() - t0
    sheets.prepare_inputs(cfg, base_dir=tmp_path, cache_path="cache.json")
    t0 = time.perf_counter()
    cached, _, _ = sheets.prepare_inputs(cfg, base_dir=tmp_path, cache_path="cache.json")
    elapsed_cached = time.perf_counter() - t0
    print(
        f"\nprepare_inputs on {n} libraries: {elapsed:.2f} s with file checks, "
        f"{elapsed_cached:.2f} s with a warm cache, {elapsed_tables:.2f} s tables only"
    )
    assert len(samples) == n
    pd.testing.assert_frame_equal(samples, cached)
    assert elapsed_cached < elapsed


# --------------------------------------------------------------------------- real data


def _readme_block(name: str) -> str:
    text = (REPO / "config" / "README.md").read_text()
    m = re.search(rf"<!-- example: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"config/README.md has no example block for {name}"
    return m.group(1)


@pytest.mark.realdata
def test_readme_worked_example_on_djvdj_mouse_data(tmp_path):
    """The worked example of config/README.md is a valid sheet for the shared mouse data."""
    if not (SHARED / "djvdj_splen").is_dir():
        pytest.skip("../shared/data/djvdj_splen is absent (only in the development checkout)")
    # The README places the sheet in <project>/config/ next to a ../shared/data checkout.
    cfg_dir = tmp_path / "project" / "config"
    cfg_dir.mkdir(parents=True)
    (tmp_path / "shared").symlink_to(SHARED.parent)
    sheet = _readme_block("samples.tsv")
    (cfg_dir / "samples.tsv").write_text(sheet)
    (cfg_dir / "clinical.tsv").write_text(_readme_block("clinical.tsv"))
    import yaml

    overrides = yaml.safe_load(_readme_block("config.yaml"))
    config = {
        "samples": "config/samples.tsv",
        "clinical": "config/clinical.tsv",
        "exclude_samples": [],
        **overrides,
    }
    samples, clinical, _ = sheets.prepare_inputs(config, base_dir=tmp_path / "project")
    assert list(samples.index) == ["BL6", "MD4"]
    assert samples.loc["BL6", "gex"] == str(
        tmp_path / "shared" / "data" / "djvdj_splen" / "BL6_GEX" / "filtered_feature_bc_matrix"
    )
    assert samples.loc["MD4", "vdj"].endswith("MD4_TCR/filtered_contig_annotations.csv.gz")
    assert set(clinical["response"]) == {"NE"}


@pytest.mark.realdata
def test_bcr_file_in_vdj_column_is_rejected_on_real_data(tmp_path):
    if not (SHARED / "djvdj_splen").is_dir():
        pytest.skip("../shared/data/djvdj_splen is absent (only in the development checkout)")
    d = SHARED / "djvdj_splen"
    write_sheet(
        tmp_path / "samples.tsv",
        [
            [
                "BL6",
                "m1",
                "d0",
                "",
                "spleen",
                "b1",
                "none",
                str(d / "BL6_GEX/filtered_feature_bc_matrix"),
                str(d / "BL6_BCR/filtered_contig_annotations.csv.gz"),
            ],
            [
                "MD4",
                "m2",
                "d0",
                "",
                "spleen",
                "b1",
                "none",
                str(d / "MD4_GEX/filtered_feature_bc_matrix"),
                str(d / "BL6_TCR/filtered_contig_annotations.csv.gz"),
            ],
        ],
    )
    (tmp_path / "clinical.tsv").write_text("patient\tresponse\nm1\tNE\nm2\tNE\n")
    cfg = {
        "samples": "samples.tsv",
        "clinical": "clinical.tsv",
        "primary_timepoint": "d0",
        "car_features": [],  # mouse spleen: no CAR
    }
    probs = problems_of(cfg, tmp_path)
    assert {(Path(p.file).name, p.where) for p in probs} == {
        ("filtered_contig_annotations.csv.gz", "column 'chain'"),  # BL6: BCR file
        ("samples.tsv", "line 3, column 'vdj'"),  # MD4 paired with BL6's TCR: no shared cell
    }
    assert any("only BCR" in p.what for p in probs)
