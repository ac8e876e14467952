"""Per-library summary of the annotation: model calls beside the naive rule's.

``tables/annotation_libraries.tsv`` (:func:`library_table`) holds, per library, the
lineage fractions of the model (CD4/CD8/DN/DP over the αβ cells, ``gd`` over all cells)
beside the naive rule's (over all cells), where the lineage calls came from (the cell's
own counts, its kNN neighbourhood or its clone), and the CAR+ fraction of the model
beside the naive rule's (>= 1 CAR UMI) with the library's CAR status and expected
false-positive rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Columns of ``tables/annotation_libraries.tsv``.
LIBRARY_COLUMNS: tuple[str, ...] = (
    "sample", "sort", "n_cells", "cd4_fraction", "cd8_fraction", "dn_fraction", "dp_fraction",
    "gd_fraction", "naive_cd4_fraction", "naive_cd8_fraction", "naive_dn_fraction",
    "naive_dp_fraction", "lineage_from_own", "lineage_from_neighbours", "lineage_from_clone",
    "car_positive_fraction", "naive_car_positive_fraction", "car_status", "car_expected_fdr",
    "car_expected_fpr",
)


def _fraction(flag: pd.Series, keep: pd.Series, sample: pd.Series) -> pd.Series:
    """Per sample: ``flag`` among the cells where ``keep`` (NaN when none is kept)."""
    num = (flag & keep).groupby(sample, sort=True).sum()
    den = keep.groupby(sample, sort=True).sum()
    return (num / den.replace(0, np.nan)).astype(float)


def library_table(obs: pd.DataFrame, car_models: pd.DataFrame) -> pd.DataFrame:
    """One row per library (:data:`LIBRARY_COLUMNS`).

    Parameters
    ----------
    obs
        Annotated ``obs``: ``sample``, ``cd4_cd8``, ``cd4_cd8_naive``, ``cd4_cd8_source``
        and, when the data have a CAR feature, ``car_positive`` and ``car_positive_naive``.
    car_models
        ``tables/annotation_car_models.tsv`` (may be empty).

    Returns
    -------
    pandas.DataFrame
        Sorted by sample.
    """
    sample = obs["sample"].astype(str)
    lin = obs["cd4_cd8"].astype(str)
    naive = obs["cd4_cd8_naive"].astype(str)
    source = obs["cd4_cd8_source"].astype(str)
    every = pd.Series(True, index=obs.index)
    ab = lin != "gd"
    out = pd.DataFrame(index=pd.Index(sorted(sample.unique()), name="sample"))
    out["sort"] = (obs["sort"].astype(object) if "sort" in obs else pd.Series(pd.NA, obs.index)
                   ).groupby(sample).first()
    out["n_cells"] = sample.value_counts()
    for cls in ("CD4", "CD8", "DN", "DP"):
        out[f"{cls.lower()}_fraction"] = _fraction(lin == cls, ab, sample)
    out["gd_fraction"] = _fraction(lin == "gd", every, sample)
    for cls in ("CD4", "CD8", "DN", "DP"):
        out[f"naive_{cls.lower()}_fraction"] = _fraction(naive == cls, every, sample)
    for src in ("own", "neighbours", "clone"):
        out[f"lineage_from_{src}"] = _fraction(source == src, ab, sample)
    if "car_positive" in obs and not obs["car_positive"].isna().all():
        car = obs["car_positive"].astype("boolean")
        out["car_positive_fraction"] = _fraction(car.fillna(False).astype(bool), car.notna(),
                                                 sample)
        car_naive = obs["car_positive_naive"].astype("boolean").fillna(False).astype(bool)
        out["naive_car_positive_fraction"] = _fraction(car_naive, every, sample)
    if len(car_models):
        cm = car_models.set_index(car_models["sample"].astype(str))
        out["car_status"] = cm["car_status"]
        out["car_expected_fdr"] = cm["expected_fdr"]
        out["car_expected_fpr"] = cm["expected_fpr"]
    out = out.reset_index()
    for col in LIBRARY_COLUMNS:
        if col not in out:
            out[col] = pd.NA
    return out[list(LIBRARY_COLUMNS)]
