"""Rule ``reference``: freeze ``results/reference/`` from a cohort run.

The folder holds everything a new library is placed with (see README "Score a new
product"): ``model.h5ad`` (:func:`~.model.build_reference`: gene list and
normalisation, HVGs, PCA loadings with the means/SDs that scaled them, the cohort
cells' PCA and integrated coordinates with their final calls, the integration's
settings), the signature file as used, the per-library CAR and lineage model tables of
annotation, the per-feature cohort distributions by response
(``reference_features.tsv``), the association table and primary panel the flags use,
``settings.json`` (the settings new libraries must be processed with) and
``manifest.json`` (package versions and the sha256 of every file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from .. import __version__
from ..tl.integrate import read_integration
from .model import build_reference, read_chemistry

logger = logging.getLogger(__name__)

#: Output name of each input copied unchanged into the reference.
COPIED = {
    "car_models": "annotation_car_models.tsv",
    "libraries": "annotation_libraries.tsv",
    "reference_features": "reference_features.tsv",
    "association": "association.tsv",
    "panel": "primary_panel.yaml",
}

#: Packages whose versions the manifest records.
PACKAGES = ("anndata", "numpy", "scanpy", "scikit-learn", "scipy", "harmonypy", "scirpy")

MANIFEST = "manifest.json"
"""Name of the manifest in the reference folder."""


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {"cartcohort": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def freeze_reference(
    *,
    merged: str | os.PathLike,
    integrated: str | os.PathLike,
    cells: str | os.PathLike,
    signatures: str | os.PathLike,
    repertoire: str | os.PathLike,
    copies: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    libraries: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Write ``results/reference/`` and return its manifest.

    Parameters
    ----------
    merged, integrated, cells
        ``integrate/merged.h5ad``, ``integrate/{integrate.use}.h5ad`` and
        ``tables/cells.tsv.gz`` of the cohort run (:func:`~.model.build_reference`).
    signatures
        The marker-program file annotation used; copied as ``signatures`` plus its
        suffix.
    repertoire
        ``tables/repertoire_samples.tsv``: its ``rarefaction_depth`` replaces an
        ``"auto"`` depth in the settings (:func:`resolved_depth`), so new products
        are rarefied to the cohort's depth.
    copies
        Keys of :data:`COPIED` -> the cohort files copied unchanged.
    out_dir
        The reference folder.
    settings
        The settings new libraries must be processed with (``settings.json`` and
        ``model.h5ad`` ``uns['settings']``): load, qc, car_features, annotate,
        clonotypes, repertoire, the kNN size and the scorecard settings.
    libraries
        The cohort's ``results/qc/{sample}.h5mu``: the chemistry the load step recorded
        for each (:func:`~.model.read_chemistry`) is frozen as ``settings.json``
        ``library_chemistry`` (sample -> description), against which a new library's is
        checked (:func:`~.model.chemistry_mismatch`).

    Returns
    -------
    dict
        The manifest (``manifest.json``): ``format``, ``versions``, ``integration``
        (method and settings), ``n_cells``, ``samples`` and ``files`` (name ->
        sha256).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(copies) ^ set(COPIED))
    if unknown:
        raise ValueError(f"copies must name exactly {sorted(COPIED)}; differs at {unknown}")
    from ..tl.annotate import load_signatures

    settings = resolved_depth(settings, pd.read_csv(repertoire, sep="\t"), source=repertoire)
    settings["library_chemistry"] = {Path(p).name.removesuffix(".h5mu"): read_chemistry(p)
                                     for p in libraries}
    model = build_reference(
        ad.read_h5ad(merged), read_integration(integrated),
        pd.read_csv(cells, sep="\t", low_memory=False),
        signatures=load_signatures(signatures), settings=settings,
    )
    model.write_h5ad(out / "model.h5ad", compression="gzip")
    names = ["model.h5ad"]
    sig_name = "signatures" + "".join(Path(signatures).suffixes)
    shutil.copyfile(signatures, out / sig_name)
    names.append(sig_name)
    for key, name in COPIED.items():
        shutil.copyfile(copies[key], out / name)
        names.append(name)
    (out / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    names.append("settings.json")
    manifest = _manifest(model, out=out, names=names, sig_name=sig_name)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info("reference: %d cells, %d genes (%d HVGs) of %d samples -> %s",
                model.n_obs, model.n_vars, manifest["n_hvgs"], len(manifest["samples"]), out)
    return manifest


def _manifest(model: ad.AnnData, *, out: Path, names: list[str],
              sig_name: str) -> dict[str, Any]:
    """The manifest of a reference folder (see :func:`freeze_reference`)."""
    return {
        "format": "cartcohort-reference/1",
        "versions": _versions(),
        "integration": {k: (v.tolist() if hasattr(v, "tolist") else v)
                        for k, v in model.uns["integration"].items()},
        "n_cells": int(model.n_obs),
        "n_genes": int(model.n_vars),
        "n_hvgs": int(model.var["highly_variable"].sum()),
        "samples": sorted(model.obs["sample"].astype(str).unique()),
        "signatures": sig_name,
        "files": {name: sha256(out / name) for name in sorted(names)},
    }


def resolved_depth(settings: Mapping[str, Any], repertoire: pd.DataFrame, *,
                   source: str | os.PathLike) -> dict[str, Any]:
    """``settings`` with ``repertoire.rarefaction_depth`` ``"auto"`` replaced by the depth
    the cohort used (the one value of ``repertoire_samples.tsv``'s column; unchanged
    when the cohort rarefied no sample)."""
    from ..errors import CartCohortError

    out = json.loads(json.dumps(settings))
    if out["repertoire"]["rarefaction_depth"] != "auto":
        return out
    if "rarefaction_depth" not in repertoire.columns:
        raise CartCohortError(f"{source}: column 'rarefaction_depth' missing. Fix: re-run "
                              "rule repertoire")
    depths = sorted(set(repertoire["rarefaction_depth"].dropna().astype(int)))
    if len(depths) > 1:
        raise CartCohortError(f"{source}: several rarefaction depths {depths}; the "
                              "reference needs one. Fix: re-run rule repertoire")
    if depths:
        out["repertoire"]["rarefaction_depth"] = depths[0]
        logger.info("rarefaction depth 'auto' frozen at the cohort's %d cells", depths[0])
    return out


def read_reference_dir(path: str | os.PathLike) -> dict[str, Any]:
    """Read a reference folder's manifest and verify every file's sha256.

    Raises
    ------
    CartCohortError
        A missing manifest or file, or a file whose checksum differs (it was changed
        after the reference was frozen).
    """
    from ..errors import CartCohortError

    folder = Path(path)
    mf = folder / MANIFEST
    if not mf.exists():
        raise CartCohortError(
            f"{mf}: missing; {folder} is not a reference folder. Fix: give config "
            "reference= the results/reference folder of a cohort run (target all)")
    manifest = json.loads(mf.read_text())
    for name, digest in manifest["files"].items():
        f = folder / name
        if not f.exists():
            raise CartCohortError(f"{f}: listed in {mf} but missing. Fix: copy the "
                                  "whole reference folder")
        if sha256(f) != digest:
            raise CartCohortError(
                f"{f}: its sha256 differs from {mf}; the file changed after the "
                "reference was frozen. Fix: restore it or re-run rule reference")
    return manifest
