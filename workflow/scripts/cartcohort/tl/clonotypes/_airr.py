"""Cell-level AIRR assembly: the QC-passing TCR cells of every library in one AnnData.

Each library's ``airr`` modality is restricted to the cells that pass QC and given
the patient and sample metadata of ``gex.obs``; the libraries' AIRR arrays, read by
different readers, are then merged into one cohort AnnData with chain indices and
chain QC computed by scirpy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import CartCohortError
from ..._utils import load_scirpy

log = logging.getLogger(__name__)

#: obs columns copied from ``gex.obs`` onto the AIRR cells.
META_COLUMNS: tuple[str, ...] = ("patient", "sample", "timepoint", "timepoint_day")


def read_qc_airr(path: str | Path, *, sample: str) -> Any | None:
    """Read the ``airr`` modality and ``gex.obs`` of one QC'd library.

    Only the AIRR modality and the GEX ``obs`` table are read (not the count
    matrix), which keeps memory low for large cohorts.

    Parameters
    ----------
    path
        ``results/qc/{sample}.h5mu``.
    sample
        Sample id (for messages).

    Returns
    -------
    AnnData or None
        AIRR AnnData of the QC-passing cells with TCR (see :func:`select_qc_cells`),
        or ``None`` when the library has no ``airr`` modality.
    """
    import anndata as ad
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if "mod" not in f or "gex" not in f["mod"]:
            raise CartCohortError(
                f"{path}: no 'gex' modality. Fix: re-run the qc_sample rule for {sample}."
            )
        gex_obs = ad.io.read_elem(f["mod/gex/obs"])
        if "airr" not in f["mod"]:
            log.info("%s: no airr modality (library without TCR); skipped", sample)
            return None
        g = f["mod/airr"]
        airr = ad.AnnData(
            obs=ad.io.read_elem(g["obs"]),
            obsm={k: ad.io.read_elem(g["obsm"][k]) for k in g.get("obsm", {}).keys()},
            uns=ad.io.read_elem(g["uns"]) if "uns" in g else {},
        )
    return select_qc_cells(airr, gex_obs=gex_obs, sample=sample, source=str(path))


def select_qc_cells(
    airr: Any, *, gex_obs: pd.DataFrame, sample: str, source: str = "<memory>"
) -> Any:
    """Keep the QC-passing cells of one library's AIRR data and add metadata.

    Parameters
    ----------
    airr
        scirpy AIRR AnnData of one library (obs names ``<sample>_<barcode>``).
    gex_obs
        ``gex.obs`` of the same library with ``qc_pass`` and the
        :data:`META_COLUMNS`.
    sample
        Sample id.
    source
        File name used in error messages.

    Returns
    -------
    AnnData
        Copy of ``airr`` restricted to cells with ``qc_pass`` True, with obs
        columns ``patient, sample, timepoint, timepoint_day``.
    """
    missing = [c for c in ("qc_pass", *META_COLUMNS) if c not in gex_obs.columns]
    if missing:
        raise CartCohortError(
            f"{source}: gex.obs lacks column(s) {missing}. Fix: re-run qc_sample for {sample} "
            "with the current workflow version."
        )
    unknown = airr.obs_names.difference(gex_obs.index)
    if len(unknown) and len(unknown) == airr.n_obs:
        raise CartCohortError(
            f"{source}: none of the {airr.n_obs} airr cells is a gex cell (e.g. "
            f"{unknown[0]!r} vs {gex_obs.index[0] if len(gex_obs) else None!r}); the airr obs "
            "names must be '<sample>_<barcode>' of GEX cells. Fix: re-run load_sample and "
            f"qc_sample for {sample}."
        )
    if len(unknown):
        log.warning("%s: %d of %d TCR barcodes are not GEX cells (e.g. %s); left out",
                    sample, len(unknown), airr.n_obs, unknown[0])
        airr = airr[airr.obs_names.isin(gex_obs.index)]
    qc_pass = gex_obs["qc_pass"].astype(bool)
    keep = airr.obs_names[qc_pass.reindex(airr.obs_names).to_numpy()]
    out = airr[keep].copy()
    # chain indices / chain QC are recomputed on the cohort; keep only the AIRR data
    for key in [k for k in out.obsm.keys() if k != "airr"]:
        del out.obsm[key]
    out.obs = out.obs.drop(
        columns=[c for c in ("receptor_type", "receptor_subtype", "chain_pairing", *META_COLUMNS)
                 if c in out.obs.columns]
    )
    out.uns = {k: v for k, v in out.uns.items() if k == "scirpy_version"}
    meta = gex_obs.loc[keep, list(META_COLUMNS)]
    for col in META_COLUMNS:
        out.obs[col] = meta[col].to_numpy()
    out.obs["timepoint_day"] = pd.to_numeric(out.obs["timepoint_day"], errors="coerce").astype(
        float
    )
    for col in ("patient", "sample", "timepoint"):
        out.obs[col] = out.obs[col].astype(str)
    log.info("%s: %d of %d TCR cells pass QC", sample, out.n_obs, airr.n_obs)
    return out


def _unify_values(values: list) -> list:
    """Make one AIRR field's values a single type (None kept) so awkward needs no union."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds <= {str} or kinds <= {bool} or kinds <= {int}:
        return values
    if kinds <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def merge_airr_arrays(arrays: Sequence[Any]) -> Any:
    """Concatenate per-library AIRR awkward arrays (cells x chains x fields) into one.

    Libraries read by different readers (10x CSV, AIRR TSV, ...) carry different
    fields and types (e.g. ``?unknown`` vs ``?string``); concatenating them as
    they are gives awkward union types that scirpy cannot index. Here every
    field of any library is kept, missing fields are filled with None and each
    field gets one type (ints+floats -> float, mixed others -> string).
    """
    import awkward as ak

    flats = [ak.flatten(a, axis=1) for a in arrays]
    counts = np.concatenate([ak.to_numpy(ak.num(a, axis=1)) for a in arrays])
    fields = sorted({f for fl in flats for f in ak.fields(fl)})
    columns = {}
    for field in fields:
        pieces = [
            fl[field] if field in ak.fields(fl) else ak.Array([None] * len(fl)) for fl in flats
        ]
        merged = ak.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        if "union" in str(ak.type(merged)):  # incompatible types: unify value by value
            values = [v for piece in pieces for v in ak.to_list(piece)]
            merged = ak.from_iter(_unify_values(values), highlevel=True)
        columns[field] = merged
    if not fields:
        raise CartCohortError("AIRR data without any chain field")
    records = ak.zip(columns, depth_limit=1)
    return ak.unflatten(records, counts)


def concat_airr(parts: Sequence[Any]) -> Any:
    """Concatenate per-library AIRR AnnData objects (obs names must be unique).

    The AIRR arrays are merged with :func:`merge_airr_arrays`; obs columns are
    joined (outer). Chain indices are (re)computed with
    :func:`scirpy.pp.index_chains` and chain QC (``receptor_type``,
    ``receptor_subtype``, ``chain_pairing``) with :func:`scirpy.tl.chain_qc`.
    """
    import anndata as ad
    ir = load_scirpy()

    parts = [p for p in parts if p is not None and p.n_obs > 0]
    if not parts:
        raise CartCohortError(
            "no QC-passing cell with TCR data in any library. Fix: check the 'vdj' column of "
            "the sample sheet and results/tables/qc_samples.tsv."
        )
    obs = pd.concat([p.obs for p in parts], join="outer")
    if not obs.index.is_unique:
        dup = obs.index[obs.index.duplicated()][0]
        raise CartCohortError(
            f"cell id {dup!r} occurs in two libraries. Fix: make sample ids unique in the sheet."
        )
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype(str).where(obs[col].notna())
    obs = obs.drop(columns=[c for c in ("receptor_type", "receptor_subtype", "chain_pairing")
                            if c in obs.columns])
    airr = merge_airr_arrays([p.obsm["airr"] for p in parts])
    adata = ad.AnnData(obs=obs, obsm={"airr": airr},
                       uns={"scirpy_version": ir.__version__})
    ir.pp.index_chains(adata)
    ir.tl.chain_qc(adata)
    return adata
