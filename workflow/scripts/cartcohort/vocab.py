"""The shared vocabulary (DESIGN.md): the rule for ids, and the cell calls used by the
simulator, features and stats. Imports nothing heavy: entry scripts of every step use it."""

import re

#: Longest allowed id: sample ids become parts of file names (at most 255 bytes).
MAX_ID_LENGTH = 128
#: Allowed sample, patient and timepoint ids: sample ids become file names, Snakemake
#: wildcards and shell arguments; patient ids become parts of clone ids and of the
#: ``;``/``,``-joined id lists of the tables.
SAMPLE_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_ID_LENGTH - 1}}}$"
SAMPLE_ID_RE = re.compile(SAMPLE_ID_PATTERN)
#: The rule for valid ids, in words (the fix of every unsafe-id message).
ID_RULE = (
    "use only letters, digits, '_', '.' and '-', starting with a letter or digit, "
    f"at most {MAX_ID_LENGTH} characters (ids become file names and shell arguments)"
)


#: The T-cell state programs every cohort is scored for, in report order.
STATES: tuple[str, ...] = (
    "naive_tscm",
    "tcm",
    "tem",
    "teff",
    "exhausted",
    "treg",
    "proliferating",
)
#: Programs reported only when the data contain them.
OPTIONAL_STATES: tuple[str, ...] = ("gd", "mait")
UNASSIGNED = "unassigned"
#: Memory-like = naive/stem-cell memory + central memory.
MEMORY_LIKE: tuple[str, ...] = ("naive_tscm", "tcm")
#: Lineage classes of ``cd4_cd8``; ``gd`` (gamma-delta) cells leave the CD4/CD8/DN denominators.
LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "DP", "gd")

#: The label of an association with libraries, not patients, as the unit
#: (``associate.unit: library``): report, warnings and the library-level table.
LIBRARY_UNIT_LABEL = (
    "libraries as replicates (repeated measures of one patient inflate significance)"
)
#: The entry point of a run from the sheet's Cell Ranger files (the overview names it).
ENTRY_CELL_RANGER = "Cell Ranger outputs of the sample sheet (gex/vdj)"
