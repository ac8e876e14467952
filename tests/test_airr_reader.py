"""cartcohort.io.airr builds exactly the AnnData scirpy 0.22.5's readers build.

Every comparison is field by field: ``ak.to_list`` of ``obsm['airr']`` (values, cell
order, chain order), the awkward type and layout form (dtypes, option-ness, record
field order), ``obs_names``, ``obs`` (columns, index name) and ``uns``. The reference is
scirpy itself (imported here only, via ``cartcohort._utils.scirpy.load_scirpy``): its
``read_10x_vdj`` for 10x CSV/JSON, and for AIRR TSVs the path ``cartcohort.io`` took
before (its NA-like blanking and locus inference, then ``scirpy.io.read_airr``).
Inputs: the demo cohort, scirpy's bundled test data, the real tables in
../shared/data (``realdata``), and small hand-written edge cases.
"""

from __future__ import annotations

import copy
import gzip
import importlib.metadata
import importlib.resources
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import awkward as ak
import numpy as np
import pandas as pd
import pytest

from cartcohort import io
from cartcohort.io import airr
from cartcohort._utils.scirpy import load_scirpy
from cartcohort.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SCIRPY_DATA = Path(str(importlib.resources.files("scirpy") / "tests" / "data"))
SMALL_JSON = (
    SCIRPY_DATA / "10x" / "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small.json"
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ir():
    return load_scirpy()


# --------------------------------------------------------------------------- references


def _old_infer_locus(row: Mapping[str, str]) -> str:
    """cartcohort.io._infer_locus as it was (row by row)."""
    genes = []
    for key in ("v_call", "d_call", "j_call", "c_call"):
        g = row.get(key, "") or ""
        if key == "v_call" and "/DV" in g.upper() and g.upper().startswith("TRAV"):
            continue
        if g:
            genes.append(g[:3].upper())
    loci = set(genes)
    return loci.pop() if len(loci) == 1 else ""


def scirpy_airr(ir, path: Path) -> ad.AnnData:
    """cartcohort.io._read_airr as it was: pandas, NA-like blanking, locus inference,
    a temporary TSV, then scirpy.io.read_airr."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        df = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    na_like = {"NA", "N/A", "None", "nan", "NaN", "null"}
    for col in df.columns:
        if col.endswith(("_call", "_cigar")) or col == "locus":
            df[col] = df[col].where(~df[col].isin(na_like), "")
    if "locus" not in df.columns:
        df["locus"] = [_old_infer_locus(r) for r in df.to_dict("records")]
    else:
        empty = df["locus"] == ""
        if empty.any():
            df.loc[empty, "locus"] = [_old_infer_locus(r) for r in df.loc[empty].to_dict("records")]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "rearrangement.tsv"
        df.to_csv(target, sep="\t", index=False)
        return ir.io.read_airr(target)


def scirpy_10x(ir, path: Path, *, filtered: bool = True) -> ad.AnnData:
    """scirpy.io.read_10x_vdj (it reads gzip only when the name says .gz, JSON never)."""
    gz = path.read_bytes()[:2] == b"\x1f\x8b"
    if gz == path.name.endswith(".gz") and not (gz and ".json" in path.name):
        return ir.io.read_10x_vdj(path, filtered=filtered)
    with tempfile.TemporaryDirectory() as tmp:
        suffix = ".json" if ".json" in path.name else ".csv"
        target = Path(tmp) / f"contigs{suffix}"
        target.write_bytes(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
        return ir.io.read_10x_vdj(target, filtered=filtered)


def assert_same(new: ad.AnnData, old: ad.AnnData, label: str = "") -> None:
    assert list(new.obs_names) == list(old.obs_names), label
    assert new.obs.index.name == old.obs.index.name, label
    assert list(new.obs.columns) == list(old.obs.columns), label
    pd.testing.assert_frame_equal(new.obs, old.obs)
    assert new.uns == old.uns, label
    assert new.X is None and old.X is None, label
    assert list(new.obsm) == list(old.obsm) == ["airr"], label
    a, b = new.obsm["airr"], old.obsm["airr"]
    assert str(a.type) == str(b.type), label
    assert a.layout.form == b.layout.form, label
    assert ak.to_list(a) == ak.to_list(b), label


def chains(adata: ad.AnnData) -> dict[str, list[dict]]:
    return dict(zip(adata.obs_names, ak.to_list(adata.obsm["airr"])))


def field_type(adata: ad.AnnData, field: str) -> str:
    """The awkward type of one chain field, e.g. ``?string``."""
    return str(adata.obsm["airr"][field].type.content.content)


# --------------------------------------------------------------------------- demo cohort


def demo_vdj(sample: str) -> Path:
    sheet = REPO / "config" / "samples.tsv"
    if not sheet.exists():
        pytest.skip("config/samples.tsv is absent")
    rows = pd.read_csv(sheet, sep="\t", dtype=str).set_index("sample")
    p = (sheet.parent / rows.loc[sample, "vdj"]).resolve()
    if not p.exists():
        pytest.skip(f"{p} is absent (run `make demo` to write resources/demo/)")
    return p


@pytest.mark.parametrize("sample", ["P01_IP", "P05_M3", "P05_D14", "P19_M3"])
def test_demo_10x_csv_libraries_match_scirpy(ir, sample):
    p = demo_vdj(sample)
    new = airr.read_10x_csv(p)
    assert new.n_obs > 100
    assert_same(new, scirpy_10x(ir, p), sample)


@pytest.mark.parametrize("sample", ["P04_IP", "P20_IP"])
def test_demo_airr_tsv_libraries_match_scirpy(ir, sample):
    p = demo_vdj(sample)
    assert p.name.startswith("airr_rearrangement")
    new = airr.read_airr_tsv(p)
    assert new.n_obs > 100
    assert_same(new, scirpy_airr(ir, p), sample)


# --------------------------------------------------------------------------- scirpy's data


@pytest.mark.parametrize(
    "name",
    [
        "filtered_contig_annotations.csv",
        "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small.csv",
        "vdj_nextgem_hs_pbmc3_t_filtered_contig_annotations.csv.gz",
        "sc5p_v2_hs_melanoma_10k_b_filtered_contig_annotations.csv.gz",
        "all_contig_annotations.json",
        "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small.json",
    ],
)
@pytest.mark.parametrize("filtered", [True, False])
def test_scirpy_10x_data_matches_scirpy(ir, name, filtered):
    p = SCIRPY_DATA / "10x" / name
    read = airr.read_10x_json if ".json" in name else airr.read_10x_csv
    new = read(p, filtered=filtered)
    assert new.n_obs > 0
    assert_same(new, scirpy_10x(ir, p, filtered=filtered), name)


@pytest.mark.parametrize(
    "name",
    [
        "rearrangement_tra.tsv",
        "rearrangement_trb.tsv",
        "rearrangement_ig.tsv",
        "tra_issue_280.tsv",
        "issue_625.tsv",
    ],
)
def test_scirpy_airr_data_matches_scirpy(ir, name):
    p = SCIRPY_DATA / "airr" / name
    assert_same(airr.read_airr_tsv(p), scirpy_airr(ir, p), name)


# --------------------------------------------------------------------------- real data


def need_shared(sub: str) -> Path:
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"../shared/data/{sub} is absent (only in the development checkout)")
    return p


@pytest.mark.realdata
def test_real_screp_ards_eight_tables_match_scirpy(ir):
    files = sorted(need_shared("screp_ards").glob("*/filtered_contig_annotations.csv.gz"))
    assert len(files) == 8
    for f in files:
        assert_same(airr.read_10x_csv(f), scirpy_10x(ir, f), str(f))


@pytest.mark.realdata
@pytest.mark.parametrize("lib", ["BL6_TCR", "MD4_TCR", "BL6_BCR", "MD4_BCR"])
def test_real_djvdj_airr_and_csv_match_scirpy(ir, lib):
    d = need_shared("djvdj_splen") / lib
    csv, tsv = d / "filtered_contig_annotations.csv.gz", d / "airr_rearrangement.tsv.gz"
    assert_same(airr.read_10x_csv(csv), scirpy_10x(ir, csv), str(csv))
    assert_same(airr.read_airr_tsv(tsv), scirpy_airr(ir, tsv), str(tsv))


@pytest.mark.realdata
@pytest.mark.parametrize("filtered", [True, False])
def test_real_cart_day7_all_contigs_match_scirpy(ir, filtered):
    f = need_shared("haradhvala_d7") / "F1_TCR_tcr_all_contig_annotations.csv"
    assert_same(airr.read_10x_csv(f, filtered=filtered), scirpy_10x(ir, f, filtered=filtered))


@pytest.mark.realdata
def test_timing_old_vs_new_on_largest_real_table(ir, capsys):
    """Not an assertion on time: prints scirpy's reader vs ours on the largest table."""
    files = sorted(need_shared("screp_ards").glob("*/filtered_contig_annotations.csv.gz"))
    f = max(files, key=lambda p: len(pd.read_csv(p, usecols=["barcode"])))
    t0 = time.perf_counter()
    old = ir.io.read_10x_vdj(f)
    t1 = time.perf_counter()
    new = airr.read_10x_csv(f)
    t2 = time.perf_counter()
    full = io.read_tcr(f, sample="x")
    t3 = time.perf_counter()
    assert new.n_obs == old.n_obs == full.n_obs
    with capsys.disabled():
        print(
            f"\n[timing] {f.parent.name}: {new.n_obs} cells; scirpy.io.read_10x_vdj "
            f"{t1 - t0:.3f} s, cartcohort.io.airr.read_10x_csv {t2 - t1:.3f} s "
            f"({(t1 - t0) / (t2 - t1):.0f}x), io.read_tcr (new) {t3 - t2:.3f} s"
        )


# --------------------------------------------------------------------------- edge cases

CSV_HEADER = (
    "barcode,is_cell,contig_id,high_confidence,length,chain,v_gene,d_gene,j_gene,c_gene,"
    "full_length,productive,cdr3,cdr3_nt,reads,umis,raw_clonotype_id,raw_consensus_id"
)
EDGE_CSV = "\n".join(
    [
        CSV_HEADER,
        # CCC-1: only non-productive chains; 'None' cdr3; rows of a cell not adjacent
        "CCC-1,true,CCC-1_contig_1,true,500,TRB,TRBV5-1,,TRBJ1-4,TRBC1,true,False,CASSLF,"
        "TGTGCCAGCAGCTTATTT,100,3,c1,",
        "AAA-1,true,AAA-1_contig_1,true,500,TRA,TRAV1-2,,TRAJ33,TRAC,true,None,CAVRDSNYQLIW,"
        "TGTGCTGTGAGAGATAGCAACTATCAGTTAATCTGG,50,,c2,",
        "CCC-1,true,CCC-1_contig_2,true,500,TRA,TRAV30,,TRAJ20,TRAC,true,false,None,None,10,1,c1,",
        # not a cell / not high confidence: filtered out
        "BBB-1,false,BBB-1_contig_1,true,500,TRB,TRBV2,,TRBJ2-1,TRBC2,true,True,CASSF,TGTGCC,"
        "7,2,c3,",
        "DDD-1,true,DDD-1_contig_1,false,500,TRB,TRBV2,,TRBJ2-1,TRBC2,true,True,CASSF,TGTGCC,"
        "7,2,c3,",
        # empty productive, too-short junctions, junction without conserved residues
        "AAA-1,True,AAA-1_contig_2,True,500,TRB,TRBV9,,TRBJ2-7,TRBC2,true,,AS,TG,40,4,c2,",
        "EEE-1,1,EEE-1_contig_1,true,500,TRB,TRBV6-5,,TRBJ1-1,TRBC1,true,0,CW,TGTTGG,9,9,c4,",
        "EEE-1,true,EEE-1_contig_2,1,500,TRA,TRAV12-1,,TRAJ9,TRAC,true,1,ASSLF,GCCAGCAGC,9,9,c4,",
        "EEE-1,true,EEE-1_contig_3,true,500,Multi,None,,TRAJ9,,false,F,,,,8,c4,",
    ]
)


def test_edge_csv_matches_scirpy(ir, tmp_path):
    p = tmp_path / "filtered_contig_annotations.csv"
    p.write_text(EDGE_CSV + "\n")
    new = airr.read_10x_csv(p)
    assert_same(new, scirpy_10x(ir, p))
    got = chains(new)
    assert list(got) == ["AAA-1", "CCC-1", "EEE-1"]  # sorted, filtered
    # a cell with only non-productive chains is kept, chains in file order
    assert [c["productive"] for c in got["CCC-1"]] == [False, False]
    assert [c["sequence_id"] for c in got["CCC-1"]] == ["CCC-1_contig_1", "CCC-1_contig_2"]
    # 'None' and '' in productive are not productive; '1' and 'F' are (scirpy's rule)
    assert [c["productive"] for c in got["AAA-1"]] == [False, False]
    assert [c["productive"] for c in got["EEE-1"]] == [False, True, True]
    assert got["CCC-1"][0]["cdr3_aa"] == "ASSL" and got["CCC-1"][1]["junction_aa"] is None
    assert got["AAA-1"][0]["cdr3_aa"] == "AVRDSNYQLI" and got["AAA-1"][0]["umi_count"] is None
    assert got["EEE-1"][0]["cdr3_aa"] is None and got["EEE-1"][0]["cdr3"] is None
    assert field_type(new, "d_call") == "?unknown"  # every d_gene empty
    assert field_type(new, "umi_count") == "?float64"  # pandas read umis as float (a gap)
    assert field_type(new, "productive") == "bool"


def test_edge_airr_tsv_matches_former_reader(ir, tmp_path):
    cols = [
        "cell_id", "sequence_id", "v_call", "d_call", "j_call", "c_call", "junction",
        "junction_aa", "productive", "v_sequence_start", "v_sequence_end", "v_score",
        "umi_count", "foo_start", "my_flag", "locus",
    ]  # fmt: skip
    rows = [
        ["A", "A_1", "TRBV5-1", "NA", "TRBJ1-4", "TRBC1", "TGTGCCAGCAGCTTATTT", "CASSLF",
         "T", "1", "300", "3.5", "3", "7", "yes", ""],
        ["B", "B_1", "TRAV14/DV4", "None", "TRAJ33", "TRAC", "", "CAVRDSNYQLIW", "F", "", "x",
         "nan", "3.0", "", "", "null"],
        ["A", "A_2", "TRAV1-2", "null", "TRAJ33", "TRBC1", "TGT", "C", "true", "12", "1",
         "1e400", "", "x", "no", ""],
        ["C", "C_1", "IGHV1-2", "IGHD3", "IGHJ4", "IGHM", "TGTGCGAGATGG", "CARW", "0",
         "5", "", "", "12", "3", "", "IGH"],
        ["B", "B_2", "TRBV9", "N/A", "TRBJ2-7", "NaN", "None", "None", "", "2", "2", "2",
         "x", "1", "", "N/A"],
    ]  # fmt: skip
    with_locus = tmp_path / "with_locus.tsv"
    pd.DataFrame(rows, columns=cols).to_csv(with_locus, sep="\t", index=False)
    without = tmp_path / "no_locus.tsv.gz"
    with gzip.open(without, "wt") as fh:
        pd.DataFrame(rows, columns=cols).drop(columns="locus").to_csv(fh, sep="\t", index=False)
    for p in (with_locus, without):
        new = airr.read_airr_tsv(p)
        assert_same(new, scirpy_airr(ir, p), p.name)
    got = chains(airr.read_airr_tsv(with_locus))
    assert list(got) == ["A", "B", "C"]  # first appearance
    assert [c["sequence_id"] for c in got["A"]] == ["A_1", "A_2"]
    assert [c["locus"] for c in got["A"]] == ["TRB", None]  # TRA/TRB calls disagree
    assert [c["locus"] for c in got["B"]] == ["TRA", "TRB"]  # TRAV../DV does not count
    assert got["A"][0]["v_sequence_start"] == 0 and got["A"][1]["v_sequence_start"] == 11
    assert got["A"][0]["foo_start"] is None  # non-schema *_start: None (airr's reader)
    assert got["B"][0]["umi_count"] is None and got["B"][0]["v_score"] is None
    assert got["A"][1]["v_score"] == float("inf")
    assert [c["productive"] for c in got["B"]] == [False, None]


def _mixed_region_json(tmp_path: Path) -> Path:
    """Three high-confidence contigs of two cells (X, Y, X in the file), each without some
    Cell Ranger 6 region keys: record fields then follow ArrayBuilder's first-appearance
    order over the cells' chains (X, X, Y), not the sorted order."""
    contigs = [c for c in json.loads(SMALL_JSON.read_text()) if c["is_cell"]]
    a, b, c = (copy.deepcopy(contigs[i % len(contigs)]) for i in range(3))
    a["barcode"], b["barcode"], c["barcode"] = "X-1", "Y-1", "X-1"
    del a["cdr1"], a["fwr1"], b["cdr1"], c["fwr1"]
    b["productive"] = None
    c["fwr4"] = None
    p = tmp_path / "all_contig_annotations.json"
    p.write_text(json.dumps([a, b, c]))
    return p


def test_json_with_uneven_region_keys_matches_scirpy(ir, tmp_path):
    p = _mixed_region_json(tmp_path)
    new = airr.read_10x_json(p)
    assert_same(new, scirpy_10x(ir, p))
    # fields first met on X's second chain (cdr1) come before those first met on Y (fwr1)
    assert new.obsm["airr"].fields[-4:] == ["cdr1", "cdr1_aa", "fwr1", "fwr1_aa"]
    got = chains(new)
    assert list(got) == ["X-1", "Y-1"] and len(got["X-1"]) == 2
    assert got["X-1"][0]["fwr1"] is None and got["Y-1"][0]["cdr1_aa"] is None
    assert got["Y-1"][0]["fwr1"] is not None and got["Y-1"][0]["productive"] is None
    assert got["X-1"][1]["fwr4"] is None and got["X-1"][1]["fwr4_aa"] is None


def test_gz_inputs_match_scirpy(ir, tmp_path):
    csv = SCIRPY_DATA / "10x" / "filtered_contig_annotations.csv"
    tsv = SCIRPY_DATA / "airr" / "rearrangement_trb.tsv"
    cases = {
        "a.csv.gz": (gzip.compress(csv.read_bytes()), airr.read_10x_csv, csv),
        "plain.csv.gz": (csv.read_bytes(), airr.read_10x_csv, csv),
        "gz_named_plain.csv": (gzip.compress(csv.read_bytes()), airr.read_10x_csv, csv),
        "a.json.gz": (gzip.compress(SMALL_JSON.read_bytes()), airr.read_10x_json, SMALL_JSON),
        "a.tsv.gz": (gzip.compress(tsv.read_bytes()), airr.read_airr_tsv, tsv),
    }
    for name, (data, read, plain) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        ref = scirpy_airr(ir, plain) if read is airr.read_airr_tsv else scirpy_10x(ir, plain)
        assert_same(read(p), ref, name)


def test_shuffled_rows_keep_scirpys_cell_and_chain_order(ir, tmp_path):
    """Contigs of a cell scattered over the file: cells sorted (CSV) or in order of first
    appearance (AIRR), chains in file order within a cell, as scirpy."""
    rng = np.random.default_rng(7)
    csv = pd.read_csv(
        SCIRPY_DATA / "10x" / "vdj_nextgem_hs_pbmc3_t_filtered_contig_annotations.csv.gz"
    )
    p = tmp_path / "shuffled.csv"
    csv.iloc[rng.permutation(len(csv))].to_csv(p, index=False)
    assert_same(airr.read_10x_csv(p), scirpy_10x(ir, p), p.name)
    tsv = pd.read_csv(
        SCIRPY_DATA / "airr" / "issue_625.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    q = tmp_path / "shuffled.tsv"
    tsv.iloc[rng.permutation(len(tsv))].to_csv(q, sep="\t", index=False)
    assert_same(airr.read_airr_tsv(q), scirpy_airr(ir, q), q.name)


def test_zero_cells_after_filtering(ir, tmp_path):
    lines = EDGE_CSV.splitlines()
    p = tmp_path / "filtered_contig_annotations.csv"
    p.write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.startswith(("BBB", "DDD"))]))
    new = airr.read_10x_csv(p)
    assert new.n_obs == 0 and len(new.obsm["airr"]) == 0
    assert {"junction_aa", "locus", "productive", "umi_count"} <= set(new.obsm["airr"].fields)
    with pytest.raises(KeyError):  # scirpy cannot build an AnnData without cells
        scirpy_10x(ir, p)
    with pytest.raises(InputError) as exc:
        io.read_tcr(p, sample="z")
    assert str(p) in str(exc.value) and "high_confidence" in str(exc.value)
    js = [dict(c, is_cell=False) for c in json.loads(SMALL_JSON.read_text())]
    pj = tmp_path / "all_contig_annotations.json"
    pj.write_text(json.dumps(js))
    assert airr.read_10x_json(pj).n_obs == 0


def test_invalid_integer_is_a_clear_input_error(ir, tmp_path):
    lines = EDGE_CSV.splitlines()
    lines[1] = lines[1].replace(",100,3,c1,", ",100,abc,c1,")
    p = tmp_path / "filtered_contig_annotations.csv"
    p.write_text("\n".join(lines))
    from airr.schema import ValidationError

    with pytest.raises(ValidationError):  # scirpy refuses it too
        scirpy_10x(ir, p)
    with pytest.raises(ValueError, match="umi_count"):
        airr.read_10x_csv(p)
    with pytest.raises(InputError) as exc:
        io.read_tcr(p, sample="z")  # refused by the checks it shares with parse time
    assert str(p) in str(exc.value) and "column 'umis'" in str(exc.value)


def test_from_contigs_known_truth():
    df = pd.DataFrame(
        {
            "cell_id": ["b", "a", "b", None, "N/A"],
            "locus": ["TRB", "TRA", "nan", "TRA", "TRB"],
            "umi_count": [3, 4, 5, 6, 7],
            "x_score": [1.5, np.nan, 2.0, 1.0, 1.0],
            "flag": np.array([True, "N/A", False, True, True], dtype=object),
        }
    )
    first = airr.from_contigs(df)
    assert list(first.obs_names) == ["b", "a", "None", "None"]
    assert first.obs.index.name == "cell_id" and first.obs.shape[1] == 0
    assert first.uns == {"scirpy_version": airr.SCIRPY_VERSION}
    arr = first.obsm["airr"]
    assert arr.fields == sorted(set(df.columns[1:]) | set(airr.AIRR_REQUIRED))
    assert ak.to_list(arr.locus) == [["TRB", None], ["TRA"], ["TRA"], ["TRB"]]
    assert field_type(first, "umi_count") == "int64"
    assert field_type(first, "x_score") == "?float64"
    assert field_type(first, "flag") == "?bool"
    assert field_type(first, "junction") == "?unknown"
    assert field_type(first, "locus") == "?string"
    srt = airr.from_contigs(df, sort_cells=True)  # groupby semantics: missing id dropped
    assert list(srt.obs_names) == ["None", "a", "b"]
    assert ak.to_list(srt.obsm["airr"].umi_count) == [[7], [4], [3, 5]]
    with pytest.raises(ValueError, match="productive"):
        airr.from_contigs(pd.DataFrame({"cell_id": ["a"], "productive": ["maybe"]}))


def test_constants_match_installed_airr_schema_and_scirpy():
    from airr import RearrangementSchema as schema

    assert airr.AIRR_REQUIRED == tuple(schema.required)
    props = schema.properties
    assert airr.AIRR_BOOLEAN == {p for p in props if schema.type(p) == "boolean"}
    assert airr.AIRR_INTEGER == {p for p in props if schema.type(p) == "integer"}
    assert airr.AIRR_NUMBER == {p for p in props if schema.type(p) == "number"}
    # the layout reproduced is scirpy 0.22.5's: re-check equivalence when scirpy changes
    assert importlib.metadata.version("scirpy") == airr.SCIRPY_VERSION


def test_read_tcr_and_load_sample_do_not_import_scirpy_or_scanpy(tmp_path):
    paths = [
        SCIRPY_DATA / "10x" / "filtered_contig_annotations.csv",
        SMALL_JSON,
        SCIRPY_DATA / "airr" / "rearrangement_tra.tsv",
    ]
    sheet = REPO / "config" / "samples.tsv"
    demo = None
    if sheet.exists():
        row = pd.read_csv(sheet, sep="\t", dtype=str).set_index("sample").loc["P04_IP"]
        gex, vdj = ((sheet.parent / row[k]).resolve() for k in ("gex", "vdj"))
        if gex.exists() and vdj.exists():
            demo = (str(gex), str(vdj), {k: row[k] for k in row.index if k not in ("gex", "vdj")})
    code = f"""
import sys
from cartcohort import io
for p in {[str(p) for p in paths]!r}:
    assert io.read_tcr(p, sample="S").n_obs > 0
demo = {demo!r}
if demo:
    mdata, summary, _ = io.load_sample(
        sample="P04_IP", gex_path=demo[0], vdj_path=demo[1], meta=demo[2], car_features=[]
    )
    assert mdata["airr"].n_obs > 100, mdata
loaded = sorted(m for m in ("scirpy", "scanpy", "airr") if m in sys.modules)
assert not loaded, loaded
print("ok", bool(demo))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow" / "scripts"))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")
