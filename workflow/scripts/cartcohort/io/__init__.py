"""Readers of single-cell inputs, one library at a time.

GEX (Cell Ranger h5, mtx folder, cellranger multi, h5ad) and TCR (10x contig
CSV/JSON, AIRR rearrangement TSV). Everything returned follows
``docs/DESIGN.md``: cell ids ``<sample>_<barcode>``, ``X`` a ``float32`` CSR
matrix of raw integer UMI counts, ``var`` with ``gene_ids``, ``feature_types``
and ``is_car``, and TCR data as scirpy AIRR AnnData (``obsm['airr']``, built
by :mod:`cartcohort.io.airr` without importing scirpy). Inputs are checked with
the same cheap checks as the sample sheet (:mod:`cartcohort.sheets`) before they
are read, so a bad file gives the same clear message whether it is met at parse
time or here.
"""

from . import airr
from .airr import read_10x_csv, read_10x_json, read_airr_tsv
from .contigs import SCIRPY_VERSION, from_contigs, scirpy_is_true
from .genes import gene_join_warnings, harmonise_genes
from .gex import (
    ANTIBODY_CAPTURE,
    GENE_EXPRESSION,
    FeatureReport,
    GexLibrary,
    read_gex,
    read_library,
)
from .sample import (
    OBS_META,
    SUMMARY_COLUMNS,
    LoadedSample,
    feature_warnings,
    load_sample,
    load_summary,
)
from .tcr import read_tcr

__all__ = [
    "ANTIBODY_CAPTURE",
    "FeatureReport",
    "GENE_EXPRESSION",
    "GexLibrary",
    "LoadedSample",
    "OBS_META",
    "SCIRPY_VERSION",
    "SUMMARY_COLUMNS",
    "airr",
    "feature_warnings",
    "gene_join_warnings",
    "from_contigs",
    "harmonise_genes",
    "load_sample",
    "load_summary",
    "read_10x_csv",
    "read_10x_json",
    "read_airr_tsv",
    "read_gex",
    "read_library",
    "read_tcr",
    "scirpy_is_true",
]
