"""Sample sheet and clinical table: read, resolve and validate them at parse time.

:func:`prepare_inputs` runs while Snakemake parses the workflow
(``rules/common.smk``), for sheets of up to ~1,000 libraries, so this package
imports only light modules (h5py, jsonschema, pandas, PyYAML) and reads only
what it needs from each input file: HDF5 shapes and barcodes, MatrixMarket
headers, line counts, and the barcode column of contig tables. Every problem is
reported at once, naming the file, the line/column and the fix.

The path and file helpers (:func:`locate_gex`, :func:`locate_vdj`,
:func:`open_text`, :func:`match_barcodes`, :func:`inspect_gex`,
:func:`inspect_vdj`) are shared with :mod:`cartcohort.io`, which runs the same
checks before reading a file. ``python -m cartcohort.sheets config.yaml``
checks a project's sheets from the command line.
"""

from .barcodes import barcode_core, match_barcodes
from .cli import main
from .locate import (
    GexKind,
    GexSource,
    LocateError,
    MtxFiles,
    VdjKind,
    locate_gex,
    locate_mtx,
    locate_vdj,
)
from .messages import (
    MISSING_LIKE_IDS,
    SAMPLE_ID_PATTERN,
    SAMPLE_ID_RE,
    describe_unsafe_id,
    missing_like_id,
)
from .prepare import prepare_inputs
from .schema import META_COLUMNS, RESPONSE_CODES, SCHEMA_DIR, load_schema
from .sniff import GexFacts, Issue, inspect_gex
from .sniff_vdj import BCR_LOCI, CONTIG_CSV_COLUMNS, VDJ_CHECK_ROWS, inspect_vdj
from .textfiles import is_gzip, open_text, read_lines

__all__ = [
    "BCR_LOCI",
    "CONTIG_CSV_COLUMNS",
    "GexFacts",
    "GexKind",
    "GexSource",
    "Issue",
    "LocateError",
    "META_COLUMNS",
    "MISSING_LIKE_IDS",
    "MtxFiles",
    "RESPONSE_CODES",
    "SAMPLE_ID_PATTERN",
    "SAMPLE_ID_RE",
    "SCHEMA_DIR",
    "VDJ_CHECK_ROWS",
    "VdjKind",
    "barcode_core",
    "describe_unsafe_id",
    "inspect_gex",
    "inspect_vdj",
    "is_gzip",
    "load_schema",
    "locate_gex",
    "locate_mtx",
    "locate_vdj",
    "main",
    "match_barcodes",
    "missing_like_id",
    "open_text",
    "prepare_inputs",
    "read_lines",
]
