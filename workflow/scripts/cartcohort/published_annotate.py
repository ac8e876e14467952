"""Our own annotation beside the authors' labels (published entry point, rule
``published_annotation``; config ``published.annotate``).

When the authors' object (``.h5ad``, or the ``gex`` modality of an ``.h5mu``) holds raw
integer counts - ``layers['counts']``, else ``X``, else ``raw.X``: the first whose values
are all non-negative integers - the full annotation of rule ``annotate``
(:func:`cartcohort.tl.annotate.annotate`: lineage ``cd4_cd8``, states, CAR+ where a CAR
feature of config ``car_features`` is in the genes) runs on those counts. The counts are
normalised and reduced as rule ``merge_samples`` does (:func:`cartcohort.pp.prepare_cohort`,
``integrate.n_top_genes``/``n_pcs``/``scale``), the kNN graph and Leiden clusters are those
of the unintegrated PCA (integration method ``none``, ``integrate.n_neighbors``, the first of
``integrate.leiden_resolutions``: no batch correction), and the calls are not clone-aware
(no AIRR object). No threshold is tuned to the authors' labels.

Agreement (``results/tables/published_agreement.tsv``): for each call the label map gives
(``cd4_cd8``, ``state``, ``car_positive``) and each author label mapping to a value, the
distribution of our calls over its cells, the number and fraction of cells where our call
equals the mapped one; and one ``(all)`` row per call with Cohen's kappa and the adjusted
Rand index between the mapped and our calls, over the cells whose label maps to a value
(a label that stays a state of its own has no mapped state). Our ``unassigned`` or missing
calls count as disagreement; a call we do not make at all (``car_positive`` without a CAR
feature) is not compared.

The features are computed from the authors' mapped labels (the paper's analysis) unless
``published.features_from: ours``; then from our calls (:attr:`PublishedAnnotation.cells`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .errors import InputError, Problem
from .io.gex import check_counts
from .published_agreement import ALL, agreement_summary

logger = logging.getLogger(__name__)

#: Columns of ``published_agreement.tsv``.
AGREEMENT_COLUMNS: tuple[str, ...] = (
    "call", "author_label", "mapped", "n_cells", "n_agree", "agreement", "our_calls",
    "cohen_kappa", "adjusted_rand",
)
#: Calls compared (those the label map may give).
CALLS: tuple[str, ...] = ("cd4_cd8", "state", "car_positive")


@dataclass
class PublishedAnnotation:
    """What :func:`published_annotation` returns.

    Attributes
    ----------
    cells
        The imported cells table with our calls in place of the mapped ones (``cd4_cd8``,
        ``state``, ``car_positive`` and the annotation's other columns), ``author_label``
        and the clones kept.
    agreement
        :data:`AGREEMENT_COLUMNS` (module docstring).
    """

    cells: pd.DataFrame
    agreement: pd.DataFrame


def _is_counts(matrix: Any) -> bool:
    """Non-empty, numeric, and raw counts by the loaders' own check (:func:`check_counts`)."""
    values = np.asarray(matrix.data if sparse.issparse(matrix) else matrix)
    if values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return False
    return check_counts(values, what="") is None


def read_counts(path: str | os.PathLike) -> ad.AnnData:
    """The raw integer counts of the authors' object, with its obs and var.

    Parameters
    ----------
    path
        ``.h5ad`` or ``.h5mu`` (its ``gex`` modality).

    Returns
    -------
    AnnData
        ``X`` the counts (CSR float32): ``layers['counts']``, else ``X``, else ``raw.X``
        (the first of integer values); var names made unique.

    Raises
    ------
    InputError
        A text table, or an object without integer counts.
    """
    p = Path(path)
    name = p.name.lower()
    fix = ("give the object with the raw UMI counts (X, a 'counts' layer or raw.X), or "
           "set published.annotate: false")
    if not name.endswith((".h5ad", ".h5mu")):
        raise InputError([Problem(str(p), "", "is a table: it holds no counts, and "
                                  "published.annotate is true", fix)])
    if name.endswith(".h5mu"):
        import mudata as md

        adata = md.read_h5mu(p).mod["gex"]
    else:
        adata = ad.read_h5ad(p)
    tried = []
    candidates = [("layers['counts']", adata.layers.get("counts")), ("X", adata.X)]
    if adata.raw is not None:
        candidates.append(("raw.X", adata.raw.X))
    for where, matrix in candidates:
        if matrix is None:
            continue
        if _is_counts(matrix):
            var = adata.raw.var if where == "raw.X" else adata.var
            out = ad.AnnData(X=sparse.csr_matrix(matrix, dtype=np.float32),
                             obs=pd.DataFrame(index=adata.obs_names.astype(str)),
                             var=pd.DataFrame(index=var.index.astype(str)))
            out.var_names_make_unique()
            logger.info("%s: raw counts from %s (%d cells x %d genes)", p, where,
                        out.n_obs, out.n_vars)
            return out
        tried.append(where)
    raise InputError([Problem(str(p), ", ".join(tried) or "X",
                              "holds no raw integer counts (non-integer or negative values: "
                              "normalised data?) and published.annotate is true", fix)])


def _gex(counts: ad.AnnData, cells: pd.DataFrame, *, n_top_genes: int, n_pcs: int,
         scale: bool, n_neighbors: int, leiden_resolution: float, seed: int) -> ad.AnnData:
    """The annotation's input: log-normalised X, counts layer, kNN graph, Leiden."""
    from .pp import prepare_cohort
    from .tl.integrate.core import integrate_prepared

    obs = cells.set_index("cell")[["sample", "patient", "timepoint", "timepoint_day",
                                   "compartment", "batch", "sort"]].copy()
    for col in ("batch", "sort"):
        obs[col] = obs[col].astype("string").fillna("").astype(str)
    counts = ad.AnnData(X=counts.X, obs=obs, var=counts.var)
    prep = prepare_cohort(counts, batch_key="batch", n_top_genes=n_top_genes, n_pcs=n_pcs,
                          scale=scale, seed=seed)
    integ = integrate_prepared(prep, method="none", batch_key="batch",
                               n_neighbors=n_neighbors, leiden_resolutions=[leiden_resolution],
                               seed=seed)
    return ad.AnnData(X=prep.X, obs=integ.obs, var=prep.var,
                      layers={"counts": prep.layers["counts"]}, obsm=dict(integ.obsm),
                      obsp=dict(integ.obsp))


def _matched(counts: ad.AnnData, obs_ids: pd.Series, cells: pd.DataFrame,
             source: str) -> ad.AnnData:
    """The counts of the cells of the cells table, in its order."""
    counts.obs_names = pd.Index(obs_ids.astype(str).to_numpy())
    missing = pd.Index(cells["cell"]).difference(counts.obs_names)
    if len(missing):
        raise InputError([Problem(source, "obs", f"{len(missing)} cell(s) of the cells table "
                                  f"are not in the object (first: {list(missing[:5])})",
                                  "give the object the cell table was read from")])
    return counts[cells["cell"].to_numpy()].copy()


def published_annotation(
    counts_path: str | os.PathLike,
    cells: pd.DataFrame,
    signatures: Any,
    *,
    cell_column: str,
    sample_column: str,
    car_features: Sequence[str],
    annotate: Mapping[str, Any],
    n_top_genes: int,
    n_pcs: int,
    scale: bool,
    n_neighbors: int,
    leiden_resolution: float,
    seed: int,
) -> PublishedAnnotation:
    """Our annotation on the authors' counts, and its agreement with their labels.

    Parameters
    ----------
    counts_path
        Config ``published.cells`` (an ``.h5ad`` or ``.h5mu``).
    cells
        The imported cells table (rule ``import_cells``: ids, libraries, the mapped calls,
        ``author_label``).
    signatures
        The marker programs (:func:`cartcohort.tl.annotate.load_signatures`).
    cell_column, sample_column
        As in :func:`cartcohort.published.import_published` (to name the object's cells).
    car_features
        Config ``car_features``.
    annotate
        The settings of :func:`cartcohort.tl.annotate.annotate` (config ``annotate``
        without the signature file).
    n_top_genes, n_pcs, scale, n_neighbors, leiden_resolution, seed
        Normalisation, PCA, kNN graph and Leiden (config ``integrate.*``, ``seed``).

    Returns
    -------
    PublishedAnnotation
        Our calls per cell and the agreement table.
    """
    from .published import cell_ids, read_cell_table
    from .tl.annotate import annotate as run_annotation

    counts = read_counts(counts_path)
    obs = read_cell_table(counts_path, cell_column=cell_column)
    ids = cell_ids(obs["cell"], obs[sample_column].str.strip())
    counts = _matched(counts, ids, cells, str(counts_path))
    gex = _gex(counts, cells, n_top_genes=n_top_genes, n_pcs=n_pcs, scale=scale,
               n_neighbors=n_neighbors, leiden_resolution=leiden_resolution, seed=seed)
    result = run_annotation(gex, airr=None, signatures=signatures, car_features=car_features,
                            **annotate)
    ours = result.cells.set_index("cell").loc[cells["cell"]]
    out = cells.copy()
    for col in ours.columns:
        if col not in ("sample", "patient", "timepoint", "timepoint_day", "compartment",
                       "batch", "sort", "clone_id", "clone_size"):
            out[col] = ours[col].to_numpy()
    table = agreement_table(cells, out)
    logger.info("agreement with the authors' labels: %s", agreement_summary(table))
    return PublishedAnnotation(cells=out, agreement=table)


def _distribution(values: pd.Series) -> str:
    counts = values.fillna("NA").astype(str).value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="mergesort")
    return "; ".join(f"{k}={v}" for k, v in counts.items())


def agreement_table(mapped: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """The agreement of our calls with the authors' mapped labels (module docstring).

    Parameters
    ----------
    mapped
        Cells with the authors' mapped calls and ``author_label``.
    ours
        The same cells, same order, with our calls.

    Returns
    -------
    pandas.DataFrame
        :data:`AGREEMENT_COLUMNS`: per call, a row per author label that maps to a value
        (sorted by label), then the ``(all)`` row with kappa and adjusted Rand.
    """
    from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

    rows = []
    for call in CALLS:
        if call not in mapped or call not in ours:
            continue
        m = mapped[call].astype("string")
        if call == "state":  # own states of labels without a counterpart: nothing mapped
            from .published import MAP_STATES

            m = m.where(m.isin(MAP_STATES))
        o = ours[call].astype("string").reset_index(drop=True)
        m, labels = m.reset_index(drop=True), mapped["author_label"].reset_index(drop=True)
        known = m.notna()
        if not known.any() or o.isna().all():  # nothing mapped, or our call not made
            continue
        agree = (o == m).fillna(False) & known
        for label in sorted(labels[known].unique()):
            sel = known & (labels == label)
            rows.append({"call": call, "author_label": label, "mapped": m[sel].iloc[0],
                         "n_cells": int(sel.sum()), "n_agree": int(agree[sel].sum()),
                         "agreement": float(agree[sel].mean()),
                         "our_calls": _distribution(o[sel])})
        x, y = m[known].astype(str), o[known].fillna("NA").astype(str)
        rows.append({"call": call, "author_label": ALL, "mapped": "",
                     "n_cells": int(known.sum()), "n_agree": int(agree.sum()),
                     "agreement": float(agree[known].mean()), "our_calls": _distribution(o[known]),
                     "cohen_kappa": float(cohen_kappa_score(x, y)),
                     "adjusted_rand": float(adjusted_rand_score(x, y))})
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))
