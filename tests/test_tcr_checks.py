"""The TCR contig files (issue 17): checked in full at parse time, streaming.

- every contig of a 10x CSV / JSON or AIRR TSV is checked (not the first 5,000): the
  number of fields of every row, the values the loader uses, the barcode format; a file
  cut off or corrupt anywhere is refused before any job, naming the file and the line;
- memory stays flat whatever the file's size (one chunk of rows at a time);
- at least ``load.min_tcr_gex_overlap`` (default 10 %) of a file's TCR cells must have a
  GEX cell of the same sheet row, else the run stops (two libraries' files paired);
- an empty contig file, or one with only a header, is refused: "no TCR" is an empty
  ``vdj``;
- the parse-time cache still skips unchanged libraries, and re-checks one whose stored
  overlap no longer passes a raised threshold;
- what passes the checks is read whole by the loader (same TCR cells).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cartcohort import io, sheets
from cartcohort.sheets import sniff_vdj_json
from conftest import REPO, SHARED_DATA, require_shared, run_snakemake
from test_sheets import (
    CSV_HEADER,
    contig_rows,
    make_barcodes,
    make_cohort,
    problems_of,
    tiny_counts,
    tiny_features,
    write_10x_h5,
    write_airr_tsv,
    write_contigs_csv,
    write_sheet,
)

SCIRPY_10X = Path(str(importlib.resources.files("scirpy") / "tests" / "data" / "10x"))
SMALL_JSON = SCIRPY_10X / "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small.json"
#: The line of the big S1 contig table that the corruptions below break (past row 5,000).
BAD_LINE = 5500


def _big_s1(c: dict, n_cells: int = 3000) -> tuple[Path, list[str]]:
    """S1 of the cohort with 3,000 GEX cells and a contig table of 6,000 rows (TRA+TRB)."""
    ids, names, types = tiny_features(6, adt=["CD4_TotalSeqC"], car="CAR")
    bc = make_barcodes(n_cells, seed=5)
    h5 = c["data"] / "S1" / "filtered_feature_bc_matrix.h5"
    write_10x_h5(h5, tiny_counts(len(ids), n_cells, seed=5), bc, ids, names, types)
    path = write_contigs_csv(c["data"] / "S1" / "filtered_contig_annotations.csv", contig_rows(bc))
    return path, bc


def _edit_line(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("".join(lines))


def _set_field(column: str, value: str):
    i = CSV_HEADER.index(column)

    def edit(text: str) -> str:
        fields = text.rstrip("\n").split(",")
        fields[i] = value
        return ",".join(fields) + "\n"

    return edit


def _cut_mid_line(path: Path) -> None:
    """Truncate a plain-text file in the middle of line BAD_LINE (a failed copy)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: BAD_LINE - 1]) + lines[BAD_LINE - 1][:40])


def _cut_gzip(path: Path) -> None:
    """Gzip the table and cut the compressed stream at 90 % (past row 5,000)."""
    data = gzip.compress(path.read_bytes())
    path.write_bytes(data[: int(len(data) * 0.9)])


def _bytes_at_line(path: Path, raw: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[BAD_LINE - 1] = lines[BAD_LINE - 1][:10] + raw + lines[BAD_LINE - 1][10:]
    path.write_bytes(b"".join(lines))


#: (id, corruption of the big S1 table, where, phrase) - all past row 5,000.
CORRUPT = [
    (
        "cut-mid-line",
        _cut_mid_line,
        f"line {BAD_LINE}",
        "without a line end: the file is truncated",
    ),
    ("cut-gzip", _cut_gzip, "line", "is unreadable at or after this line (EOFError"),
    (
        "extra-field",
        lambda p: _edit_line(p, BAD_LINE, lambda t: t.rstrip("\n") + ",x\n"),
        f"line {BAD_LINE}",
        "1 contig(s) have a number of fields other than the header's 18 (first: 19 fields)",
    ),
    (
        "missing-field",
        lambda p: _edit_line(p, BAD_LINE, lambda t: t.replace(",true,", ",", 1)),
        f"line {BAD_LINE}",
        "number of fields other than the header's 18 (first: 17 fields)",
    ),
    (
        "umis-not-a-number",
        lambda p: _edit_line(p, BAD_LINE, _set_field("umis", "3x")),
        f"line {BAD_LINE}, column 'umis'",
        "1 contig(s) have a umis that is not a whole number >= 0 (first: '3x')",
    ),
    (
        "is-cell-misspelled",
        lambda p: _edit_line(p, BAD_LINE, _set_field("is_cell", "F")),
        f"line {BAD_LINE}, column 'is_cell'",
        "have a is_cell that is not true or false (first: 'F')",
    ),
    (
        "chain-garbage",
        lambda p: _edit_line(p, BAD_LINE, _set_field("chain", "TRBV6-4")),
        f"line {BAD_LINE}, column 'chain'",
        "is not a receptor locus",
    ),
    (
        "cdr3-garbage",
        lambda p: _edit_line(p, BAD_LINE, _set_field("cdr3", "CASS1F")),
        f"line {BAD_LINE}, column 'cdr3'",
        "is not an amino-acid sequence",
    ),
    (
        "barcode-cut",
        lambda p: _edit_line(p, BAD_LINE, lambda t: t[:6] + t[18:]),
        f"line {BAD_LINE}, column 'barcode'",
        "have a barcode unlike the file's first one",
    ),
    (
        "barcode-na",
        lambda p: _edit_line(p, BAD_LINE, _set_field("barcode", "NA")),
        f"line {BAD_LINE}, column 'barcode'",
        "have a missing-value spelling as barcode (first: 'NA')",
    ),
    (
        "nul-byte",
        lambda p: _bytes_at_line(p, b"\x00"),
        f"line {BAD_LINE}, column 'barcode'",
        "control character (first: 'TGCCAGACGA\\x00",
    ),
    ("bad-utf8", lambda p: _bytes_at_line(p, b"\xff\xfe"), "line", "UnicodeDecodeError"),
]


@pytest.mark.parametrize("case", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_contig_table_broken_past_row_5000_is_refused(tmp_path, case):
    _, corrupt, where, phrase = case
    c = make_cohort(tmp_path)
    path, _ = _big_s1(c)
    sheets.prepare_inputs(c["config"], base_dir=tmp_path)  # the intact table passes
    corrupt(path)
    probs = problems_of(c["config"], tmp_path)
    hits = [
        p for p in probs if p.file == str(path) and p.where.startswith(where) and phrase in p.what
    ]
    assert hits, "\n".join(map(str, probs))
    assert "sample 'S1', samples.tsv line 2, column 'vdj'" in hits[0].what
    assert hits[0].fix


def test_first_issue_names_the_first_bad_line_and_counts_all(tmp_path):
    c = make_cohort(tmp_path)
    path, _ = _big_s1(c)
    for line in (5200, 5900, 5301):
        _edit_line(path, line, _set_field("reads", "-4"))
    (p,) = problems_of(c["config"], tmp_path)
    assert p.where == "line 5200, column 'reads'"
    assert p.what.startswith("3 contig(s) have a reads that is not a whole number >= 0")


def test_quoted_values_are_parsed_as_csv_from_where_they_appear(tmp_path):
    """Lines are split on commas until a quote appears (2,000 rows in); from there the
    csv module reads on (a quoted comma is no separator), and lines stay exact."""
    c = make_cohort(tmp_path)
    path, bc = _big_s1(c)
    _edit_line(path, 2001, _set_field("raw_clonotype_id", '"clono,type"'))
    _edit_line(path, BAD_LINE, _set_field("umis", "3x"))
    (p,) = problems_of(c["config"], tmp_path)
    assert p.where == f"line {BAD_LINE}, column 'umis'"
    _edit_line(path, BAD_LINE, _set_field("umis", "3"))
    assert sheets.inspect_vdj("10x_csv", path) == (set(bc), [])
    assert set(io.read_tcr(path, sample="S").obs["barcode"]) == set(bc)


@pytest.mark.parametrize(
    "edit, where, phrase",
    [
        ({"productive": "yes"}, "line 3, column 'productive'", "not true or false (first: 'yes')"),
        ({"umi_count": "3.0"}, "line 3, column 'umi_count'", "is not an integer (first: '3.0')"),
        ({"v_sequence_start": "x"}, "line 3, column 'v_sequence_start'", "is not an integer"),
        ({"locus": "TRX"}, "line 3, column 'locus'", "is not a receptor locus"),
        ({"cell_id": "AAAC CTGA-1"}, "line 3, column 'cell_id'", "blank, quote, separator"),
    ],
)
def test_airr_values_the_reader_would_blank_are_refused(tmp_path, edit, where, phrase):
    """The AIRR reader turns invalid typed values into missing ones without a word."""
    c = make_cohort(tmp_path)
    rows = contig_rows(c["barcodes"]["S2"][:4])
    path = write_airr_tsv(c["data"] / "S2" / "airr_rearrangement.tsv", rows)
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df["v_sequence_start"] = "1"
    for column, value in edit.items():
        df.loc[1, column] = value
    df.to_csv(path, sep="\t", index=False)
    probs = problems_of(c["config"], tmp_path)
    assert [(Path(p.file).name, p.where) for p in probs] == [("airr_rearrangement.tsv", where)]
    assert phrase in probs[0].what


def test_airr_rows_may_lack_trailing_unused_fields_but_not_a_cut_last_line(tmp_path):
    """Some tools leave trailing empty fields out (scirpy's tra_issue_280.tsv); a last
    line without its end and short of fields is a truncated file."""
    c = make_cohort(tmp_path)
    path = write_airr_tsv(
        c["data"] / "S2" / "airr_rearrangement.tsv", contig_rows(c["barcodes"]["S2"][:4])
    )
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df["extra_note"] = ""
    text = df.to_csv(sep="\t", index=False).replace("\t\n", "\n")  # rows lack the last field
    path.write_text(text)
    sheets.prepare_inputs(c["config"], base_dir=tmp_path)
    path.write_text(text.rstrip("\n"))
    (p,) = problems_of(c["config"], tmp_path)
    assert p.where == "line 9" and "without a line end: the file is truncated" in p.what


def test_flag_spellings_that_pandas_would_misread_are_refused(tmp_path):
    """With 0/1 in the column, pandas keeps 'FALSE' as text and scirpy reads it as true."""
    c = make_cohort(tmp_path)
    rows = contig_rows(c["barcodes"]["S1"][:5])
    rows[0]["high_confidence"], rows[1]["high_confidence"] = "FALSE", "1"
    write_contigs_csv(c["data"] / "S1" / "filtered_contig_annotations.csv", rows)
    (p,) = problems_of(c["config"], tmp_path)
    assert p.where == "column 'high_confidence'"
    assert "mix the spellings 0/1 and TRUE/FALSE" in p.what


# --------------------------------------------------------------------------- JSON


def _json_contigs(n: int) -> list[dict]:
    """``n`` cell contigs built from scirpy's 10x JSON (barcodes made distinct)."""
    base = [c for c in json.loads(SMALL_JSON.read_text()) if c["is_cell"]]
    bc = make_barcodes(n, seed=9)
    return [dict(base[i % len(base)], barcode=bc[i]) for i in range(n)]


def _insert_before_contig(text: str, n: int, insert: str) -> str:
    """``insert`` placed at the start of contig ``n`` (1-based) of a JSON dump."""
    at = -1
    for _ in range(n):
        at = text.index('"barcode":', at + 1)
    return text[:at] + insert + text[at:]


@pytest.fixture
def small_chunks(monkeypatch):
    """Decode JSON from 4 kB chunks, so that a small file spans many of them."""
    monkeypatch.setattr(sniff_vdj_json, "_CHUNK", 4096)


def test_json_is_read_one_contig_at_a_time(tmp_path, small_chunks):
    contigs = _json_contigs(300)
    path = tmp_path / "all_contig_annotations.json"
    path.write_text(json.dumps(contigs, indent=2))
    barcodes, issues = sheets.inspect_vdj("10x_json", path)
    assert issues == []
    assert barcodes == {c["barcode"] for c in contigs}
    out = io.read_tcr(path, sample="S")
    assert set(out.obs["barcode"]) == barcodes


@pytest.mark.parametrize(
    "break_it, where, phrase",
    [
        (lambda t: t[: int(len(t) * 0.8)], "", "it ends inside contig"),
        (lambda t: t.rstrip()[:-1], "", "ends after contig 300 where ',' or ']' belongs"),
        (lambda t: t + "\n[]", "", "text follows its closing ']'"),
        (
            lambda t: t.replace('"umi_count": ', '"umi_count": "x", "u": ', 1),
            "contig 1, key 'umi_count'",
            "not a whole number",
        ),
        (
            lambda t: t.replace('"is_cell": true', '"is_cell": "true"', 1),
            "contig 1, key 'is_cell'",
            "not true or false",
        ),
        (
            lambda t: t.replace('"read_count": ', '"read_cnt": ', 1),
            "contig 1, key 'read_count'",
            "lack the key read_count",
        ),
        (lambda t: _insert_before_contig(t, 260, '"x": tru, '), "", "invalid JSON in contig 260"),
    ],
    ids=[
        "cut",
        "no-closing-bracket",
        "trailing-text",
        "umi-text",
        "flag-text",
        "key-missing",
        "syntax",
    ],
)
def test_broken_json_is_refused_wherever_it_breaks(tmp_path, small_chunks, break_it, where, phrase):
    path = tmp_path / "all_contig_annotations.json"
    path.write_text(break_it(json.dumps(_json_contigs(300), indent=2)))
    barcodes, issues = sheets.inspect_vdj("10x_json", path)
    assert any(w == where and phrase in what for w, what, _ in issues), issues


def test_truncated_gzip_json_is_refused(tmp_path, small_chunks):
    path = tmp_path / "all_contig_annotations.json.gz"
    data = gzip.compress(json.dumps(_json_contigs(300)).encode())
    path.write_bytes(data[: len(data) * 3 // 4])
    _, issues = sheets.inspect_vdj("10x_json", path)
    assert [w for w, what, _ in issues if "is unreadable after contig" in what] == [""], issues
    assert "EOFError" in issues[-1][1]


# --------------------------------------------------------------------------- memory and loader


def test_memory_stays_flat_whatever_the_file_size(tmp_path):
    """Four times the contigs (same cells) take no more memory: one chunk at a time."""
    block = pd.DataFrame(contig_rows(make_barcodes(1000, seed=2)), columns=CSV_HEADER)
    block = block.to_csv(index=False).split("\n", 1)
    peaks = []
    for n in (4, 16):
        path = tmp_path / f"contigs_{n}.csv"
        path.write_text(block[0] + "\n" + block[1] * n)
        tracemalloc.start()
        barcodes, issues = sheets.inspect_vdj("10x_csv", path)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert issues == [] and len(barcodes) == 1000
    assert peaks[1] < 1.3 * peaks[0], peaks
    assert peaks[1] < path.stat().st_size / 2, (peaks, path.stat().st_size)


def _tcr_files() -> list[Path]:
    files = [SMALL_JSON, SCIRPY_10X / "all_contig_annotations.json"]
    files += [SCIRPY_10X / "filtered_contig_annotations.csv"]
    files += sorted(SHARED_DATA.glob("djvdj_splen/*_TCR/*.gz"))
    files += sorted(SHARED_DATA.glob("haradhvala_d7/*contig*.csv"))
    return files


def test_what_passes_the_checks_is_read_whole_by_the_loader():
    """The parse-time TCR cells are exactly the cells the loader reads (real files)."""
    for path in _tcr_files():
        barcodes, issues = sheets.inspect_vdj(*sheets.locate_vdj(path))
        assert issues == [], (path, issues)
        out = io.read_tcr(path, sample="S")
        assert set(out.obs["barcode"]) == barcodes, path


# --------------------------------------------------------------------------- overlap


def _s1_contigs(c: dict, n_in_gex: int, n_other: int) -> Path:
    """S1's contig table: ``n_in_gex`` of its 8 GEX cells and ``n_other`` foreign cells."""
    cells = c["barcodes"]["S1"][:n_in_gex] + make_barcodes(n_other, seed=77)
    return write_contigs_csv(
        c["data"] / "S1" / "filtered_contig_annotations.csv", contig_rows(cells)
    )


def test_overlap_below_the_threshold_stops_the_run(tmp_path):
    c = make_cohort(tmp_path)
    _s1_contigs(c, 1, 19)  # 5 % of the TCR cells have a GEX cell
    (p,) = problems_of(c["config"], tmp_path)
    assert (Path(p.file).name, p.where) == ("samples.tsv", "line 2, column 'vdj'")
    assert "only 1 of the 20 TCR cells" in p.what and "(5.0%)" in p.what
    assert "below load.min_tcr_gex_overlap = 0.1" in p.what
    assert "pair the TCR and GEX files of the same library" in p.fix
    assert "lower load.min_tcr_gex_overlap" in p.fix
    sheets.prepare_inputs(dict(c["config"], load={"min_tcr_gex_overlap": 0.05}), base_dir=tmp_path)
    _s1_contigs(c, 2, 18)  # 10 %: enough
    sheets.prepare_inputs(c["config"], base_dir=tmp_path)


def test_cache_skips_unchanged_contigs_and_rechecks_a_raised_threshold(tmp_path, monkeypatch):
    c = make_cohort(tmp_path)
    _s1_contigs(c, 3, 17)  # 15 %
    cache = ".snakemake/cartcohort_input_checks.json"
    sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)
    stored = json.loads((tmp_path / cache).read_text())["rows"]
    assert sorted(
        round(r["tcr_gex_overlap"], 2) for r in stored.values() if "tcr_gex_overlap" in r
    ) == [0.15, 1.0, 1.0]

    def boom(*a, **k):
        raise AssertionError("an unchanged contig file was read again")

    with monkeypatch.context() as m:
        m.setattr(sheets.samples, "inspect_vdj", boom)
        sheets.prepare_inputs(c["config"], base_dir=tmp_path, cache_path=cache)
        sheets.prepare_inputs(
            dict(c["config"], load={"min_tcr_gex_overlap": 0.15}),
            base_dir=tmp_path,
            cache_path=cache,
        )
    raised = dict(c["config"], load={"min_tcr_gex_overlap": 0.2})
    (p,) = problems_of(raised, tmp_path, cache_path=cache)
    assert "only 3 of the 20 TCR cells" in p.what


# --------------------------------------------------------------------------- empty files


@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"", "is empty (no content at all, not even a header)"),
        (gzip.compress(b""), "is empty"),
        (b"\n\n", "is empty"),
        ((",".join(CSV_HEADER) + "\n").encode(), "contains no contigs"),
    ],
    ids=["zero-bytes", "empty-gzip", "blank-lines", "header-only"],
)
def test_empty_contig_file_is_not_no_tcr(tmp_path, content, phrase):
    c = make_cohort(tmp_path)
    path = c["data"] / "S1" / "filtered_contig_annotations.csv"
    path.write_bytes(content)
    (p,) = problems_of(c["config"], tmp_path)
    assert p.file == str(path) and phrase in p.what
    assert "leave its 'vdj' empty in the sample sheet" in p.fix
    # "no TCR for this library" is said by an empty vdj, and accepted
    sheet = c["cfg"] / "samples.tsv"
    sheet.write_text(sheet.read_text().replace("../data/S1/filtered_contig_annotations.csv", ""))
    samples = sheets.prepare_inputs(c["config"], base_dir=tmp_path)[0]
    assert samples.loc["S1", "vdj"] == ""


def test_empty_contigs_of_a_multi_run_name_how_to_load_without_tcr(tmp_path):
    c = make_cohort(tmp_path)
    vdj = (
        c["data"]
        / "S3run"
        / "outs"
        / "per_sample_outs"
        / "S3"
        / "vdj_t"
        / "filtered_contig_annotations.csv"
    )
    vdj.write_text(",".join(CSV_HEADER) + "\n")
    (p,) = problems_of(c["config"], tmp_path)
    assert p.file == str(vdj) and "contains no contigs" in p.what
    assert "count/sample_filtered_feature_bc_matrix.h5" in p.fix


def test_json_without_contigs_or_cells(tmp_path):
    path = tmp_path / "all_contig_annotations.json"
    path.write_text("[]")
    assert "contains no contigs" in sheets.inspect_vdj("10x_json", path)[1][0][1]
    path.write_text(json.dumps([dict(c, is_cell=False) for c in _json_contigs(3)]))
    (issue,) = sheets.inspect_vdj("10x_json", path)[1]
    assert "has no contig of a cell with high confidence" in issue[1]


# --------------------------------------------------------------------------- through snakemake


def _refused_by_snakemake(tmp_path: Path, cfg: dict) -> str:
    full = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    full.update(cfg)
    cfgfile = tmp_path / "run_config.yaml"
    cfgfile.write_text(yaml.safe_dump(full))
    proc = run_snakemake(tmp_path, configfile=cfgfile, cores=1, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "results").exists()
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["cut-mid-line", "umis-not-a-number"])
def test_snakemake_refuses_a_contig_table_broken_past_row_5000(tmp_path, case):
    _, corrupt, where, phrase = next(x for x in CORRUPT if x[0] == case)
    c = make_cohort(tmp_path)
    path, _ = _big_s1(c)
    corrupt(path)
    out = _refused_by_snakemake(tmp_path, c["config"])
    assert f"{path}: {where}" in out and phrase in out, out[-3000:]
    assert "(sample 'S1', samples.tsv line 2, column 'vdj'). Fix: " in out


@pytest.mark.e2e
def test_snakemake_refuses_tcr_of_too_few_gex_cells(tmp_path):
    c = make_cohort(tmp_path)
    _s1_contigs(c, 1, 19)
    out = _refused_by_snakemake(tmp_path, c["config"])
    assert "samples.tsv: line 2, column 'vdj': only 1 of the 20 TCR cells" in out
    assert "Fix: pair the TCR and GEX files of the same library" in out


# --------------------------------------------------------------------------- real data


def _djvdj_sheet(root: Path, pairs: dict[str, tuple[Path, Path]]) -> dict:
    rows = [
        [s, f"m{i}", "d0", "", "spleen", "b1", "none", str(gex), str(vdj)]
        for i, (s, (gex, vdj)) in enumerate(pairs.items())
    ]
    write_sheet(root / "samples.tsv", rows)
    (root / "clinical.tsv").write_text("patient\tresponse\nm0\tNE\nm1\tNE\n")
    return {
        "samples": str(root / "samples.tsv"),
        "clinical": str(root / "clinical.tsv"),
        "primary_timepoint": "d0",
        "car_features": [],  # mouse spleen: no CAR
    }


@pytest.mark.realdata
def test_real_contigs_paired_with_the_wrong_library_are_refused(tmp_path):
    d = require_shared("djvdj_splen")
    gex = {m: d / f"{m}_GEX" / "filtered_feature_bc_matrix" for m in ("BL6", "MD4")}
    tcr = {m: d / f"{m}_TCR" / "filtered_contig_annotations.csv.gz" for m in ("BL6", "MD4")}
    right = _djvdj_sheet(
        tmp_path, {"BL6": (gex["BL6"], tcr["BL6"]), "MD4": (gex["MD4"], tcr["MD4"])}
    )
    sheets.prepare_inputs(right, base_dir=tmp_path)
    swapped = _djvdj_sheet(
        tmp_path, {"BL6": (gex["BL6"], tcr["MD4"]), "MD4": (gex["MD4"], tcr["BL6"])}
    )
    probs = problems_of(swapped, tmp_path)
    assert [p.where for p in probs] == ["line 2, column 'vdj'", "line 3, column 'vdj'"]
    assert all("shares no cell barcode with the GEX file" in p.what for p in probs)
    # MD4's contigs with a few of BL6's: 3 of 59 TCR cells (5 %) have a BL6 GEX cell
    mixed = pd.read_csv(tcr["MD4"], dtype=str, keep_default_na=False)
    bl6 = pd.read_csv(tcr["BL6"], dtype=str, keep_default_na=False)
    few = bl6[bl6["barcode"].isin(sorted(set(bl6["barcode"]))[:3])]
    path = tmp_path / "MD4_plus_3_BL6.csv"
    pd.concat([mixed, few]).to_csv(path, index=False)
    cfg = _djvdj_sheet(tmp_path, {"BL6": (gex["BL6"], path)})
    (p,) = problems_of(cfg, tmp_path)
    assert "only 3 of the 59 TCR cells" in p.what and "(5.1%)" in p.what


@pytest.mark.realdata
@pytest.mark.e2e
def test_snakemake_refuses_real_contigs_of_another_library(tmp_path):
    d = require_shared("djvdj_splen")
    cfg = _djvdj_sheet(
        tmp_path,
        {
            "BL6": (
                d / "BL6_GEX" / "filtered_feature_bc_matrix",
                d / "MD4_TCR" / "filtered_contig_annotations.csv.gz",
            ),
            "MD4": (
                d / "MD4_GEX" / "filtered_feature_bc_matrix",
                d / "MD4_TCR" / "airr_rearrangement.tsv.gz",
            ),
        },
    )
    out = _refused_by_snakemake(tmp_path, cfg)
    assert "samples.tsv: line 2, column 'vdj': the TCR file " in out
    assert (
        "MD4_TCR/filtered_contig_annotations.csv.gz shares no cell barcode with the GEX file" in out
    )
    assert "Fix: pair the TCR and GEX files of the same library" in out
    assert "line 3, column 'vdj'" not in out  # MD4 and its own contigs pair up
