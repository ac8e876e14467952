"""cart-cohort: single-cell CAR-T cohort analysis library.

One module per workflow step; every public function is pure (inputs in,
outputs out), typed and keyword-only beyond the primary data argument.
Snakemake entry scripts in ``workflow/scripts/`` are thin wrappers.
"""

__version__ = "0.1.0"
