"""Pseudobulk differential expression per state between response groups (pydeseq2).

The patient is the replicate: the cells of a patient's primary-timepoint samples
are summed per state, and DESeq2 compares responders with non-responders.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from ..genesets import gene_exclusions
from ._utils import skipped_frame
from .labels import response_labels

logger = logging.getLogger(__name__)

#: Columns of ``pseudobulk_de.tsv``.
DE_COLUMNS: tuple[str, ...] = (
    "state",
    "gene",
    "base_mean",
    "log2fc",
    "lfc_se",
    "stat",
    "pvalue",
    "padj",
    "n_responders",
    "n_nonresponders",
    "note",
)


@dataclass(frozen=True)
class CountsOnDisk:
    """Raw counts of a cohort file, summed a block of cells at a time, so the matrix is
    never held in memory (rule ``pseudobulk_de`` at cohort scale).

    Attributes
    ----------
    path
        ``results/cohort.h5mu``.
    key
        The CSR matrix in the file (``mod/gex/layers/counts``).
    rows, columns
        The cells (rows of the file, in the order of the ``obs`` they go with) and the
        genes (columns) used.
    block_rows
        Cells read at a time.
    """

    path: str
    key: str
    rows: np.ndarray
    columns: np.ndarray
    block_rows: int = 10_000

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.columns)

    def take(self, *, rows: np.ndarray | None = None,
             columns: np.ndarray | None = None) -> CountsOnDisk:
        """A subset (positions within this one's rows and columns)."""
        return replace(self, rows=self.rows if rows is None else self.rows[rows],
                       columns=self.columns if columns is None else self.columns[columns])

    def group_sums(self, indicator: Any) -> np.ndarray:
        """``indicator @ counts`` (groups x genes, float64) for ``indicator`` (groups x
        this one's rows)."""
        import h5py

        from ..h5csr import iter_csr

        order = np.argsort(self.rows, kind="mergesort")
        file_rows, ind = self.rows[order], indicator.tocsc()[:, order]
        out = np.zeros((indicator.shape[0], len(self.columns)))
        with h5py.File(self.path, "r") as f:
            start = 0
            for x in iter_csr(f[self.key], block_rows=self.block_rows):
                stop = start + x.shape[0]
                lo, hi = np.searchsorted(file_rows, [start, stop])
                if hi > lo:
                    block = x[file_rows[lo:hi] - start][:, self.columns]
                    out += np.asarray((ind[:, lo:hi] @ block).todense())
                start = stop
        return out


def pseudobulk_counts(
    counts: object,
    *,
    obs: pd.DataFrame,
    genes: Sequence[str],
    groupby: Sequence[str] = ("patient", "state"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum raw counts of cells per group.

    Parameters
    ----------
    counts
        Cells x genes matrix of raw counts (dense or scipy sparse).
    obs
        Per-cell table (rows aligned with ``counts``) with the ``groupby`` columns.
    genes
        Gene names (columns of ``counts``).
    groupby
        Columns whose value combinations form the groups.

    Returns
    -------
    sums, meta
        ``sums``: groups x genes (int64); ``meta``: the group keys and
        ``n_cells`` per group, same row order.
    """
    import scipy.sparse as sp

    keys = obs[list(groupby)].astype(str)
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    uniq = pd.MultiIndex.from_tuples(list(uniques), names=list(groupby))
    order = np.argsort(np.asarray([";".join(u) for u in uniq]), kind="mergesort")
    indicator = sp.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniq), len(codes))
    )
    if isinstance(counts, CountsOnDisk):
        sums = counts.group_sums(indicator)
    else:
        mat = counts if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts))
        sums = np.asarray((indicator @ mat).todense())
    n_cells = np.bincount(codes, minlength=len(uniq))
    rounded = np.rint(sums)
    if not np.allclose(sums, rounded, atol=1e-3):
        raise CartCohortError(
            "pseudobulk DE needs raw integer counts; the matrix used (layers['counts'] "
            "or X of the gex modality) holds non-integer values"
        )
    sums_df = pd.DataFrame(rounded.astype(np.int64)[order], columns=list(genes))
    meta = uniq.to_frame(index=False).iloc[order].reset_index(drop=True)
    meta["n_cells"] = n_cells[order]
    return sums_df, meta


def filter_by_expr(
    counts: pd.DataFrame, *, responder: pd.Series, min_count: int, min_total_count: int = 15
) -> np.ndarray:
    """Genes worth testing, by edgeR's ``filterByExpr`` rule (Chen, Lun & Smyth 2016).

    A gene is kept when its CPM reaches ``min_count / median library size`` (in millions)
    in at least as many pseudobulks as the smaller group has, and its total count is at
    least ``min_total_count``: it is then expressed at a countable level in a whole group.

    Parameters
    ----------
    counts
        Pseudobulks x genes.
    responder
        Group of each pseudobulk.
    min_count
        edgeR's ``min.count``.
    min_total_count
        edgeR's ``min.total.count``.

    Returns
    -------
    numpy.ndarray
        Boolean mask over the genes.
    """
    x = counts.to_numpy(dtype=float)
    lib = x.sum(axis=1)
    cutoff = min_count / (np.median(lib) / 1e6)
    cpm = x / lib[:, None] * 1e6
    n_min = int(min(responder.sum(), (~responder).sum()))
    large_n, min_prop = 10, 0.7
    if n_min > large_n:
        n_min = int(large_n + (n_min - large_n) * min_prop)
    keep = (cpm >= cutoff).sum(axis=0) >= max(n_min, 1)
    return keep & (x.sum(axis=0) >= min_total_count)


def _deseq_state(
    c: pd.DataFrame, responder: pd.Series, *, state: str, min_gene_count: int, n_cpus: int = 1
) -> pd.DataFrame:
    """DESeq2 of one state's pseudobulks (rows: patients), responders vs non-responders."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    c = c.loc[:, filter_by_expr(c, responder=responder, min_count=min_gene_count)]
    # Genes are fitted independently; one batch per process instead of pydeseq2's
    # 128-gene batches saves about a fifth of the time (results equal to 1e-6).
    inference = DefaultInference(
        n_cpus=n_cpus, batch_size=max(128, -(-c.shape[1] // max(n_cpus, 1)))
    )
    md = pd.DataFrame(
        {"group": np.where(responder, "responder", "non_responder")}, index=c.index
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(
            counts=c,
            metadata=md,
            design="~group",
            size_factors_fit_type="poscounts",
            refit_cooks=True,
            inference=inference,
            quiet=True,
        )
        dds.deseq2()
        ds = DeseqStats(
            dds, contrast=["group", "responder", "non_responder"], quiet=True, inference=inference
        )
        ds.summary()
    res = ds.results_df
    n1, n0 = int(responder.sum()), int((~responder).sum())
    logger.info("pseudobulk DE %s: %d vs %d patients, %d genes", state, n1, n0, c.shape[1])
    return pd.DataFrame(
        {
            "state": state,
            "gene": res.index.astype(str),
            "base_mean": res["baseMean"].to_numpy(),
            "log2fc": res["log2FoldChange"].to_numpy(),
            "lfc_se": res["lfcSE"].to_numpy(),
            "stat": res["stat"].to_numpy(),
            "pvalue": res["pvalue"].to_numpy(),
            "padj": res["padj"].to_numpy(),
            "n_responders": n1,
            "n_nonresponders": n0,
            "note": f"pydeseq2 ~group; {c.shape[1]} genes kept by filterByExpr "
            f"(min.count {min_gene_count})",
        },
        columns=list(DE_COLUMNS),
    )


def _labelled_cells(obs: pd.DataFrame, labels: pd.DataFrame, primary_timepoint: str) -> np.ndarray:
    """Mask of the QC-passing primary-timepoint cells of patients with a response label."""
    for col in ("patient", "state", "timepoint"):
        if col not in obs.columns:
            raise CartCohortError(f"cohort gex.obs has no '{col}' column; re-run rule annotate")
    sel = (obs["timepoint"].astype(str) == str(primary_timepoint)).to_numpy()
    if "qc_pass" in obs.columns:
        sel &= obs["qc_pass"].astype(bool).to_numpy()
    resp = labels["responder"].reindex(obs["patient"].astype(str)).to_numpy()
    sel &= pd.notna(resp)
    return sel


def pseudobulk_de_matrix(
    counts: Any,
    *,
    obs: pd.DataFrame,
    genes: Sequence[str],
    clinical: pd.DataFrame,
    primary_timepoint: str = "IP",
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    min_cells: int = 10,
    min_patients_per_group: int = 3,
    min_gene_count: int = 10,
    clinical_source: str = "clinical table",
    n_cpus: int = 1,
) -> pd.DataFrame:
    """Pseudobulk DESeq2 (pydeseq2) per state, responders vs non-responders.

    Cells of the primary timepoint are summed per patient x state (all of a
    patient's primary-timepoint samples pooled: the patient is the
    replicate). Per state, patients with fewer than ``min_cells`` cells are
    dropped; the state is skipped (noted) when fewer than
    ``min_patients_per_group`` patients per group remain. Genes with fewer than
    ``min_gene_count`` counts (edgeR ``filterByExpr``'s ``min.count``, scaled to each
    pseudobulk's CPM) in a whole group's worth of the state's pseudobulks are not
    tested. Design ``~ group``; log2 fold change = responders / non-responders;
    ``padj`` is DESeq2's BH within the state.

    Returns
    -------
    pandas.DataFrame
        :data:`DE_COLUMNS`, sorted by state, p-value and gene; states that were
        skipped have one row with ``gene`` NA and the reason in ``note``.
    """
    import scipy.sparse as sp

    labels = response_labels(
        clinical, responders=responders, excluded=excluded, source=clinical_source
    )
    sel = _labelled_cells(obs, labels, primary_timepoint)
    if not sel.any():
        return skipped_frame(
            DE_COLUMNS, state="(all)", note=f"skipped: no labelled {primary_timepoint} cells"
        )
    if isinstance(counts, CountsOnDisk):
        mat = counts.take(rows=np.flatnonzero(sel))
    elif sp.issparse(counts):
        mat = counts[np.flatnonzero(sel)]
    else:
        mat = np.asarray(counts)[sel]
    sums, meta = pseudobulk_counts(mat, obs=obs.loc[sel], genes=genes)
    meta["responder"] = labels["responder"].reindex(meta["patient"]).astype(bool).to_numpy()
    rows: list[pd.DataFrame] = []
    for state in sorted(meta["state"].unique()):
        idx = np.flatnonzero(
            (meta["state"] == state).to_numpy() & (meta["n_cells"] >= min_cells).to_numpy()
        )
        m = meta.iloc[idx]
        n1, n0 = int(m["responder"].sum()), int((~m["responder"]).sum())
        if min(n1, n0) < min_patients_per_group:
            note = (
                f"skipped: {n1} responder and {n0} non-responder pseudobulks with >= "
                f"{min_cells} cells (< {min_patients_per_group} per group)"
            )
            rows.append(
                skipped_frame(
                    DE_COLUMNS, state=state, n_responders=n1, n_nonresponders=n0, note=note
                )
            )
            continue
        c = sums.iloc[idx]
        c.index = m["patient"].to_numpy()
        rows.append(
            _deseq_state(
                c, m["responder"], state=state, min_gene_count=min_gene_count, n_cpus=n_cpus
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out = out.sort_values(["state", "pvalue", "gene"], kind="mergesort", na_position="last")
    return out.reset_index(drop=True)


def _counts_of(gex: Any, counts_path: str | None) -> Any:
    """The raw counts :func:`pseudobulk_de` sums: on disk, ``layers['counts']`` or ``X``."""
    in_layers = "counts" in gex.layers
    if counts_path is not None:
        counts = CountsOnDisk(str(counts_path), "mod/gex/layers/counts",
                              rows=np.arange(gex.n_obs), columns=np.arange(gex.n_vars))
    else:
        counts = gex.layers["counts"] if in_layers else gex.X
    source = (f"{counts_path}, read in blocks" if counts_path is not None
              else "layers['counts']" if in_layers else "X")
    logger.info("gex: %d cells x %d genes (counts from %s)", gex.n_obs, gex.n_vars, source)
    return counts


def pseudobulk_de(
    gex: Any,
    *,
    clinical: pd.DataFrame,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    min_cells_pseudobulk: int,
    min_patients_per_group: int,
    min_gene_count: int,
    exclude_genes: Sequence[str] = (),
    clinical_source: str = "clinical table",
    n_cpus: int = 1,
    counts_path: str | None = None,
) -> pd.DataFrame:
    """Pseudobulk DE of the cohort's GEX modality (rule ``pseudobulk_de``).

    The genes kept out of the HVGs are kept out of the DE too
    (:func:`cartcohort.genesets.gene_exclusions`): TR/IG V(D)J and constant genes (a
    clonotype, not a response, sets their level), mitochondrial and ribosomal genes, the
    CAR feature and ``exclude_genes``; their number per reason is logged.

    Parameters
    ----------
    gex
        AnnData of the cohort's ``gex`` modality: raw counts in
        ``layers['counts']`` (else ``X``), ``obs`` with ``patient``, ``state``,
        ``timepoint`` (and ``qc_pass``).
    clinical
        Clinical table (``patient``, ``response``).
    primary_timepoint, responders, min_patients_per_group, min_gene_count
        As in :func:`pseudobulk_de_matrix` (config keys of the same names).
    exclude_responses
        Response codes left out (``excluded`` of :func:`pseudobulk_de_matrix`).
    min_cells_pseudobulk
        Fewer cells of a state than this: the patient's pseudobulk is dropped
        (``min_cells`` of :func:`pseudobulk_de_matrix`).
    exclude_genes
        Further gene symbols left out (config ``integrate.exclude_genes``: the same list as
        the HVG selection).
    clinical_source
        File name for messages.
    n_cpus
        Processes of pydeseq2 (the rule's threads); results do not depend on it.
    counts_path
        ``results/cohort.h5mu`` whose ``gex`` counts are summed a block of cells at a
        time (:class:`CountsOnDisk`; ``gex`` then needs only ``obs`` and ``var``, in the
        file's order); None: the counts of ``gex`` in memory.

    Returns
    -------
    pandas.DataFrame
        ``pseudobulk_de.tsv``: :data:`DE_COLUMNS` (see :func:`pseudobulk_de_matrix`).
    """
    counts = _counts_of(gex, counts_path)
    reason = gene_exclusions(gex.var, extra=exclude_genes)
    keep = (reason == "").to_numpy()
    logger.info("%d genes left out of the DE (%s); %d tested at most", int((~keep).sum()),
                ", ".join(f"{k} {v}" for k, v in reason[~keep].value_counts().items()),
                int(keep.sum()))
    columns = np.flatnonzero(keep)
    de = pseudobulk_de_matrix(
        counts.take(columns=columns) if isinstance(counts, CountsOnDisk) else counts[:, columns],
        obs=gex.obs,
        genes=list(gex.var_names[keep]),
        clinical=clinical,
        primary_timepoint=primary_timepoint,
        responders=responders,
        excluded=exclude_responses,
        min_cells=min_cells_pseudobulk,
        min_patients_per_group=min_patients_per_group,
        min_gene_count=min_gene_count,
        clinical_source=clinical_source,
        n_cpus=n_cpus,
    )
    logger.info("pseudobulk DE: %d rows", len(de))
    return de
