"""Sample sheet and clinical table: read, resolve and validate them at parse time.

:func:`prepare_inputs` runs while Snakemake parses the workflow
(``rules/common.smk``), for sheets of up to ~1,000 libraries, so this package
imports only light modules (h5py, jsonschema, pandas, PyYAML) and reads only
what it needs from each input file: HDF5 shapes and barcodes, MatrixMarket
headers, line counts, and every contig of the contig tables (streamed). Every problem is
reported at once, naming the file, the line/column and the fix.

The path and file helpers (:func:`locate_gex`, :func:`locate_vdj`,
:func:`open_text`, :func:`match_barcodes`, :func:`inspect_gex`,
:func:`inspect_vdj`) are shared with :mod:`cartcohort.io`, which runs the same
checks before reading a file. ``python -m cartcohort.sheets config.yaml``
checks a project's sheets from the command line.
"""

from .airr_fields import (
    AIRR_BOOLEAN,
    AIRR_FALSE_VALUES,
    AIRR_INTEGER,
    AIRR_NA_LIKE,
    AIRR_NUMBER,
    AIRR_REQUIRED,
    AIRR_TRUE_VALUES,
    JSON_REGIONS,
    SCIRPY_NA_STRINGS,
    VDJ_LOCI,
    VJ_LOCI,
    schema_type,
)
from .barcodes import barcode_core, match_barcodes
from .cli import main
from .clinical import UNKNOWN_RESPONSE, ResponseCodes
from .duplicates import checksum
from .features import CAR_EXPECTED_COLUMN, car_expected, car_feature_issues, closest_features
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
    ID_RULE,
    MAX_ID_LENGTH,
    MISSING_LIKE_IDS,
    SAMPLE_ID_PATTERN,
    SAMPLE_ID_RE,
    WARNING_COLUMNS,
    describe_unsafe_id,
    missing_like_id,
    warning_row,
)
from .prepare import PreparedInputs, prepare_inputs
from .schema import META_COLUMNS, RESPONSE_CODES, SCHEMA_DIR, load_schema
from .sniff import GexFacts, Issue, inspect_gex
from .contig_findings import BCR_LOCI, TCR_LOCI
from .sniff_vdj import CONTIG_CSV_COLUMNS, inspect_vdj
from .textfiles import is_gzip, open_text, read_lines

__all__ = [
    "AIRR_BOOLEAN",
    "AIRR_FALSE_VALUES",
    "AIRR_INTEGER",
    "AIRR_NA_LIKE",
    "AIRR_NUMBER",
    "AIRR_REQUIRED",
    "AIRR_TRUE_VALUES",
    "JSON_REGIONS",
    "SCIRPY_NA_STRINGS",
    "CAR_EXPECTED_COLUMN",
    "BCR_LOCI",
    "CONTIG_CSV_COLUMNS",
    "GexFacts",
    "GexKind",
    "GexSource",
    "ID_RULE",
    "Issue",
    "LocateError",
    "MAX_ID_LENGTH",
    "META_COLUMNS",
    "MISSING_LIKE_IDS",
    "MtxFiles",
    "PreparedInputs",
    "RESPONSE_CODES",
    "ResponseCodes",
    "SAMPLE_ID_PATTERN",
    "SAMPLE_ID_RE",
    "SCHEMA_DIR",
    "UNKNOWN_RESPONSE",
    "TCR_LOCI",
    "VDJ_LOCI",
    "VJ_LOCI",
    "VdjKind",
    "WARNING_COLUMNS",
    "barcode_core",
    "car_expected",
    "car_feature_issues",
    "checksum",
    "closest_features",
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
    "schema_type",
    "warning_row",
]
