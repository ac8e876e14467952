"""The cell table sample_features reads, from a simulated cohort's truth: the cells that
pass QC (no doublet, not low quality) with the sheet's day and compartment, and a clone id
where the cell has a TCR."""

from __future__ import annotations

import pandas as pd


def truth_feature_cells(cohort) -> pd.DataFrame:
    """Cells of ``cohort`` (:func:`cartcohort.datasets.simulate_cohort`) as sample_features
    reads them, with the planted calls as the calls."""
    tc = cohort.truth_cells
    tc = tc[~tc["is_doublet"] & ~tc["is_low_quality"]]
    cells = tc.merge(cohort.samples[["sample", "timepoint_day", "compartment"]], on="sample")
    cells["clone_id"] = cells["clone"].where(cells["has_tcr"])
    return cells
