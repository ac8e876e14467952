"""Read TCR contigs (10x CSV/JSON, AIRR TSV) into scirpy's AIRR AnnData without scirpy.

scirpy 0.22.5's readers (``scirpy.io.read_10x_vdj``, ``scirpy.io.read_airr``)
build one Python ``AirrCell`` per cell; importing scirpy also imports scanpy
(1.5-2 s per process). The readers here collect the same chain fields column by
column and build the same AnnData with :func:`~cartcohort.io.contigs.from_contigs`
(see there for what is reproduced and what is not). Equivalence with scirpy is
proven field by field by ``tests/test_airr_reader.py``. Only awkward, numpy,
pandas and anndata are imported (plus the light :mod:`cartcohort.sheets` for
gzip detection): the ``load`` environment has no scirpy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ..sheets import (
    AIRR_BOOLEAN,
    AIRR_INTEGER,
    AIRR_NA_LIKE,
    AIRR_NUMBER,
    AIRR_REQUIRED,
    JSON_REGIONS,
    SCIRPY_NA_STRINGS,
    VDJ_LOCI,
    VJ_LOCI,
    is_gzip,
    open_text,
    schema_type,
)
from .contigs import (
    SCIRPY_VERSION,
    as_values,
    from_contigs,
    map_unique,
    minus_one,
    na_mask,
    scirpy_is_true,
    to_bool,
    to_float,
    to_int,
)

__all__ = [
    "AIRR_BOOLEAN",
    "AIRR_INTEGER",
    "AIRR_NA_LIKE",
    "AIRR_NUMBER",
    "AIRR_REQUIRED",
    "SCIRPY_NA_STRINGS",
    "SCIRPY_VERSION",
    "from_contigs",
    "read_10x_csv",
    "read_10x_json",
    "read_airr_tsv",
    "scirpy_is_true",
]


#: Codons scirpy's ``_translate_dna_to_protein`` reads as C, and as W or F.
_CYS_CODONS = ("TGT", "TGC")
_TRP_PHE_CODONS = ("TGG", "TTT", "TTC")
_CR6_REGIONS = ("fwr1", "fwr2", "fwr3", "fwr4", "cdr1", "cdr2")


def _cdr3_from_junction(
    junction_aa: np.ndarray, junction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``scirpy.io._io._cdr3_from_junction``: the junction without its
    conserved C and W/F (``None`` when they are not there)."""
    out = []
    for values, name in ((junction_aa, "junction_aa"), (junction, "junction")):
        values = as_values(values)
        present = ~na_mask(values)
        result = np.full(len(values), None, dtype=object)
        if present.any():
            if not all(issubclass(t, str) for t in set(map(type, values[present]))):
                first = next(v for v in values[present] if not isinstance(v, str))
                raise TypeError(f"field '{name}' holds a non-text value {first!r}")
            s = pd.Series(values[present], dtype=object)
            if name == "junction_aa":
                ok = s.str[0].eq("C") & s.str[-1].isin(["W", "F"])
                core = s.str[1:-1]
            else:
                ok = s.str[:3].isin(_CYS_CODONS) & s.str[-3:].isin(_TRP_PHE_CODONS)
                core = s.str[3:-3]
            result[np.flatnonzero(present)[ok.to_numpy()]] = core[ok].to_numpy()
        out.append(result)
    return out[0], out[1]


# --------------------------------------------------------------------------- readers


def read_10x_csv(path: str | os.PathLike, *, filtered: bool = True) -> ad.AnnData:
    """Read a 10x ``{filtered,all}_contig_annotations.csv[.gz]`` like
    ``scirpy.io.read_10x_vdj``.

    Parameters
    ----------
    path
        The contig table (gzip recognised by content, whatever the name).
    filtered
        Keep only contigs with ``is_cell`` and ``high_confidence`` true.

    Returns
    -------
    AnnData
        As :func:`from_contigs`; cells sorted by barcode. Chain fields:
        ``locus`` (chain), ``junction_aa`` (cdr3), ``junction`` (cdr3_nt),
        ``umi_count`` (umis), ``consensus_count`` (reads), ``productive``
        (bool: true unless ``False``/``false``/``0``/missing),
        ``v/d/j/c_call`` (v/d/j/c_gene), ``is_cell``, ``high_confidence``,
        ``sequence_id`` (contig_id), Cell Ranger 6+ ``fwr1-4``/``cdr1-2``
        (``<region>_aa`` from ``<region>``, ``<region>`` from ``<region>_nt``),
        ``cdr3_aa``/``cdr3`` (junction without its conserved residues) and the
        required AIRR fields (``None``).
    """
    p = Path(path)
    df = pd.read_csv(p, compression="gzip" if is_gzip(p) else None)
    if filtered:
        keep = scirpy_is_true(df["is_cell"]) & scirpy_is_true(df["high_confidence"])
        df = df.loc[keep]
    chains: dict[str, Any] = {
        "locus": df["chain"],
        "junction_aa": df["cdr3"],
        "junction": df["cdr3_nt"],
        "umi_count": df["umis"],
        "consensus_count": df["reads"],
        "productive": scirpy_is_true(df["productive"]),
        "v_call": df["v_gene"],
        "d_call": df["d_gene"],
        "j_call": df["j_gene"],
        "c_call": df["c_gene"],
        "is_cell": df["is_cell"],
        "high_confidence": df["high_confidence"],
        "sequence_id": df["contig_id"],
    }
    for region in _CR6_REGIONS:
        if region in df.columns:
            chains[f"{region}_aa"] = df[region]
        if f"{region}_nt" in df.columns:
            chains[region] = df[f"{region}_nt"]
    chains["cdr3_aa"], chains["cdr3"] = _cdr3_from_junction(
        as_values(df["cdr3"]), as_values(df["cdr3_nt"])
    )
    table = pd.DataFrame(
        {"cell_id": as_values(df["barcode"])} | {k: as_values(v) for k, v in chains.items()}
    )
    return from_contigs(table, cell_id="cell_id", sort_cells=True)


def _json_genes(annotations: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    genes: dict[str, dict[str, Any]] = {}
    for annot in annotations:
        feat = annot["feature"]
        if feat["region_type"] in JSON_REGIONS:
            region = JSON_REGIONS[feat["region_type"]]
            if region in genes:
                raise ValueError(f"a contig has two {feat['region_type']} annotations")
            genes[region] = {
                "chain": feat["chain"],
                "gene": feat["gene_name"],
                "start": annot["contig_match_start"],
                "end": annot["contig_match_end"],
            }
    return genes


def _json_chain(contig: Mapping[str, Any]) -> dict[str, Any]:
    """The chain dict of ``scirpy.io._io._read_10x_vdj_json`` for one contig
    (``cdr3``/``cdr3_aa`` are added later, vectorised)."""
    genes = _json_genes(contig["annotations"])
    chain: dict[str, Any] = {
        f"{r}_call": genes[r]["gene"] if r in genes else None for r in ("v", "d", "j", "c")
    }
    chain_types = [g["chain"] for g in genes.values()]
    if all(type(t) is str for t in chain_types):
        chain_type = chain_types[0] if len(set(chain_types)) == 1 else None
    else:
        chain_type = chain_types[0] if np.unique(chain_types).size == 1 else None
    chain["np1_length"] = None
    chain["np2_length"] = None
    if chain_type in VJ_LOCI and chain["v_call"] is not None and chain["j_call"] is not None:
        if chain["d_call"] is not None:
            raise ValueError(f"a {chain_type} contig has a D region")
        chain["np1_length"] = genes["j"]["start"] - genes["v"]["end"]
    elif (
        chain_type in VDJ_LOCI
        and chain["v_call"] is not None
        and chain["j_call"] is not None
        and chain["d_call"] is not None
    ):
        chain["np1_length"] = genes["d"]["start"] - genes["v"]["end"]
        chain["np2_length"] = genes["j"]["start"] - genes["d"]["end"]
    chain["locus"] = chain_type
    chain["junction"] = contig["cdr3_seq"]
    chain["junction_aa"] = contig["cdr3"]
    chain["umi_count"] = contig["umi_count"]
    chain["consensus_count"] = contig["read_count"]
    chain["productive"] = contig["productive"]
    chain["is_cell"] = contig["is_cell"]
    chain["high_confidence"] = contig["high_confidence"]
    chain["sequence"] = contig["sequence"]
    chain["sequence_aa"] = contig["aa_sequence"]
    chain["sequence_id"] = contig["contig_name"]
    for region in _CR6_REGIONS:
        if region in contig.keys():
            chain[region] = contig[region].get("nt_seq") if contig[region] else None
            chain[f"{region}_aa"] = contig[region].get("aa_seq") if contig[region] else None
    return chain


def read_10x_json(path: str | os.PathLike, *, filtered: bool = True) -> ad.AnnData:
    """Read a 10x ``all_contig_annotations.json[.gz]`` like ``scirpy.io.read_10x_vdj``.

    Parameters
    ----------
    path
        The JSON list of contigs (gzip recognised by content).
    filtered
        Keep only contigs with ``is_cell`` and ``high_confidence`` true.

    Returns
    -------
    AnnData
        As :func:`from_contigs`; cells in order of first appearance. Chain
        fields as scirpy: gene calls, ``locus`` and ``np1_length``/``np2_length``
        from the V/D/J/C annotations, ``junction`` (cdr3_seq), ``junction_aa``
        (cdr3), ``umi_count``, ``consensus_count`` (read_count), ``productive``,
        ``is_cell``, ``high_confidence``, ``sequence``, ``sequence_aa``,
        ``sequence_id`` (contig_name), Cell Ranger 6+ regions, ``cdr3``/``cdr3_aa``.

    Notes
    -----
    JSON is parsed into one Python object per contig whatever the reader, so
    fields are collected per contig; grouping and array building are vectorised.
    Where scirpy fails an ``assert`` (two annotations of one region, a D region
    on a VJ chain), this raises ``ValueError``.
    """
    with open_text(Path(path)) as fh:
        contigs = json.load(fh)
    if filtered:
        contigs = [c for c in contigs if c["is_cell"] and c["high_confidence"]]
    else:
        contigs = list(contigs)
    barcodes = np.fromiter((c["barcode"] for c in contigs), dtype=object, count=len(contigs))
    chains = [_json_chain(c) for c in contigs]
    key_sets = list(dict.fromkeys(frozenset(c) for c in chains))
    present = frozenset().union(*key_sets) if key_sets else _JSON_FIELDS
    table: dict[str, np.ndarray] = {"cell_id": barcodes}
    for field in sorted(present):
        table[field] = np.fromiter((c.get(field) for c in chains), dtype=object, count=len(chains))
    table["cdr3_aa"], table["cdr3"] = _cdr3_from_junction(table["junction_aa"], table["junction"])
    fields = None
    if len(key_sets) > 1:
        # contigs with and without Cell Ranger 6+ regions: ArrayBuilder orders the record
        # fields by first appearance, walking cells (first-appearance order) and their chains
        base = set(AIRR_REQUIRED) | {"cdr3", "cdr3_aa"}
        codes, _ = pd.factorize(barcodes, use_na_sentinel=False)
        fields = []
        for keys in dict.fromkeys(frozenset(chains[i]) for i in np.argsort(codes, kind="stable")):
            fields += [k for k in sorted(base | keys) if k not in fields]
    return from_contigs(pd.DataFrame(table), cell_id="cell_id", sort_cells=False, fields=fields)


#: Chain fields every JSON contig yields (besides the Cell Ranger 6+ regions).
_JSON_FIELDS = frozenset(
    {
        "v_call",
        "d_call",
        "j_call",
        "c_call",
        "np1_length",
        "np2_length",
        "locus",
        "junction",
        "junction_aa",
        "umi_count",
        "consensus_count",
        "productive",
        "is_cell",
        "high_confidence",
        "sequence",
        "sequence_aa",
        "sequence_id",
    }
)


def _infer_locus(df: pd.DataFrame) -> pd.Series:
    """cart-cohort's locus inference: the common first three letters (upper case) of
    the non-empty V/D/J/C calls (a ``TRAV…/DV…`` V call does not count); ``""`` when
    they disagree or there are none."""
    n = len(df)
    first = pd.Series([""] * n, index=df.index, dtype=object)
    consistent = pd.Series(True, index=df.index)
    for key in ("v_call", "d_call", "j_call", "c_call"):
        if key not in df.columns:
            continue
        g = df[key].astype(object)
        use = g.ne("")
        if key == "v_call":
            up = g.str.upper()
            use &= ~(up.str.contains("/DV", regex=False) & up.str.startswith("TRAV"))
        prefix = g.str[:3].str.upper()
        unset = first.eq("")
        first = first.where(~(use & unset), prefix)
        consistent &= ~use | prefix.eq(first)
    return first.where(consistent, "")


def read_airr_tsv(path: str | os.PathLike) -> ad.AnnData:
    """Read an AIRR rearrangement TSV like cart-cohort's pre-processing followed by
    ``scirpy.io.read_airr``.

    Pre-processing: gene calls, CIGARs and ``locus`` spelled ``NA``, ``N/A``,
    ``None``, ``nan``, ``NaN`` or ``null`` are blanked; an absent or empty
    ``locus`` is inferred from the gene calls (see :func:`_infer_locus`).
    Then, as ``airr.read_rearrangement``: boolean/integer/number fields of the
    schema are converted (invalid values become ``None``), ``*_start`` fields
    shift from 1- to 0-based (non-numeric ``*_start`` fields become ``None``),
    other fields stay text.

    Parameters
    ----------
    path
        The TSV (gzip recognised by content). Needs ``cell_id``.

    Returns
    -------
    AnnData
        As :func:`from_contigs`; cells in order of first appearance.
    """
    with open_text(Path(path)) as fh:
        df = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    df = df.fillna("")
    df.columns = [str(c) for c in df.columns]
    for col in df.columns:
        if col.endswith(("_call", "_cigar")) or col == "locus":
            df[col] = df[col].where(~df[col].isin(AIRR_NA_LIKE), "")
    if "locus" not in df.columns:
        df["locus"] = _infer_locus(df)
    else:
        empty = df["locus"].eq("")
        if empty.any():
            df.loc[empty, "locus"] = _infer_locus(df.loc[empty])
    if "cell_id" not in df.columns:
        raise KeyError("cell_id")
    table: dict[str, np.ndarray] = {}
    for col in df.columns:
        values = df[col].to_numpy(dtype=object)
        spec = schema_type(col)
        if spec == "boolean":
            values = map_unique(values, to_bool)
        elif spec == "integer":
            values = map_unique(values, to_int)
        elif spec == "number":
            values = map_unique(values, to_float)
        if col.endswith("_start"):
            values = map_unique(values, minus_one)
        table[col] = values
    return from_contigs(pd.DataFrame(table), cell_id="cell_id", sort_cells=False)
