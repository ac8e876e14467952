"""Give the libraries of a cohort the same genes, in the same order.

Samples mapped to different references (or Cell Ranger versions) differ in
their genes; they are matched by Ensembl id when every sample has real ids,
else by symbol, and joined as an intersection or a union. Either way the
analysis differs from one on a single reference, so :func:`gene_join_warnings`
reports how many genes were dropped (or zero-filled) and which libraries lack them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError
from ..sheets import warning_row
from .gex import GENE_EXPRESSION, make_unique

logger = logging.getLogger(__name__)

REPORT_COLUMNS = ["gene_id", "symbol", "n_samples", "n_samples_present", "action"]


def _has_ids(adata: ad.AnnData) -> bool:
    if "gene_ids" not in adata.var:
        return False
    ids = adata.var["gene_ids"].astype(str)
    if (ids == "").any() or ids.isna().any() or ids.duplicated().any():
        return False
    return bool((ids.to_numpy() != adata.var_names.to_numpy()).mean() > 0.5)


def _keys(a: ad.AnnData, *, by_id: bool) -> list[str]:
    """The gene keys of one sample: its gene ids, or its symbols."""
    return a.var["gene_ids"].astype(str).tolist() if by_id else [str(v) for v in a.var_names]


def _car_keys(a: ad.AnnData, keys: list[str]) -> set[str]:
    """The keys of the CAR features of one sample."""
    if "is_car" not in a.var:
        return set()
    return {k for k, car in zip(keys, a.var["is_car"].astype(bool)) if car}


def _lacking_detail(
    libraries: Sequence[str],
    lacking: Sequence[int],
    absent: list[str],
    symbol: dict[str, str],
    *,
    versions: bool,
) -> str:
    """Which libraries lack how many genes, a few of the genes, and whether gene ids
    differ only in their version suffix."""
    who = [f"{lib} ({n})" for lib, n in zip(libraries, lacking) if n]
    shown = ", ".join(who[:5]) + (f" and {len(who) - 5} more" if len(who) > 5 else "")
    genes = ", ".join(symbol[k] if symbol[k] == k else f"{symbol[k]} ({k})" for k in absent[:3])
    text = f"; libraries lacking genes: {shown}; e.g. {genes}"
    if versions:
        text += (
            "; some gene ids differ only in their version suffix (ENSG...16 vs ENSG...17): "
            "the libraries were mapped to different Ensembl releases"
        )
    return text


def gene_join_warnings(
    adatas: Sequence[ad.AnnData],
    *,
    join: Literal["intersect", "union"],
    libraries: Sequence[str],
) -> list[dict[str, Any]]:
    """The warning row of joining libraries that do not have the same genes.

    Genes are matched as :func:`harmonise_genes` matches them; CAR features
    (``var['is_car']``) are left out of the counts (always kept; a library without
    them is reported by the load step).

    Parameters
    ----------
    adatas
        The libraries, before :func:`harmonise_genes`.
    join
        ``load.gene_join``.
    libraries
        A name (sample id) for each of ``adatas``.

    Returns
    -------
    list of dict
        No row when every library has the same genes; else one cohort-wide
        :func:`~cartcohort.sheets.warning_row` (step ``merge``):
        ``genes_dropped_by_intersect`` or ``genes_zero_filled_by_union``, whose
        ``count`` is the number of genes not in every library.
    """
    if len(adatas) < 2:
        return []
    by_id = all(_has_ids(a) for a in adatas)
    keys = [_keys(a, by_id=by_id) for a in adatas]
    car = set().union(*(_car_keys(a, k) for a, k in zip(adatas, keys)))
    sets = [set(k) - car for k in keys]
    union, common = set().union(*sets), set.intersection(*sets)
    if len(union) == len(common):
        return []
    symbol: dict[str, str] = {}
    for a, ks in zip(adatas, keys):
        for k, sym in zip(ks, a.var_names):
            symbol.setdefault(k, str(sym))
    absent = [k for k in symbol if k in union and k not in common]  # first-seen order
    lacking = [len(union - s) for s in sets]
    matched = "gene id" if by_id else "gene symbol (not every library has gene ids)"
    versions = by_id and len({re.sub(r"\.\d+$", "", k) for k in absent}) < len(absent)
    what = (
        f"the {len(adatas)} libraries were not all mapped to the same reference: "
        f"{len(absent)} of {len(union)} genes (matched by {matched}) are missing from "
        "at least one library and were "
        + (
            f"dropped (load.gene_join: intersect), {len(common)} genes are analysed"
            if join == "intersect"
            else "kept with zero counts where missing, so they look unexpressed there "
            "(load.gene_join: union)"
        )
        + _lacking_detail(libraries, lacking, absent, symbol, versions=versions)
    )
    other = (
        "set load.gene_join: union to keep every gene, with zero counts in the libraries "
        "that lack it"
        if join == "intersect"
        else "set load.gene_join: intersect to analyse only the genes every library has"
    )
    check = "genes_dropped_by_intersect" if join == "intersect" else "genes_zero_filled_by_union"
    return [
        warning_row(
            step="merge",
            check=check,
            count=len(absent),
            detail=what,
            action="map every library to the same reference (same Cell Ranger reference "
            f"and version) and re-run, or {other}",
        )
    ]


def _gene_keys(
    adatas: Sequence[ad.AnnData], *, by_id: bool
) -> tuple[list[list[str]], dict[str, dict[str, Any]], dict[str, int]]:
    """Each sample's gene keys; per key (first-seen order) its symbol, id, CAR flag and
    feature type, and the number of samples holding it."""
    keys_per: list[list[str]] = []
    info: dict[str, dict[str, Any]] = {}
    count: dict[str, int] = {}
    for a in adatas:
        if by_id:
            keys = a.var["gene_ids"].astype(str).tolist()
        else:
            keys = [str(v) for v in a.var_names]
        keys_per.append(keys)
        is_car = a.var["is_car"].astype(bool).tolist() if "is_car" in a.var else [False] * a.n_vars
        ftypes = (
            a.var["feature_types"].astype(str).tolist()
            if "feature_types" in a.var
            else [GENE_EXPRESSION] * a.n_vars
        )
        ids = a.var["gene_ids"].astype(str).tolist() if "gene_ids" in a.var else list(a.var_names)
        for k, sym, gid, car, ftype in zip(keys, a.var_names, ids, is_car, ftypes):
            count[k] = count.get(k, 0) + 1
            if k not in info:
                info[k] = {
                    "symbol": str(sym),
                    "gene_id": gid,
                    "is_car": car,
                    "feature_types": ftype,
                }
            elif car:
                info[k]["is_car"] = True
    return keys_per, info, count


def _project(
    a: ad.AnnData, keys: list[str], kept: list[str], kept_set: set[str], var: pd.DataFrame
) -> ad.AnnData:
    """Sample ``a`` on the harmonised genes (zero where it lacks one)."""
    col_of = {k: j for j, k in enumerate(kept)}
    src = [i for i, k in enumerate(keys) if k in kept_set]
    dst = [col_of[keys[i]] for i in src]
    P = sp.csr_matrix(
        (np.ones(len(src), dtype=np.float32), (src, dst)), shape=(a.n_vars, len(kept))
    )
    X = sp.csr_matrix(sp.csr_matrix(a.X, dtype=np.float32) @ P, dtype=np.float32)
    X.sort_indices()
    return ad.AnnData(X=X, obs=a.obs.copy(), var=var.copy(), obsm=dict(a.obsm), uns=dict(a.uns))


def harmonise_genes(
    adatas: Sequence[ad.AnnData],
    *,
    join: Literal["intersect", "union"] = "intersect",
) -> tuple[list[ad.AnnData], pd.DataFrame]:
    """Give several samples the same genes, in the same order.

    Genes are matched by Ensembl id (``var['gene_ids']``) when every sample
    has real ids, else by symbol. ``intersect`` keeps genes present in every
    sample; ``union`` keeps all, with zero counts where a gene is absent. CAR
    features (``var['is_car']``) are always kept (zero-filled where absent) so
    CAR detection does not depend on the join. Symbols of the result are made
    unique (``make_unique`` style).

    Parameters
    ----------
    adatas
        AnnData objects with raw counts (``var`` as written by :func:`read_gex`).
    join
        ``intersect`` or ``union``.

    Returns
    -------
    adatas, report
        New AnnData objects (same obs, harmonised var, CSR ``X``; layers are
        not carried) and one row per gene not present in every sample:
        ``gene_id, symbol, n_samples, n_samples_present, action`` (``dropped``
        or ``zero_filled``).
    """
    if join not in ("intersect", "union"):
        raise CartCohortError(f"harmonise_genes: join must be 'intersect' or 'union', not {join!r}")
    if not adatas:
        return [], pd.DataFrame(columns=REPORT_COLUMNS)
    by_id = all(_has_ids(a) for a in adatas)
    keys_per, info, count = _gene_keys(adatas, by_id=by_id)
    n = len(adatas)
    ordered = list(info)  # first-seen order: genes of sample 1, then new ones
    if join == "intersect":
        kept = [k for k in ordered if count[k] == n or info[k]["is_car"]]
    else:
        kept = ordered
    kept_set = set(kept)
    report = pd.DataFrame(
        [
            {
                "gene_id": info[k]["gene_id"],
                "symbol": info[k]["symbol"],
                "n_samples": n,
                "n_samples_present": count[k],
                "action": "zero_filled" if k in kept_set else "dropped",
            }
            for k in ordered
            if count[k] < n
        ],
        columns=REPORT_COLUMNS,
    )
    symbols = [info[k]["symbol"] for k in kept] if by_id else list(kept)
    var = pd.DataFrame(
        {
            "gene_ids": [info[k]["gene_id"] for k in kept],
            "feature_types": [info[k]["feature_types"] for k in kept],
            "is_car": np.array([bool(info[k]["is_car"]) for k in kept], dtype=bool),
        },
        index=make_unique(symbols),
    )
    out = [_project(a, keys, kept, kept_set, var) for a, keys in zip(adatas, keys_per)]
    logger.info(
        "harmonised %d samples by %s (%s): %d genes kept, %d dropped, %d zero-filled",
        n,
        "gene id" if by_id else "symbol",
        join,
        len(kept),
        int((report["action"] == "dropped").sum()),
        int((report["action"] == "zero_filled").sum()),
    )
    return out, report
