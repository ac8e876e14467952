"""Virus-specific clones from a user-supplied epitope database in VDJdb's export layout.

The database is a local file exported from VDJdb (https://vdjdb.cdr3.net, "Export" of a
search: one chain per row with ``complex.id, Gene, CDR3, V, J, Species, Epitope, Epitope
gene, Epitope species``; rows with the same non-zero ``complex.id`` are the two chains of
one paired receptor). Nothing is downloaded. Cells are matched with scirpy's
``ir_query`` / ``ir_query_annotate`` (CDR3 amino-acid identity; by default a match on
either arm, since most VDJdb entries are single beta chains). A clone takes the antigen
species most of its matched cells have. Per product: the share of its TCR cells in
clones specific for each antigen species (CMV, EBV, influenza, ...) and how many of
those clones are seen again after infusion.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CartCohortError

log = logging.getLogger(__name__)

VDJDB_COLUMNS: tuple[str, ...] = (
    "complex.id", "Gene", "CDR3", "V", "J", "Species", "Epitope", "Epitope gene",
    "Epitope species",
)
CLONE_COLUMNS: list[str] = ["patient", "clone_id", "n_cells", "n_matched_cells",
                            "antigen_species", "epitope", "epitope_gene"]
PRODUCT_COLUMNS: list[str] = ["patient", "sample", "antigen_species", "n_clones",
                              "n_cells", "share_tcr_cells", "n_clones_detected_later",
                              "frac_clones_detected_later"]


def read_vdjdb_export(path: str | os.PathLike, *, species: str = "HomoSapiens"):  # noqa: ANN201
    """The entries of a VDJdb export file as a scirpy AIRR AnnData (one entry per row of
    ``obs``, with ``antigen_species``, ``epitope``, ``epitope_gene``).

    Parameters
    ----------
    path
        VDJdb export TSV (:data:`VDJDB_COLUMNS`).
    species
        Entries of this ``Species`` are kept.

    Raises
    ------
    CartCohortError
        Missing columns, or no entry of ``species``.
    """
    import scirpy as ir
    from scirpy.io import AirrCell

    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in VDJDB_COLUMNS if c not in df.columns]
    if missing:
        raise CartCohortError(
            f"{path}: column(s) {missing} missing; kinetics.epitope_db must be a VDJdb "
            f"export TSV with the columns {list(VDJDB_COLUMNS)}. Fix: export the search "
            "from vdjdb.cdr3.net as TSV, or set kinetics.epitope_db: null")
    df = df[(df["Species"] == species) & df["Gene"].isin(["TRA", "TRB"]) & (df["CDR3"] != "")]
    if df.empty:
        raise CartCohortError(f"{path}: no TRA/TRB entry of species {species}. Fix: export "
                              f"{species} entries or set kinetics.epitope_db: null")
    key = np.where(df["complex.id"].isin(["", "0"]), "row" + df.index.astype(str),
                   "cx" + df["complex.id"])
    cells = []
    for k, grp in df.groupby(key, sort=True):
        cell = AirrCell(cell_id=str(k))
        for _, r in grp.iterrows():
            chain = AirrCell.empty_chain_dict()
            chain.update({"locus": r["Gene"], "junction_aa": r["CDR3"], "v_call": r["V"],
                          "j_call": r["J"], "consensus_count": 0, "productive": True})
            cell.add_chain(chain)
        first = grp.iloc[0]
        cell["antigen_species"] = first["Epitope species"]
        cell["epitope"] = first["Epitope"]
        cell["epitope_gene"] = first["Epitope gene"]
        cells.append(cell)
    ref = ir.io.from_airr_cells(cells)
    ref.uns["DB"] = {"name": "epitope_db"}
    ir.pp.index_chains(ref)
    return ref


def _cdr3_by_arm(adata: Any) -> dict[str, set[str]]:
    """CDR3 amino-acid sequences of each receptor arm (VJ: TRA/TRG, VDJ: TRB/TRD)."""
    import awkward as ak

    chains = adata.obsm["airr"]
    loci = np.asarray(ak.to_numpy(ak.flatten(chains["locus"])), dtype=object)
    cdr3 = np.asarray(ak.to_numpy(ak.flatten(chains["junction_aa"])), dtype=object)
    out: dict[str, set[str]] = {"VJ": set(), "VDJ": set()}
    for locus, seq in zip(loci, cdr3, strict=True):
        if isinstance(seq, str) and seq:
            out["VJ" if str(locus) in ("TRA", "TRG", "IGK", "IGL") else "VDJ"].add(seq)
    return out


def _shared_arms(airr: Any, reference: Any) -> list[str]:
    """Receptor arms with at least one CDR3 found both in ``airr`` and in ``reference``."""
    a, b = _cdr3_by_arm(airr), _cdr3_by_arm(reference)
    return [arm for arm in ("VJ", "VDJ") if a[arm] & b[arm]]


def match_epitopes(airr: Any, reference: Any, *, receptor_arms: str = "any") -> pd.DataFrame:
    """Per cell of ``airr``: the antigen species, epitope and gene of its database match.

    scirpy ``ir_dist`` then ``ir_query`` (CDR3 aa identity, ``receptor_arms``) and
    ``ir_query_annotate`` (strategy ``most-frequent``: a cell matching several entries
    takes the most frequent value).

    Returns
    -------
    DataFrame
        Indexed like ``airr.obs``: ``antigen_species, epitope, epitope_gene`` (NA: no match).
    """
    import scirpy as ir

    cols = ["antigen_species", "epitope", "epitope_gene"]
    out = pd.DataFrame(index=airr.obs_names, columns=cols, dtype=object)
    shared = _shared_arms(airr, reference)
    if not shared:
        return out
    if len(shared) == 1 and receptor_arms == "any":
        # scirpy's ir_query fails on an arm without any shared CDR3 (empty distance
        # matrix); "any" then means the one arm that has shared sequences
        receptor_arms = shared[0]
    if "chain_indices" not in airr.obsm:
        ir.pp.index_chains(airr)
    ir.pp.ir_dist(airr, reference, metric="identity", sequence="aa")
    ir.tl.ir_query(airr, reference, metric="identity", sequence="aa",
                   receptor_arms=receptor_arms, dual_ir="any", n_jobs=1)
    ann = ir.tl.ir_query_annotate(airr, reference, metric="identity", sequence="aa",
                                  include_ref_cols=cols, strategy="most-frequent",
                                  inplace=False)
    for c in cols:
        if c in ann.columns:
            out[c] = ann[c].reindex(airr.obs_names).replace({"nan": np.nan})
    return out


def epitope_tables(
    obs: pd.DataFrame, matches: pd.DataFrame, *, primary_timepoint: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Virus-specific clones, and their share and persistence per product.

    Parameters
    ----------
    obs
        ``airr.obs`` (``patient, sample, timepoint, timepoint_day, clone_id``).
    matches
        :func:`match_epitopes` of the same cells.
    primary_timepoint
        Timepoint of the infusion product.

    Returns
    -------
    tuple of DataFrame
        Clones with a match (:data:`CLONE_COLUMNS`) and, per product sample x antigen
        species, :data:`PRODUCT_COLUMNS` (clones detected later: seen in a library of the
        patient with a later ``timepoint_day``).
    """
    t = obs[["patient", "sample", "timepoint", "timepoint_day", "clone_id"]].join(matches)
    t = t.dropna(subset=["clone_id"])
    size = t.groupby(["patient", "clone_id"], observed=True).size().rename("n_cells")
    hit = t.dropna(subset=["antigen_species"])
    if hit.empty:
        return pd.DataFrame(columns=CLONE_COLUMNS), pd.DataFrame(columns=PRODUCT_COLUMNS)
    top = (hit.groupby(["patient", "clone_id", "antigen_species", "epitope", "epitope_gene"],
                       dropna=False).size().rename("n_matched_cells").reset_index()
           .sort_values(["patient", "clone_id", "n_matched_cells", "antigen_species"],
                        ascending=[True, True, False, True], kind="mergesort")
           .groupby(["patient", "clone_id"]).head(1))
    clones = top.join(size, on=["patient", "clone_id"]).reindex(columns=CLONE_COLUMNS)
    spec = clones.set_index(["patient", "clone_id"])["antigen_species"]
    t["antigen"] = [spec.get((p, c)) for p, c in zip(t["patient"], t["clone_id"], strict=True)]
    rows = []
    prod = t[t["timepoint"].astype(str) == str(primary_timepoint)]
    for (patient, sample), g in prod.groupby(["patient", "sample"], sort=True):
        day0 = pd.to_numeric(g["timepoint_day"], errors="coerce").max()
        later = t[(t["patient"] == patient)
                  & (pd.to_numeric(t["timepoint_day"], errors="coerce") > day0)]
        for antigen, a in g.dropna(subset=["antigen"]).groupby("antigen", sort=True):
            ids = set(a["clone_id"])
            seen = ids & set(later["clone_id"])
            rows.append({"patient": patient, "sample": sample, "antigen_species": antigen,
                         "n_clones": len(ids), "n_cells": len(a),
                         "share_tcr_cells": len(a) / len(g),
                         "n_clones_detected_later": len(seen) if len(later) else np.nan,
                         "frac_clones_detected_later": (len(seen) / len(ids)
                                                        if len(later) else np.nan)})
    return clones.reset_index(drop=True), pd.DataFrame(rows, columns=PRODUCT_COLUMNS)


def epitope_db_tables(
    airr: Any, *, epitope_db: str | os.PathLike, primary_timepoint: str,
    receptor_arms: str = "any",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Virus-specific clones of the cohort (rule ``epitopes``): :func:`read_vdjdb_export`,
    :func:`match_epitopes` and :func:`epitope_tables` on ``results/clonotypes/airr.h5ad``.

    Parameters
    ----------
    airr
        The cohort's AIRR AnnData (scirpy), ``obs`` with ``clone_id``.
    epitope_db
        ``kinetics.epitope_db``: the VDJdb export file.
    primary_timepoint
        Timepoint of the infusion product.
    receptor_arms
        Arms that must match (``any``: either chain).

    Returns
    -------
    tuple of DataFrame
        Clones with a match and the per-product table of :func:`epitope_tables`.
    """
    ref = read_vdjdb_export(epitope_db)
    matches = match_epitopes(airr, ref, receptor_arms=receptor_arms)
    log.info("%d of %d cells match %s", int(matches["antigen_species"].notna().sum()),
             airr.n_obs, epitope_db)
    return epitope_tables(airr.obs, matches, primary_timepoint=primary_timepoint)
