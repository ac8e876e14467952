"""Read the TCR contigs of one library as scirpy AIRR AnnData (``obsm['airr']``).

Contigs are read by :mod:`cartcohort.io.airr` (no scirpy import), BCR chains
are dropped, and cells are matched to the GEX barcodes of the same library.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import CartCohortError, InputError, Problem
from ..sheets import BCR_LOCI, VdjKind, inspect_vdj, match_barcodes
from . import airr as airr_reader
from .locate import parsing, raise_issues, vdj_input

logger = logging.getLogger(__name__)

_KIND_WORDS = {
    "airr": "an AIRR rearrangement TSV",
    "10x_json": "10x all_contig_annotations JSON",
    "10x_csv": "a 10x contig table",
}


def _drop_bcr(adata: ad.AnnData) -> tuple[ad.AnnData, int]:
    import awkward as ak

    arr = adata.obsm["airr"]
    flat = ak.flatten(arr["locus"], axis=1)
    layout = flat.layout.content if flat.layout.is_option else flat.layout
    if layout.parameter("__array__") == "string":
        hit = np.zeros(len(flat), dtype=bool)
        for locus in BCR_LOCI:
            hit |= ak.to_numpy(ak.fill_none(flat == locus, False))
    else:
        # no text locus at all (every locus missing) or mixed types: compare values
        hit = np.array([v in BCR_LOCI for v in ak.to_list(flat)], dtype=bool)
    is_bcr = ak.unflatten(hit, ak.num(arr, axis=1))
    n_bcr = int(hit.sum())
    if n_bcr == 0:
        return adata, 0
    kept = arr[~is_bcr]
    has_chain = ak.num(kept, axis=1).to_numpy() > 0
    out = adata[has_chain].copy()
    out.obsm["airr"] = kept[has_chain]
    return out, n_bcr


def _read_contigs(kind: VdjKind, p: Path) -> ad.AnnData:
    """Check and read a located contig file; raise when it holds no TCR cell."""
    _, issues = inspect_vdj(kind, p)
    raise_issues(p, issues)
    fix = (
        "the file is corrupt, truncated or edited by hand; copy it again from the Cell "
        "Ranger vdj_t outs/ folder (or fix the value named above)"
    )
    with parsing(p, _KIND_WORDS[kind], fix):
        if kind == "airr":
            # NA-like gene calls blanked, missing ``locus`` inferred from the gene calls
            adata = airr_reader.read_airr_tsv(p)
        elif kind == "10x_json":
            adata = airr_reader.read_10x_json(p, filtered=True)
        else:
            adata = airr_reader.read_10x_csv(p, filtered=True)
    if adata.n_obs == 0:
        raise InputError(
            [
                Problem(
                    str(p),
                    "",
                    "has no contig of a cell with high confidence (is_cell and "
                    "high_confidence true), so no TCR cell",
                    "give the contig file of a successful Cell Ranger vdj run (check its "
                    "web_summary), or leave 'vdj' empty for this library",
                )
            ]
        )
    return adata


def _match_gex(
    adata: ad.AnnData, barcodes: Sequence[str], p: Path, stats: dict[str, int]
) -> ad.AnnData:
    """TCR cells with a GEX cell, renamed to the GEX spelling, in GEX order."""
    gex_bc = [str(b) for b in barcodes]
    mapping = match_barcodes(adata.obs_names, gex_bc)
    order = {b: i for i, b in enumerate(gex_bc)}
    keep = [b for b in adata.obs_names if b in mapping]
    targets = [mapping[b] for b in keep]
    if len(set(targets)) != len(targets):
        raise CartCohortError(
            f"{p}: several TCR barcodes map to the same GEX barcode (with and without "
            "a '-1' suffix). Fix: use one barcode spelling in the contig file."
        )
    stats["n_tcr_without_gex"] = int(adata.n_obs - len(keep))
    adata = adata[keep].copy()
    adata.obs_names = pd.Index(targets, dtype=object)
    idx = np.argsort([order[t] for t in targets], kind="mergesort")
    return adata[idx].copy()


def read_tcr(
    path: str | os.PathLike,
    *,
    sample: str,
    barcodes: pd.Index | Sequence[str] | None = None,
) -> ad.AnnData:
    """Read the TCR contigs of one library as scirpy AIRR AnnData.

    Parameters
    ----------
    path
        10x ``filtered_contig_annotations.csv[.gz]`` (or ``all_contig_…``; only
        ``is_cell`` and ``high_confidence`` contigs are kept),
        ``all_contig_annotations.json[.gz]``, or AIRR rearrangement ``.tsv[.gz]``
        (``locus`` inferred from the gene calls when absent).
    sample
        Sample id; cells are named ``<sample>_<barcode>``.
    barcodes
        GEX cell barcodes (without the sample prefix). When given, only TCR
        cells with a GEX cell are kept and they take the GEX spelling of the
        barcode (a ``-1`` suffix missing on one side is tolerated).

    Returns
    -------
    AnnData
        scirpy AIRR AnnData (``obsm['airr']``), BCR chains (IGH/IGK/IGL)
        removed, obs ``barcode``; ``uns['cartcohort_load']`` holds
        ``n_tcr_barcodes`` (cells with a TCR chain), ``n_bcr_contigs_dropped``
        and, when ``barcodes`` is given, ``n_tcr_without_gex``.
    """
    kind, p = vdj_input(path)
    adata = _read_contigs(kind, p)
    adata.obs_names = adata.obs_names.astype(str)
    adata, n_bcr = _drop_bcr(adata)
    if n_bcr:
        logger.info("%s: dropped %d BCR contig(s) (IGH/IGK/IGL)", p, n_bcr)
    stats: dict[str, int] = {"n_tcr_barcodes": int(adata.n_obs), "n_bcr_contigs_dropped": n_bcr}
    if barcodes is not None:
        adata = _match_gex(adata, barcodes, p, stats)
    else:
        idx = np.argsort(adata.obs_names.to_numpy(dtype=str), kind="mergesort")
        adata = adata[idx].copy()
    adata.obs["barcode"] = adata.obs_names.to_numpy(dtype=object)
    adata.obs_names = pd.Index([f"{sample}_{b}" for b in adata.obs_names], dtype=object)
    adata.uns["cartcohort_load"] = stats
    logger.info("%s: %d cells with TCR chains kept", p, adata.n_obs)
    return adata
