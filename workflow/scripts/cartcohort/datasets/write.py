"""Writers of a simulated cohort: Cell Ranger GEX (HDF5, mtx), contig tables, sheets, truth.

Every file is byte-stable: gzip streams carry no timestamp or file name and HDF5 datasets
no modification times, so the same cohort always gives the same bytes.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..tables import write_table
from .adt import AdtLibrary, has_adt, has_raw_matrix, simulate_adt
from .cohort import Cohort, CohortGenerator
from .library import Library, random_barcodes
from .params import make_params
from .power import truth_effects

log = logging.getLogger(__name__)


def _gz_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6
    ) as gz:
        gz.write(data)


def write_10x_h5(
    counts: sp.csr_matrix,
    path: str | os.PathLike,
    *,
    barcodes: np.ndarray,
    features: pd.DataFrame,
    library_id: str,
) -> None:
    """Write a Cell Ranger v3 ``filtered_feature_bc_matrix.h5`` (byte-stable).

    Parameters
    ----------
    counts
        Cells x features CSR matrix of integer counts (stored as Cell Ranger's
        features x barcodes CSC, which has the same arrays).
    path
        Output file.
    barcodes
        One barcode per row of ``counts``.
    features
        ``id``, ``name``, ``feature_type``, ``genome`` per column of ``counts``.
    library_id
        Library name recorded in the file attributes.
    """
    import h5py

    csr = sp.csr_matrix(counts)
    csr.sort_indices()

    def ds(group, name: str, data: np.ndarray) -> None:
        kw: dict[str, object] = {"track_times": False}
        if data.ndim == 1 and len(data) > 1000:
            kw.update(compression="gzip", compression_opts=4, chunks=(min(len(data), 80000),))
        group.create_dataset(name, data=data, **kw)

    def strings(values) -> np.ndarray:
        vals = [str(v).encode() for v in values]
        width = max([len(v) for v in vals] + [1])
        return np.array(vals, dtype=f"S{width}")

    with h5py.File(path, "w", track_order=False) as f:
        f.attrs["chemistry_description"] = np.bytes_("Single Cell 5' PE v2")
        f.attrs["filetype"] = np.bytes_("matrix")
        f.attrs["library_ids"] = strings([library_id])
        f.attrs["original_gem_groups"] = np.array([1], dtype=np.int64)
        f.attrs["software_version"] = np.bytes_("cellranger-7.1.0 (cartcohort simulator)")
        f.attrs["version"] = np.int64(2)
        m = f.create_group("matrix", track_order=False)
        ds(m, "barcodes", strings(barcodes))
        ds(m, "data", csr.data.astype(np.int32))
        ds(m, "indices", csr.indices.astype(np.int64))
        ds(m, "indptr", csr.indptr.astype(np.int64))
        ds(m, "shape", np.array([csr.shape[1], csr.shape[0]], dtype=np.int32))
        fg = m.create_group("features", track_order=False)
        ds(fg, "_all_tag_keys", strings(["genome"]))
        ds(fg, "feature_type", strings(features["feature_type"]))
        ds(fg, "genome", strings(features["genome"]))
        ds(fg, "id", strings(features["id"]))
        ds(fg, "name", strings(features["name"]))


def write_10x_mtx(
    counts: sp.csr_matrix,
    folder: str | os.PathLike,
    *,
    barcodes: np.ndarray,
    features: pd.DataFrame,
) -> None:
    """Write a Cell Ranger v3 ``filtered_feature_bc_matrix/`` folder (byte-stable gz).

    Parameters
    ----------
    counts
        Cells x features CSR matrix of integer counts.
    folder
        Output folder (created).
    barcodes
        One barcode per row of ``counts``.
    features
        ``id``, ``name``, ``feature_type`` per column of ``counts``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csr = sp.csr_matrix(counts)
    csr.sort_indices()
    n_cells, n_feat = csr.shape
    cols = np.repeat(np.arange(1, n_cells + 1), np.diff(csr.indptr))
    triples = np.column_stack([csr.indices.astype(np.int64) + 1, cols, csr.data]).astype(np.int64)
    header = (
        "%%MatrixMarket matrix coordinate integer general\n"
        '%metadata_json: {"software_version": "cellranger-7.1.0", "format_version": 2}\n'
        f"{n_feat} {n_cells} {csr.nnz}\n"
    )
    # level 1: any gzip level reads the same; the matrix is most of the simulator's write time
    with open(folder / "matrix.mtx.gz", "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=1
    ) as gz:
        gz.write(header.encode())
        step = 200_000
        for a in range(0, len(triples), step):
            part = triples[a : a + step]
            gz.write((("%d %d %d\n" * len(part)) % tuple(part.ravel().tolist())).encode())
    feat = features[["id", "name", "feature_type"]].to_csv(
        sep="\t", header=False, index=False, lineterminator="\n"
    )
    _gz_bytes(folder / "features.tsv.gz", feat.encode())
    _gz_bytes(folder / "barcodes.tsv.gz", ("\n".join(barcodes) + "\n").encode())


def _write_gex(lib: Library, counts: sp.csr_matrix, path: Path, *, barcodes: np.ndarray,
               features: pd.DataFrame) -> None:
    if lib.plan.gex_format == "h5":
        write_10x_h5(counts, path, barcodes=barcodes, features=features,
                     library_id=lib.plan.sample)
    else:
        write_10x_mtx(counts, path, barcodes=barcodes, features=features)


def _with_adt(lib: Library, adt: AdtLibrary) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """The library's counts and features with the antibodies inserted before the CAR
    (which stays last)."""
    ab = pd.DataFrame({"id": adt.names, "name": adt.names,
                       "feature_type": "Antibody Capture", "genome": ""})
    feats = pd.concat([lib.features.iloc[:-1], ab, lib.features.iloc[-1:]],
                      ignore_index=True)
    counts = sp.hstack([lib.counts[:, :-1], adt.counts, lib.counts[:, -1:]],
                       format="csr", dtype=np.int32)
    return counts, feats


def _write_raw(lib: Library, adt: AdtLibrary, counts: sp.csr_matrix, feats: pd.DataFrame,
               outdir: Path, seed: int) -> None:
    """``raw_feature_bc_matrix`` beside the filtered one: the cells and empty droplets
    (ambient antibody counts, no RNA)."""
    rng = np.random.default_rng([seed, 28, lib.plan.index])
    empty_bc = random_barcodes(adt.empty.shape[0], rng, taken=set(lib.barcodes))
    n_gex = lib.counts.shape[1] - 1
    empty = sp.hstack([sp.csr_matrix((adt.empty.shape[0], n_gex), dtype=np.int32), adt.empty,
                       sp.csr_matrix((adt.empty.shape[0], 1), dtype=np.int32)], format="csr")
    bc = np.concatenate([lib.barcodes, np.asarray(empty_bc, dtype=object)])
    order = np.argsort(bc, kind="stable")
    raw = sp.vstack([counts, empty], format="csr")[order]
    path = outdir / lib.plan.gex_relpath.replace("filtered_feature", "raw_feature")
    _write_gex(lib, raw, path, barcodes=bc[order], features=feats)


def _write_library(lib: Library, outdir: Path, *, seed: int) -> pd.DataFrame | None:
    """Write one library; with an ADT panel (:func:`~.adt.has_adt`) also the antibodies
    and (:func:`~.adt.has_raw_matrix`) the raw matrix. Returns the protein truth."""
    lp = lib.plan
    folder = outdir / lp.sample
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    counts, feats, adt = lib.counts, lib.features, None
    if has_adt(lp.index):
        adt = simulate_adt(lib.truth, seed=seed, index=lp.index)
        counts, feats = _with_adt(lib, adt)
        if has_raw_matrix(lp.index):
            _write_raw(lib, adt, counts, feats, outdir, seed)
    _write_gex(lib, counts, outdir / lp.gex_relpath, barcodes=lib.barcodes, features=feats)
    sep = "\t" if lp.vdj_format == "airr" else ","
    lib.vdj.to_csv(outdir / lp.vdj_relpath, sep=sep, index=False, lineterminator="\n")
    return None if adt is None else adt.truth


def _protein_truth(parts: list[pd.DataFrame | None]) -> pd.DataFrame:
    """Protein truth of the libraries with an ADT panel (``truth_protein.tsv``)."""
    kept = [p for p in parts if p is not None]
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(
        columns=["cell", "sample", "prot_cd4_cd8", "prot_memory"])


def _remove_stale(outdir: Path, samples: list[str]) -> None:
    keep = set(samples)
    if not outdir.is_dir():
        return
    for child in sorted(outdir.iterdir()):
        is_lib = child.is_dir() and (
            (child / "filtered_feature_bc_matrix.h5").exists()
            or (child / "filtered_feature_bc_matrix").is_dir()
        )
        if is_lib and child.name not in keep:
            log.info("removing stale demo library %s", child)
            shutil.rmtree(child)


def _write_tables(
    outdir: Path,
    *,
    samples: pd.DataFrame,
    clinical: pd.DataFrame,
    truth_cells: pd.DataFrame,
    truth_patients: pd.DataFrame,
    truth_clones: pd.DataFrame,
    truth_kinetics: pd.DataFrame,
    truth_protein: pd.DataFrame,
    config_dir: str | os.PathLike | None,
) -> None:
    write_table(samples, outdir / "samples.tsv")
    write_table(truth_protein, outdir / "truth_protein.tsv")
    write_table(clinical, outdir / "clinical.tsv")
    write_table(truth_cells, outdir / "truth_cells.tsv")
    write_table(truth_patients, outdir / "truth_patients.tsv")
    write_table(truth_clones, outdir / "truth_clones.tsv.gz")
    write_table(truth_kinetics, outdir / "truth_kinetics.tsv")
    n_resp = int(truth_patients["responder"].sum())
    effects = truth_effects(n_responders=n_resp, n_nonresponders=len(truth_patients) - n_resp)
    write_table(effects, outdir / "truth_effects.tsv")
    if config_dir is not None:
        cdir = Path(config_dir)
        cdir.mkdir(parents=True, exist_ok=True)
        rel = Path(os.path.relpath(outdir.resolve(), cdir.resolve()))
        sheet = samples.copy()
        for col in ("gex", "vdj"):
            sheet[col] = [(rel / p).as_posix() if p else "" for p in sheet[col]]
        write_table(sheet, cdir / "samples.tsv")
        write_table(clinical, cdir / "clinical.tsv")


def write_cohort(
    cohort: Cohort, outdir: str | os.PathLike, *, config_dir: str | os.PathLike | None = None
) -> None:
    """Write a simulated cohort to disk.

    Parameters
    ----------
    cohort
        Output of :func:`simulate_cohort`.
    outdir
        Cohort folder (e.g. ``resources/demo``); per-library folders ``<sample>/``,
        ``samples.tsv``, ``clinical.tsv``, ``truth_*.tsv`` are written into it.
        Library folders of samples not in this cohort are removed.
    config_dir
        If given, also write ``samples.tsv`` and ``clinical.tsv`` there with paths
        relative to it.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out, list(cohort.samples["sample"]))
    prot = [_write_library(lib, out, seed=cohort.params.seed) for lib in cohort.libraries]
    _write_tables(
        out,
        truth_protein=_protein_truth(prot),
        samples=cohort.samples,
        clinical=cohort.clinical,
        truth_cells=cohort.truth_cells,
        truth_patients=cohort.truth_patients,
        truth_clones=cohort.truth_clones,
        truth_kinetics=cohort.truth_kinetics,
        config_dir=config_dir,
    )


def write_demo_cohort(
    outdir: str | os.PathLike,
    *,
    seed: int,
    config_dir: str | os.PathLike | None = None,
    **kwargs: object,
) -> dict[str, int]:
    """Simulate and write a cohort one library at a time (constant memory).

    Same files as ``write_cohort(simulate_cohort(seed=seed, **kwargs), outdir)``.

    Parameters
    ----------
    outdir
        Cohort folder.
    seed
        Master seed.
    config_dir
        If given, also write sheets with paths relative to it.
    **kwargs
        Any :class:`SimParams` field.

    Returns
    -------
    dict
        ``n_libraries``, ``n_cells``, ``n_contigs``.
    """
    gen = CohortGenerator(make_params(seed, kwargs))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    samples = gen.samples()
    _remove_stale(out, list(samples["sample"]))
    truths, prot = [], []
    n_contigs = 0
    for lib in gen.libraries():
        prot.append(_write_library(lib, out, seed=gen.params.seed))
        truths.append(lib.truth)
        n_contigs += len(lib.vdj)
    truth_cells = pd.concat(truths, ignore_index=True)
    _write_tables(
        out,
        truth_protein=_protein_truth(prot),
        samples=samples,
        clinical=gen.clinical,
        truth_cells=truth_cells,
        truth_patients=gen.truth_patients(truth_cells),
        truth_clones=gen.truth_clones(),
        truth_kinetics=gen.truth_kinetics(),
        config_dir=config_dir,
    )
    return {"n_libraries": len(samples), "n_cells": len(truth_cells), "n_contigs": n_contigs}
