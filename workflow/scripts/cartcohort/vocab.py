"""The shared vocabulary of cell calls (DESIGN.md), used by simulator, features and stats."""

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
LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "DP")
