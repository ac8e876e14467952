"""Rule ``merge_samples`` out of core: ``results/integrate/merged.h5ad`` written library
by library, so that the cohort's count matrix is never held in memory.

1. **Headers**: the ``var`` and ``obs`` of every included library (not their matrices)
   give the gene join (:func:`cartcohort.io.harmonise_genes`, ``load.gene_join``, with
   its warning row) and the merged ``obs`` of the QC-passing cells.
2. **Write**: one library at a time, its QC-passing counts are put on the harmonised
   genes, log-normalised (:func:`~cartcohort.pp.log_normalise`) and appended to ``X``
   and ``layers['counts']`` on disk (CSR, 64-bit ``indptr``); the per-batch sums that
   the HVG selection needs are taken on the way (:mod:`cartcohort.pp.hvg`).
3. **HVGs**: :func:`~cartcohort.pp.hvg.seurat_v3_clips` from those sums, one more read
   of the counts for the clipped sums, scanpy's ranking; ``seurat`` (on the
   log-normalised data) from the sums of pass 2 where ``seurat_v3`` cannot be used, as
   :func:`~cartcohort.pp.select_hvgs` does.
4. **PCA** of the HVGs: :mod:`cartcohort.pp.pca` (Gram matrix, eigh), two reads of
   ``X``.

Peak memory: one library, the ``obs`` of the cohort, the HVG x HVG Gram matrix and the
scores. The file has the layout of :func:`~cartcohort.pp.prepare_cohort`'s output.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError
from ..genesets import gene_exclusions
from . import hvg as _hvg
from .merge import (
    HVG_SPANS,
    GeneJoin,
    HvgFlavor,
    _qc_included_samples,
    _qc_passing,
    log_normalise,
    preprocessing_record,
    stringify_obs,
)
from .. import engine
from ..h5csr import append_csr, create_csr
from .pca import GramAccumulator, GramPCA, gram_pca

logger = logging.getLogger(__name__)

CHUNK_CELLS = 10_000
"""Cells read back from disk at a time by the HVG and PCA passes."""


class _Library(NamedTuple):
    sample: str
    path: str
    rows: np.ndarray  # the QC-passing cells' rows in the library's gex
    projection: sp.csr_matrix  # library genes x harmonised genes


class StreamedMerge(NamedTuple):
    """What :func:`merge_samples` returns (the cohort itself is on disk)."""

    #: Cells and genes of the written ``merged.h5ad``.
    shape: tuple[int, int]
    #: Warning rows of the merge (``results/integrate/merge_warnings.tsv``), as
    #: :func:`cartcohort.pp.concat_samples`.
    warnings: pd.DataFrame


# --------------------------------------------------------------------------- headers


def _read_header(path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``var`` and ``obs`` of the ``gex`` modality of one ``.h5mu`` file."""
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        if "mod/gex" not in f:
            raise CartCohortError(
                f"{path}: has no 'gex' modality. Fix: re-run load_sample/qc_sample for "
                "this sample."
            )
        return read_elem(f["mod/gex/var"]), read_elem(f["mod/gex/obs"])


def _var_key(var: pd.DataFrame) -> str:
    """A digest of a gene table: libraries with equal tables share one projection."""
    h = hashlib.sha1(pd.util.hash_pandas_object(var.astype(str), index=True).to_numpy())
    h.update("\t".join(map(str, var.columns)).encode())
    return h.hexdigest()


def _gene_plan(
    vars_: Sequence[pd.DataFrame], samples: Sequence[str], *, join: GeneJoin
) -> tuple[pd.DataFrame, list[sp.csr_matrix], pd.DataFrame]:
    """Harmonised ``var``, each library's projection onto it and the warning rows.

    Libraries with the same gene table share one stub (so their tables are held once);
    the projection is :func:`~cartcohort.io.harmonise_genes` applied to the identity
    matrix of each distinct table.
    """
    from ..io import gene_join_warnings, harmonise_genes
    from ..sheets import WARNING_COLUMNS

    keys = [_var_key(v) for v in vars_]
    stubs: dict[str, ad.AnnData] = {}
    for k, v in zip(keys, vars_, strict=True):
        if k not in stubs:
            stubs[k] = ad.AnnData(X=sp.identity(len(v), dtype=np.float32, format="csr"),
                                  var=v)
    warnings = gene_join_warnings([stubs[k] for k in keys], join=join,
                                  libraries=list(samples)) if len(stubs) > 1 else []
    harmonised, _ = harmonise_genes(list(stubs.values()), join=join)
    proj = {k: sp.csr_matrix(h.X, dtype=np.float32) for k, h in zip(stubs, harmonised)}
    var = harmonised[0].var.copy()
    if not (~var["is_car"].astype(bool)).any():
        raise CartCohortError(
            "the samples share no gene (besides the CAR features), so they cannot be "
            "integrated. Fix: map all samples to the same reference, or set "
            "load.gene_join: union"
        )
    return var, [proj[k] for k in keys], pd.DataFrame(warnings, columns=list(WARNING_COLUMNS))


def _libraries(
    items: Sequence[tuple[str, str]], *, join: GeneJoin
) -> tuple[list[_Library], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The libraries' QC-passing rows and projections, the merged ``obs`` (as
    :func:`~cartcohort.pp.load_qc_cells`: ``obs`` columns joined like ``join``
    inner), the harmonised ``var`` and the warning rows."""
    vars_, obs_parts, rows = [], [], []
    for sample, path in items:
        var, obs = _read_header(path)
        if "qc_pass" not in obs:
            raise CartCohortError(
                f"{path}: gex.obs has no 'qc_pass' column. Fix: produce this "
                "file with the qc_sample rule"
            )
        keep = obs["qc_pass"].astype(bool).to_numpy()
        if not keep.any():
            raise CartCohortError(
                f"{path}: no QC-passing cell although the QC summary keeps "
                f"sample '{sample}'. Fix: re-run qc_summary or exclude the sample "
                "(config exclude_samples)"
            )
        vars_.append(var)
        rows.append(np.flatnonzero(keep))
        # subset as an AnnData, as load_qc_cells does: unused categories are dropped
        obs_parts.append(ad.AnnData(obs=obs)[keep].copy())
    var, projections, warnings = _gene_plan(vars_, [s for s, _ in items], join=join)
    del vars_
    obs = ad.concat(obs_parts, join="inner", merge=None).obs
    if not obs.index.is_unique:
        raise CartCohortError(
            "cell ids are not unique across samples; ids must be '<sample>_<barcode>'. "
            "Fix: re-run load_sample"
        )
    libs = [_Library(s, p, r, m) for (s, p), r, m in zip(items, rows, projections,
                                                          strict=True)]
    return libs, obs, var, warnings


# --------------------------------------------------------------------------- on disk


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """Row bounds of the blocks of :meth:`_Source.blocks`."""
    step = CHUNK_CELLS
    for a in range(0, n, step):
        yield a, min(a + step, n)


class _Source(NamedTuple):
    """The matrices written by pass 1 (file closed), read back by the engine."""

    path: str
    n_obs: int
    n_genes: int
    n_workers: int

    def blocks(self, key: str) -> list:
        return engine.row_blocks(self.path, key, n_rows=self.n_obs, n_cols=self.n_genes,
                                 block_rows=CHUNK_CELLS)


class _PassOne(NamedTuple):
    """Per-batch sums of every gene taken while writing (the HVG selection keeps the
    eligible genes' entries; no column subset of a library is copied)."""

    counts: dict[str, _hvg.GeneMoments]
    logs: dict[str, _hvg.GeneMoments]
    nnz: dict[str, np.ndarray]


def _add_batch_sums(acc: _PassOne, counts: sp.csr_matrix, x: sp.csr_matrix,
                    labels: np.ndarray) -> None:
    for b in np.unique(labels):
        sel = labels == b
        whole = bool(sel.all())  # a library is usually one batch: no copy
        m = _hvg.GeneMoments.of(counts if whole else counts[sel])
        e, nz = _hvg.expm1_moments(x if whole else x[sel])
        if b in acc.counts:
            m, e, nz = acc.counts[b].combine(m), acc.logs[b].combine(e), acc.nnz[b] + nz
        acc.counts[b], acc.logs[b], acc.nnz[b] = m, e, nz


def _write_matrices(f: h5py.File, libs: Sequence[_Library], obs: pd.DataFrame,
                    *, n_genes: int, labels: np.ndarray) -> _PassOne:
    """Pass 1: ``X`` and the counts (under ``_counts``) of every library, in order."""
    gx, gc = create_csr(f, "X", n_genes), create_csr(f, "_counts", n_genes)
    acc = _PassOne({}, {}, {})
    start = 0
    for lib in libs:
        part = _qc_passing(lib.path, lib.sample)
        stop = start + part.n_obs
        if not part.obs_names.equals(obs.index[start:stop]):
            raise CartCohortError(f"{lib.path}: its QC-passing cells changed while it was "
                                  "read. Fix: do not rewrite results/qc during the merge")
        counts = sp.csr_matrix(part.X @ lib.projection, dtype=np.float32)
        counts.sort_indices()
        del part
        x = log_normalise(counts)
        append_csr(gc, counts)
        append_csr(gx, x)
        _add_batch_sums(acc, counts, x, labels[start:stop])
        logger.info("%s: %d cells written (%d of %d)", lib.sample, stop - start, stop,
                    len(obs))
        start = stop
    return acc


# --------------------------------------------------------------------------- HVGs


def _pooled(stats: dict[str, Any], combine: Any) -> dict[str, Any]:
    """All batches as one (``batch_key`` absent or with one value)."""
    values = list(stats.values())
    total = values[0]
    for v in values[1:]:
        total = combine(total, v)
    return {"all": total}


def _clipped_block(x: sp.csr_matrix, labels: np.ndarray,
                   clip: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-batch clipped sums of one row block of the counts (a task of the engine)."""
    out = {}
    for batch in np.unique(labels):
        sel = labels == batch
        out[batch] = _hvg.clipped_sums(x if sel.all() else x[sel], clip=clip[batch])
    return out


def _seurat_v3(src: _Source, moments: dict[str, _hvg.GeneMoments], labels: np.ndarray,
               *, eligible: np.ndarray, var_names: pd.Index, n_top: int,
               notes: list[str]) -> tuple[pd.DataFrame | None, float | None]:
    """seurat_v3 with each span of :data:`HVG_SPANS` in turn; ``None`` if all fail."""
    for span in HVG_SPANS:
        try:
            clips = _hvg.seurat_v3_clips(moments, span=span)
            break
        except ValueError as err:
            notes.append(f"seurat_v3 LOESS with span {span} failed ({err!s})")
            logger.warning("HVG: %s", notes[-1])
    else:
        return None, None
    n_genes = len(eligible)
    full = {}  # clip values on every gene (0 for the ineligible ones, dropped below)
    for batch, (_, clip) in clips.items():
        full[batch] = np.zeros(n_genes)
        full[batch][eligible] = clip
    sums = {b: (np.zeros(n_genes), np.zeros(n_genes)) for b in moments}
    bounds = list(_chunks(src.n_obs))
    block_labels = [labels[a:b] for a, b in bounds]
    block_clips = [{k: full[k] for k in np.unique(lab)} for lab in block_labels]
    parts = engine.map_ordered(_clipped_block, src.blocks("_counts"), block_labels,
                               block_clips, n_workers=src.n_workers)
    for part in parts:  # in block order: the same sums on any scheduler
        for batch, (s, ss) in part.items():
            sums[batch][0][:] += s
            sums[batch][1][:] += ss
    sums = {b: (s[eligible], ss[eligible]) for b, (s, ss) in sums.items()}
    return _hvg.seurat_v3_table(moments, clips, sums, var_names=var_names,
                                n_top_genes=n_top), span


def _streamed_hvgs(src: _Source, acc: _PassOne, labels: np.ndarray, *, batched: bool,
                   var: pd.DataFrame, exclude: pd.Series, eligible: np.ndarray,
                   n_top_genes: int, flavor: HvgFlavor) -> tuple[pd.DataFrame, dict]:
    """:func:`~cartcohort.pp.select_hvgs` from the sums of pass 1 (and one more read of
    the counts for ``seurat_v3``): same flavours, spans, fall-back and table."""
    if flavor not in ("seurat_v3", "seurat"):
        raise CartCohortError(f"unknown HVG flavour {flavor!r}; use 'seurat_v3' or 'seurat'")
    n_top = int(min(n_top_genes, eligible.sum()))
    names = var.index[eligible]
    counts = {b: _hvg.GeneMoments(m.n, m.s1[eligible], m.s2[eligible])
              for b, m in acc.counts.items()}
    logs = {b: _hvg.GeneMoments(m.n, m.s1[eligible], m.s2[eligible])
            for b, m in acc.logs.items()}
    nnz = {b: v[eligible] for b, v in acc.nnz.items()}
    if not batched:
        counts = _pooled(counts, lambda a, b: a.combine(b))
        logs = _pooled(logs, lambda a, b: a.combine(b))
        nnz = _pooled(nnz, lambda a, b: a + b)
        labels = np.full(len(labels), "all")
    notes: list[str] = []
    res, span = None, None
    if flavor == "seurat_v3" and importlib.util.find_spec("skmisc") is None:
        notes.append("scikit-misc (skmisc) cannot be imported")
    elif flavor == "seurat_v3":
        res, span = _seurat_v3(src, counts, labels, eligible=eligible, var_names=names,
                               n_top=n_top, notes=notes)
    if res is None:
        if flavor == "seurat_v3":
            logger.warning("HVG: using flavour 'seurat' on log-normalised data because %s",
                           "; ".join(notes))
        flavor, span = "seurat", None
        res = _hvg.seurat_from_moments(logs, nnz, var_names=names, n_top_genes=n_top)
    out = pd.DataFrame(index=var.index)
    out["highly_variable"] = False
    out.loc[names, "highly_variable"] = res["highly_variable"].astype(bool).to_numpy()
    out["hvg_rank"] = np.nan
    if "highly_variable_rank" in res:
        out.loc[names, "hvg_rank"] = res["highly_variable_rank"].astype(float).to_numpy()
    out["hvg_excluded"] = exclude.reindex(var.index).fillna("").astype(str).to_numpy()
    logger.info("selected %d HVGs (flavour %s%s, batched %s); %d genes excluded beforehand",
                int(out["highly_variable"].sum()), flavor, f", span {span}" if span else "",
                batched, int((~eligible).sum()))
    return out, {"flavor": flavor, "span": span, "note": "; ".join(notes)}


# --------------------------------------------------------------------------- PCA, output


def _gram_block(x: sp.csr_matrix, hv: np.ndarray) -> GramAccumulator:
    """Sums and Gram matrix of the HVGs of one row block of ``X`` (a task of the engine)."""
    acc = GramAccumulator(int(hv.sum()))
    acc.add(x[:, hv])
    return acc


def _scores_block(x: sp.csr_matrix, hv: np.ndarray, pca: GramPCA) -> np.ndarray:
    """PCA scores of one row block of ``X`` (a task of the engine)."""
    return pca.scores(x[:, hv])


def _streamed_pca(src: _Source, hv: np.ndarray, *, n_pcs: int,
                  scale: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, loadings (HVGs x PCs) and variance ratios: two reads of ``X``."""
    n_obs = src.n_obs
    n_blocks = len(list(_chunks(n_obs)))
    acc = GramAccumulator(int(hv.sum()))
    for part in engine.map_ordered(_gram_block, src.blocks("X"), [hv] * n_blocks,
                                   n_workers=src.n_workers):
        acc.combine(part)  # in block order: the same matrix on any scheduler
    pca = gram_pca(acc, n_pcs=n_pcs, scale=scale)
    del acc
    n_comps = pca.components.shape[1]
    if n_comps < n_pcs:
        logger.warning("n_pcs=%d capped at %d (cells x HVGs = %s)", n_pcs, n_comps,
                       (n_obs, int(hv.sum())))
    scores = np.empty((n_obs, n_comps), dtype=np.float32)
    parts = engine.map_ordered(_scores_block, src.blocks("X"), [hv] * n_blocks,
                               [pca] * n_blocks, n_workers=src.n_workers)
    for (a, b), part in zip(_chunks(n_obs), parts, strict=True):
        scores[a:b] = part
    return scores, pca.components.astype(np.float32), pca.variance_ratio.astype(np.float32)


def _write_annotations(f: h5py.File, shell: ad.AnnData) -> None:
    """Everything but ``X`` and the counts, written as ``write_h5ad`` writes them; then
    the counts are moved to ``layers/counts``."""
    from anndata.io import write_elem

    shell.strings_to_categoricals()
    for key in ("obs", "var"):
        write_elem(f, key, getattr(shell, key))
    for key in ("obsm", "varm", "obsp", "varp", "uns"):
        write_elem(f, key, dict(getattr(shell, key)))
    write_elem(f, "layers", {})
    f.move("_counts", "layers/counts")
    f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})


def _hvg_labels(obs: pd.DataFrame, batch_key: str) -> tuple[np.ndarray, bool]:
    """Batch label of every cell and whether HVGs are ranked per batch (as
    :func:`~cartcohort.pp.prepare_cohort`: the key is in ``obs`` with >= 2 values)."""
    if batch_key not in obs:
        return np.full(len(obs), "all"), False
    return obs[batch_key].astype(str).to_numpy(), obs[batch_key].nunique() >= 2


def _merge_into(path: Path, libs: Sequence[_Library], obs: pd.DataFrame,
                var: pd.DataFrame, *, settings: dict[str, Any], n_workers: int) -> None:
    """Passes 1-4 into the file ``path``: the matrices written (pass 1), the file
    closed and read back by the engine (HVGs, PCA), then the annotations added."""
    exclude = gene_exclusions(var, extra=settings["exclude_genes"])
    eligible = (exclude.reindex(var.index).fillna("") == "").to_numpy()
    if eligible.sum() < 2:
        raise CartCohortError(
            "fewer than 2 genes are eligible for HVG selection after excluding "
            "V(D)J/mito/ribo/CAR/config genes. Fix: check integrate.exclude_genes"
        )
    labels, batched = _hvg_labels(obs, settings["batch_key"])
    with h5py.File(path, "w") as f:
        acc = _write_matrices(f, libs, obs, n_genes=len(var), labels=labels)
    src = _Source(str(path), len(obs), len(var), n_workers)
    hvg, hvg_info = _streamed_hvgs(
        src, acc, labels, batched=batched, var=var, exclude=exclude, eligible=eligible,
        n_top_genes=settings["n_top_genes"], flavor=settings["hvg_flavor"],
    )
    var = var.copy()
    for col in hvg.columns:
        var[col] = hvg[col].to_numpy()
    hv = var["highly_variable"].to_numpy(dtype=bool)
    scores, loadings, ratio = _streamed_pca(src, hv, n_pcs=settings["n_pcs"],
                                            scale=settings["scale"])
    logger.info("PCA: %d PCs on %d HVGs, %.1f%% variance explained", scores.shape[1],
                int(hv.sum()), 100 * float(ratio.sum()))
    shell = ad.AnnData(obs=obs, var=var)
    shell.obsm["X_pca"] = scores
    pcs = np.zeros((len(var), loadings.shape[1]), dtype=np.float32)
    pcs[hv] = loadings
    shell.varm["PCs"] = pcs
    shell.uns["pca"] = {"variance_ratio": ratio}
    shell.uns["preprocessing"] = preprocessing_record(
        batch_key=settings["batch_key"], n_top_genes=settings["n_top_genes"],
        n_hvg=int(hv.sum()), hvg_info=hvg_info, n_excluded=int((~eligible).sum()),
        exclude_genes=settings["exclude_genes"], scale=settings["scale"],
        n_pcs=scores.shape[1], seed=settings["seed"],
    )
    stringify_obs(shell)
    with h5py.File(path, "r+") as f:
        _write_annotations(f, shell)


def merge_samples(
    paths: Sequence[str | os.PathLike],
    *,
    out_path: str | os.PathLike,
    samples: Sequence[str],
    qc_table: pd.DataFrame | None,
    qc_table_path: str,
    gene_join: GeneJoin = "intersect",
    batch_key: str = "batch",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    exclude_genes: Sequence[str] = (),
    scale: bool = True,
    seed: int = 0,
    hvg_flavor: HvgFlavor = "seurat_v3",
    dask_scheduler: str | None = None,
    threads: int = 1,
) -> StreamedMerge:
    """Step of rule ``merge_samples``: the QC-passing cells of the included samples
    merged, log-normalised, HVGs and PCA, written to ``out_path`` library by library.

    The file equals :func:`~cartcohort.pp.prepare_cohort` of
    :func:`~cartcohort.pp.load_qc_cells` (same ``X``, counts, ``obs``, ``var``, HVGs
    and ranks; PCA up to float rounding, see :mod:`cartcohort.pp.pca`), without holding
    the count matrix (see the module docstring for the passes and the memory).

    Parameters
    ----------
    paths
        ``results/qc/{sample}.h5mu`` of every cohort sample, in the order of ``samples``.
    out_path
        ``results/integrate/merged.h5ad``; written as ``<out_path>.partial`` next to
        it and renamed when complete (removed on error).
    samples
        Sample id of each path.
    qc_table
        The QC summary (``qc_samples.tsv``); samples it excludes are skipped.
    qc_table_path
        Its path, for error messages.
    gene_join
        ``load.gene_join``: ``intersect`` or ``union`` (see
        :func:`~cartcohort.pp.load_qc_cells`).
    batch_key, n_top_genes, n_pcs, exclude_genes, scale
        ``integrate.*`` settings, as :func:`~cartcohort.pp.prepare_cohort`.
    seed
        Master seed (``seed``), recorded (the eigendecomposition is deterministic).
    hvg_flavor
        ``seurat_v3`` (default) or ``seurat``, as :func:`~cartcohort.pp.select_hvgs`.
    dask_scheduler
        ``dask.scheduler``: where the HVG and PCA passes run
        (:func:`cartcohort.engine.dask_scheduler`); the result does not depend on it.
    threads
        Threads of the local scheduler (the rule's ``threads``).

    Returns
    -------
    StreamedMerge
        The shape of the written cohort and the rows of
        ``integrate/merge_warnings.tsv``.
    """
    todo = dict(zip(samples, map(str, paths), strict=True))
    keep = _qc_included_samples(list(todo), qc_table, qc_table_path=qc_table_path)
    libs, obs, var, warnings = _libraries([(s, todo[s]) for s in keep], join=gene_join)
    logger.info("merging %d cells x %d genes from %d samples (gene join %s)",
                len(obs), len(var), len(libs), gene_join)
    out = Path(out_path)
    partial = out.with_name(out.name + ".partial")
    settings = {"batch_key": batch_key, "n_top_genes": n_top_genes, "n_pcs": n_pcs,
                "exclude_genes": list(exclude_genes), "scale": scale, "seed": seed,
                "hvg_flavor": hvg_flavor}
    try:
        with engine.dask_scheduler(dask_scheduler, threads=threads) as n_workers:
            _merge_into(partial, libs, obs, var, settings=settings, n_workers=n_workers)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return StreamedMerge((len(obs), len(var)), warnings)
