"""Repertoire dynamics from the per-cell table ``cells.tsv.gz``.

Clonal expansion and diversity of each sample (rarefied to a common depth, with
bootstrap confidence intervals), overlap of every sample with its patient's
infusion product, persistence of product clones after infusion, and the cell-state
composition of expanded clones. :func:`repertoire_tables` is the workflow step
(rule ``repertoire``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import CartCohortError

log = logging.getLogger(__name__)

#: expansion categories: label -> (min, max) clone size within a sample (inclusive).
EXPANSION_CATEGORIES: dict[str, tuple[int, float]] = {
    "1": (1, 1),
    "2": (2, 2),
    "3_10": (3, 10),
    "gt10": (11, np.inf),
}
DIVERSITY_INDICES: tuple[str, ...] = ("richness", "shannon", "pielou", "gini_simpson", "gini")
#: ``clonotypes.rarefaction_depth``: ``"auto"`` or a number of cells.
RarefactionDepth = int | Literal["auto"]


# ----------------------------------------------------------------------------------------
# diversity
# ----------------------------------------------------------------------------------------


def _as_counts(counts: Any) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise CartCohortError(f"clone counts must be one-dimensional, got shape {arr.shape}")
    if arr.size and (np.any(arr < 0) or np.any(arr != np.round(arr))):
        raise CartCohortError("clone counts must be non-negative integers")
    return arr[arr > 0].astype(np.int64)


def _indices_matrix(m: np.ndarray) -> dict[str, np.ndarray]:
    """Diversity indices of each row of a (draws x clones) count matrix."""
    m = np.asarray(m, dtype=float)
    n = m.sum(axis=1)
    p = m / n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    shannon = -(p * logp).sum(axis=1)
    richness = (m > 0).sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pielou = np.where(richness > 1, shannon / np.log(np.maximum(richness, 2)), 0.0)
    gini_simpson = 1.0 - (p**2).sum(axis=1)
    # Gini coefficient of the observed clone sizes (zeros = unobserved, left out)
    s = np.sort(m, axis=1)
    nz = s > 0
    rank = np.cumsum(nz, axis=1) * nz  # 1..S over the non-zero sizes, ascending
    num = 2.0 * (rank * s).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gini = num / (richness * n) - (richness + 1.0) / richness
    gini = np.where(richness > 0, gini, np.nan)
    return {
        "richness": richness,
        "shannon": shannon,
        "pielou": pielou,
        "gini_simpson": gini_simpson,
        "gini": np.clip(gini, 0.0, 1.0),
    }


def diversity_indices(counts: Any) -> dict[str, float]:
    """Diversity of one repertoire given its clone sizes.

    Parameters
    ----------
    counts
        Cells per clone (zeros ignored).

    Returns
    -------
    dict
        ``richness`` (number of clones), ``shannon`` (natural log),
        ``pielou`` (Shannon / ln(richness); 0 for a single clone),
        ``gini_simpson`` (1 - sum p^2) and ``gini`` (Gini coefficient of the clone
        sizes: 0 = all clones the same size, towards 1 = one clone dominates).
        All NaN when there are no cells.
    """
    arr = _as_counts(counts)
    if arr.sum() == 0:
        return {k: float("nan") for k in DIVERSITY_INDICES}
    return {k: float(v[0]) for k, v in _indices_matrix(arr[None, :]).items()}


def _bounds(name: str, depth: int) -> tuple[float, float]:
    return {
        "richness": (1.0, float(depth)),
        "shannon": (0.0, float(np.log(depth))),
        "pielou": (0.0, 1.0),
        "gini_simpson": (0.0, 1.0 - 1.0 / depth),
        "gini": (0.0, 1.0),
    }[name]


def rarefied_diversity(
    counts: Any,
    *,
    depth: int,
    n_bootstrap: int = 200,
    seed: int | np.random.SeedSequence = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Diversity rarefied to ``depth`` cells, with a bootstrap confidence interval.

    * Value: mean of each index over ``n_bootstrap`` random subsamples of
      ``depth`` cells drawn **without** replacement from the repertoire
      (classical rarefaction: what a library of ``depth`` cells would show).
    * Interval: value ± z·sd, where sd is the standard deviation of the index
      over ``n_bootstrap`` bootstrap samples of ``depth`` cells drawn **with**
      replacement from the observed clone frequencies (the sampling variability
      of a ``depth``-cell sample; centred on the value as in iNEXT so that the
      bootstrap's loss of singletons does not shift it), clipped to the range
      the index can take at that depth. Intervals narrow as ``depth`` grows.

    Parameters
    ----------
    counts
        Cells per clone.
    depth
        Cells per subsample; must not exceed ``sum(counts)``.
    n_bootstrap
        Number of subsamples and of bootstrap samples.
    seed
        Seed of the random generator.
    ci
        Confidence level of the interval.

    Returns
    -------
    dict
        For each index in :data:`DIVERSITY_INDICES`: ``<index>``,
        ``<index>_ci_low``, ``<index>_ci_high``.
    """
    from scipy.stats import norm

    arr = _as_counts(counts)
    total = int(arr.sum())
    depth = int(depth)
    if depth < 1 or depth > total:
        raise CartCohortError(
            f"rarefaction depth {depth} must be between 1 and the number of cells ({total})"
        )
    if n_bootstrap < 2:
        raise CartCohortError(f"n_bootstrap must be at least 2, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    if depth == total:
        sub = np.tile(arr, (1, 1))
    else:
        sub = rng.multivariate_hypergeometric(arr, depth, size=n_bootstrap)
    boot = rng.multinomial(depth, arr / total, size=n_bootstrap)
    point = _indices_matrix(sub)
    spread = _indices_matrix(boot)
    z = float(norm.ppf(0.5 + ci / 2.0))
    out: dict[str, float] = {}
    for name in DIVERSITY_INDICES:
        value = float(np.mean(point[name]))
        sd = float(np.std(spread[name], ddof=1))
        lo_b, hi_b = _bounds(name, depth)
        out[name] = value
        out[f"{name}_ci_low"] = float(np.clip(value - z * sd, lo_b, hi_b))
        out[f"{name}_ci_high"] = float(np.clip(value + z * sd, lo_b, hi_b))
    return out


def choose_depth(
    n_cells: pd.Series, *, depth: int | str = "auto", min_cells: int = 50
) -> int | None:
    """Rarefaction depth shared by all samples.

    Parameters
    ----------
    n_cells
        Cells with a clone id per sample.
    depth
        ``"auto"`` (smallest sample with at least ``min_cells`` cells) or an int.
    min_cells
        Samples below this are not considered for ``"auto"``.

    Returns
    -------
    int or None
        None when ``auto`` finds no sample with ``min_cells`` cells.
    """
    if isinstance(depth, str):
        if depth != "auto":
            raise CartCohortError(
                f"config clonotypes.rarefaction_depth={depth!r}. Fix: use 'auto' or an integer."
            )
        eligible = n_cells[n_cells >= min_cells]
        if eligible.empty:
            log.warning("no sample has >= %d cells with TCR; rarefied diversity left NA",
                        min_cells)
            return None
        return int(eligible.min())
    if int(depth) < 1:
        raise CartCohortError(
            f"config clonotypes.rarefaction_depth={depth}. Fix: use 'auto' or an integer >= 1."
        )
    return int(depth)


def _repertoire_seed(seed: int, counts: Any) -> np.random.SeedSequence:
    """The seed of one repertoire's draws: the master ``seed`` and the repertoire itself.

    Derived from the sorted clone-size vector (never from the sample's id), so renaming
    a sample, or reordering the sheet, does not change its rarefied values; samples with
    different repertoires get independent streams.
    """
    sizes = np.sort(_as_counts(counts))[::-1].astype(np.int64)
    words = np.frombuffer(hashlib.sha256(sizes.tobytes()).digest()[:16], dtype=np.uint32)
    return np.random.SeedSequence([int(seed), *(int(w) for w in words)])


# ----------------------------------------------------------------------------------------
# per-sample repertoire metrics
# ----------------------------------------------------------------------------------------

_REQUIRED = ("cell", "sample", "patient", "timepoint", "timepoint_day", "clone_id")


def _check_cells(cells: pd.DataFrame, extra: Sequence[str] = ()) -> None:
    missing = [c for c in (*_REQUIRED, *extra) if c not in cells.columns]
    if missing:
        raise CartCohortError(
            f"results/tables/cells.tsv.gz lacks column(s) {missing}. Fix: re-run the annotate "
            "rule with the current workflow version."
        )


def _sample_meta(cells: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("patient", "timepoint", "timepoint_day", "compartment") if c in cells]
    meta = cells.groupby("sample", sort=True)[cols].first()
    meta["n_cells"] = cells.groupby("sample", sort=True).size()
    return meta


def repertoire_by_sample(
    cells: pd.DataFrame,
    *,
    depth: int | str = "auto",
    min_cells: int = 50,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Clonal expansion and diversity of each sample.

    Clone sizes are counted within the sample (cells with a ``clone_id``).

    Parameters
    ----------
    cells
        One row per QC-passing cell (``cells.tsv.gz``).
    depth, min_cells
        Rarefaction depth (see :func:`choose_depth`).
    n_bootstrap, seed
        For :func:`rarefied_diversity`; each sample's generator is seeded from
        ``seed`` and the sample's clone sizes (:func:`_repertoire_seed`), so results depend
        neither on the sample order nor on the sample ids.

    Returns
    -------
    DataFrame
        One row per sample: ``sample, patient, timepoint, timepoint_day,
        compartment, n_cells, n_cells_tcr, frac_tcr, n_clones, max_clone_size,
        n_clones_size_{1,2,3_10,gt10}, frac_cells_size_{1,2,3_10,gt10},
        frac_expanded, top1_fraction, top10_fraction``, unrarefied
        ``<index>`` and rarefied ``rarefied_<index>[_ci_low|_ci_high]`` for each
        index of :data:`DIVERSITY_INDICES`, ``rarefaction_depth`` and
        ``rarefaction_note`` (why a sample has no rarefied values).
    """
    _check_cells(cells)
    meta = _sample_meta(cells)
    tcr = cells[cells["clone_id"].notna()]
    sizes = {s: g.value_counts().sort_values(ascending=False, kind="mergesort")
             for s, g in tcr.groupby("sample", sort=True)["clone_id"]}
    n_tcr = pd.Series({s: int(sizes[s].sum()) if s in sizes else 0 for s in meta.index})
    d = choose_depth(n_tcr, depth=depth, min_cells=min_cells)
    rows = []
    for sample in meta.index:
        row: dict[str, Any] = {"sample": sample, **meta.loc[sample].to_dict()}
        counts = sizes.get(sample, pd.Series(dtype=int)).to_numpy()
        n = int(counts.sum())
        row["n_cells_tcr"] = n
        row["frac_tcr"] = n / row["n_cells"] if row["n_cells"] else np.nan
        row["n_clones"] = len(counts)
        row["max_clone_size"] = int(counts.max()) if n else np.nan
        for label, (lo, hi) in EXPANSION_CATEGORIES.items():
            in_cat = (counts >= lo) & (counts <= hi)
            row[f"n_clones_size_{label}"] = int(in_cat.sum())
            row[f"frac_cells_size_{label}"] = counts[in_cat].sum() / n if n else np.nan
        row["frac_expanded"] = counts[counts >= 2].sum() / n if n else np.nan
        row["top1_fraction"] = counts[:1].sum() / n if n else np.nan
        row["top10_fraction"] = counts[:10].sum() / n if n else np.nan
        row.update(diversity_indices(counts))
        row["rarefaction_depth"] = d if d is not None else np.nan
        note = ""
        if n == 0:
            note = "no cells with TCR"
        elif d is None:
            note = f"no sample has >= {min_cells} cells with TCR (clonotypes.rarefaction_min_cells)"
        elif n < d:
            note = f"{n} cells with TCR < rarefaction depth {d}"
        if note:
            rare = {f"{k}{s}": np.nan for k in DIVERSITY_INDICES for s in ("", "_ci_low",
                                                                              "_ci_high")}
            log.info("sample %s: rarefied diversity NA: %s", sample, note)
        else:
            rare = rarefied_diversity(
                counts, depth=d, n_bootstrap=n_bootstrap, seed=_repertoire_seed(seed, counts)
            )
        row.update({f"rarefied_{k}": v for k, v in rare.items()})
        row["rarefaction_note"] = note or pd.NA
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# overlap and persistence
# ----------------------------------------------------------------------------------------


def jaccard(a: pd.Series, b: pd.Series) -> float:
    """Jaccard index of the clone sets of two repertoires (clone -> cells); NaN if both empty."""
    sa, sb = set(a.index[a > 0]), set(b.index[b > 0])
    union = sa | sb
    return len(sa & sb) / len(union) if union else float("nan")


def morisita_horn(x: pd.Series, y: pd.Series) -> float:
    """Morisita–Horn overlap of two repertoires (clone -> cells).

    1 for identical clone frequencies, 0 for no shared clone; NaN if either is empty.
    """
    idx = x.index.union(y.index)
    xv = x.reindex(idx, fill_value=0).to_numpy(dtype=float)
    yv = y.reindex(idx, fill_value=0).to_numpy(dtype=float)
    nx, ny = xv.sum(), yv.sum()
    if nx == 0 or ny == 0:
        return float("nan")
    dx = (xv**2).sum() / nx**2
    dy = (yv**2).sum() / ny**2
    return float(2.0 * (xv * yv).sum() / ((dx + dy) * nx * ny))


def product_mask(cells_or_meta: pd.DataFrame, *, primary_timepoint: str) -> pd.Series:
    """True for rows of the infusion product: compartment ``product`` or the primary timepoint."""
    comp = cells_or_meta.get("compartment")
    is_prod = cells_or_meta["timepoint"].astype(str) == str(primary_timepoint)
    if comp is not None:
        is_prod = is_prod | (comp.astype(str).str.lower() == "product")
    return is_prod


def _car_mask(cells: pd.DataFrame) -> pd.Series | None:
    if "car_positive" not in cells.columns or cells["car_positive"].isna().all():
        return None
    v = cells["car_positive"]
    if v.dtype == object:
        v = v.map({"True": True, "False": False, True: True, False: False})
    return v.fillna(False).astype(bool)


def _sample_roles(meta: pd.DataFrame, *, primary_timepoint: str) -> pd.DataFrame:
    """Per sample: is_product and is_post_infusion (NA when it cannot be ordered)."""
    meta = meta.copy()
    meta["is_product"] = product_mask(meta, primary_timepoint=primary_timepoint).to_numpy()
    post = pd.Series(pd.NA, index=meta.index, dtype="boolean")
    for patient, grp in meta.groupby("patient", sort=True):
        prod = grp[grp["is_product"]]
        if prod.empty:
            continue
        prod_day = prod["timepoint_day"].max()
        if pd.isna(prod_day):
            log.info("patient %s: product has no timepoint_day; taken as day 0", patient)
            prod_day = 0.0
        for s, row in grp.iterrows():
            if row["is_product"]:
                post[s] = False
            elif pd.isna(row["timepoint_day"]):
                log.warning("sample %s has no timepoint_day: not counted as pre or post "
                            "infusion", s)
            else:
                post[s] = bool(row["timepoint_day"] > prod_day)
    meta["is_post_infusion"] = post
    return meta


_PERSISTENCE_COLUMNS = [
    "sample", "is_product", "is_post_infusion", "product_samples", "jaccard_product",
    "morisita_horn_product", "n_product_clones_detected", "frac_cells_from_product_clones",
    "frac_car_cells_from_product_clones", "n_product_clones", "n_post_samples",
    "n_product_clones_detected_later", "frac_product_clones_detected_later",
    "frac_post_cells_from_product_clones", "frac_post_car_cells_from_product_clones",
]


def _overlap_with_product(
    row: dict[str, Any],
    c: pd.Series,
    *,
    prod_counts: pd.Series,
    tcr: pd.DataFrame,
    car_tcr: pd.Series | None,
) -> None:
    """Fill the product-overlap columns of a non-product sample's row (``c``: clone -> cells)."""
    prod_clones = set(prod_counts.index)
    s = row["sample"]
    in_prod = c.index.isin(list(prod_clones))
    n = c.sum()
    row["jaccard_product"] = jaccard(c, prod_counts) if n else np.nan
    row["morisita_horn_product"] = morisita_horn(c, prod_counts) if n else np.nan
    row["n_product_clones_detected"] = int(in_prod.sum())
    row["frac_cells_from_product_clones"] = c[in_prod].sum() / n if n else np.nan
    if car_tcr is not None:
        sm = (tcr["sample"] == s) & car_tcr
        nc = int(sm.sum())
        row["frac_car_cells_from_product_clones"] = (
            tcr.loc[sm, "clone_id"].isin(prod_clones).sum() / nc if nc else np.nan
        )


def _product_persistence(
    row: dict[str, Any],
    *,
    prod_clones: set,
    post_samples: list[str],
    tcr: pd.DataFrame,
    car_tcr: pd.Series | None,
) -> None:
    """Fill the patient-level persistence columns of the row of a product sample."""
    post = tcr[tcr["sample"].isin(post_samples)]
    later = set(post["clone_id"]) & prod_clones
    row["n_product_clones"] = len(prod_clones)
    row["n_post_samples"] = len(post_samples)
    if post_samples:
        row["n_product_clones_detected_later"] = len(later)
        row["frac_product_clones_detected_later"] = len(later) / len(prod_clones)
        row["frac_post_cells_from_product_clones"] = (
            post["clone_id"].isin(prod_clones).mean() if len(post) else np.nan
        )
        if car_tcr is not None:
            pc = post[car_tcr[post.index]]
            row["frac_post_car_cells_from_product_clones"] = (
                pc["clone_id"].isin(prod_clones).mean() if len(pc) else np.nan
            )


def persistence_by_sample(cells: pd.DataFrame, *, primary_timepoint: str) -> pd.DataFrame:
    """Overlap with the infusion product and persistence of product clones.

    The product repertoire of a patient pools its product samples (compartment
    ``product`` or timepoint ``primary_timepoint``); post-infusion samples are
    the patient's other samples with a later ``timepoint_day``.

    Returns
    -------
    DataFrame
        One row per sample: ``sample, is_product, is_post_infusion,
        product_samples, jaccard_product, morisita_horn_product,
        n_product_clones_detected, frac_cells_from_product_clones,
        frac_car_cells_from_product_clones`` (non-product samples) and, on the
        product rows, the patient-level ``n_product_clones,
        n_product_clones_detected_later, frac_product_clones_detected_later,
        frac_post_cells_from_product_clones,
        frac_post_car_cells_from_product_clones, n_post_samples``.
    """
    _check_cells(cells)
    meta = _sample_roles(_sample_meta(cells), primary_timepoint=primary_timepoint)
    car = _car_mask(cells)
    tcr_mask = cells["clone_id"].notna()
    tcr = cells[tcr_mask]
    car_tcr = car[tcr_mask] if car is not None else None
    counts = {s: g.value_counts() for s, g in tcr.groupby("sample", sort=True)["clone_id"]}
    rows = []
    for _patient, grp in meta.groupby("patient", sort=True):
        prod_samples = list(grp.index[grp["is_product"]])
        post_samples = list(grp.index[grp["is_post_infusion"].fillna(False).astype(bool)])
        prod_counts = (
            tcr[tcr["sample"].isin(prod_samples)]["clone_id"].value_counts()
            if prod_samples else pd.Series(dtype=int)
        )
        for s in grp.index:
            row: dict[str, Any] = {
                "sample": s,
                "is_product": bool(grp.loc[s, "is_product"]),
                "is_post_infusion": grp.loc[s, "is_post_infusion"],
                "product_samples": ",".join(prod_samples) if prod_samples else pd.NA,
            }
            c = counts.get(s, pd.Series(dtype=int))
            if prod_samples and not row["is_product"] and len(prod_counts):
                _overlap_with_product(row, c, prod_counts=prod_counts, tcr=tcr, car_tcr=car_tcr)
            if row["is_product"] and len(prod_counts):
                _product_persistence(row, prod_clones=set(prod_counts.index),
                                     post_samples=post_samples, tcr=tcr, car_tcr=car_tcr)
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=_PERSISTENCE_COLUMNS)


def track_clones(cells: pd.DataFrame, *, primary_timepoint: str) -> pd.DataFrame:
    """Size of every clone in every sample of its patient, with persistence flags.

    Returns
    -------
    DataFrame
        One row per patient × clone × sample where the clone was seen:
        ``patient, clone_id, sample, timepoint, timepoint_day, compartment,
        is_product, is_post_infusion, n_cells, frac_sample`` (of the sample's
        cells with TCR), ``n_car_positive``, ``clone_size`` (all samples),
        ``product_n_cells``, ``in_product``, ``n_samples_detected``,
        ``n_post_samples_detected`` and ``is_persistent`` (a product clone seen
        in a post-infusion sample). Sorted by patient, clone size (desc), clone,
        timepoint_day, sample.
    """
    _check_cells(cells)
    meta = _sample_roles(_sample_meta(cells), primary_timepoint=primary_timepoint)
    tcr = cells[cells["clone_id"].notna()].copy()
    car = _car_mask(cells)
    tcr["_car"] = car[tcr.index].astype(int) if car is not None else 0
    g = tcr.groupby(["patient", "clone_id", "sample"], sort=True)
    tab = g.size().rename("n_cells").to_frame()
    tab["n_car_positive"] = g["_car"].sum() if car is not None else pd.NA
    tab = tab.reset_index()
    tab = tab.join(
        meta[["timepoint", "timepoint_day", "compartment", "is_product", "is_post_infusion"]]
        if "compartment" in meta else
        meta[["timepoint", "timepoint_day", "is_product", "is_post_infusion"]],
        on="sample",
    )
    n_tcr = tcr.groupby("sample").size()
    tab["frac_sample"] = tab["n_cells"] / tab["sample"].map(n_tcr)
    by_clone = tab.groupby(["patient", "clone_id"])
    tab["clone_size"] = by_clone["n_cells"].transform("sum")
    tab["product_n_cells"] = (tab["n_cells"] * tab["is_product"]).groupby(
        [tab["patient"], tab["clone_id"]]).transform("sum")
    tab["in_product"] = tab["product_n_cells"] > 0
    tab["n_samples_detected"] = by_clone["sample"].transform("nunique")
    post = tab["is_post_infusion"].fillna(False).astype(bool)
    tab["n_post_samples_detected"] = post.astype(int).groupby(
        [tab["patient"], tab["clone_id"]]).transform("sum")
    tab["is_persistent"] = tab["in_product"] & (tab["n_post_samples_detected"] > 0)
    tab = tab.sort_values(
        ["patient", "clone_size", "clone_id", "timepoint_day", "sample"],
        ascending=[True, False, True, True, True], kind="mergesort",
    )
    cols = ["patient", "clone_id", "sample", "timepoint", "timepoint_day", "compartment",
            "is_product", "is_post_infusion", "n_cells", "frac_sample", "n_car_positive",
            "clone_size", "product_n_cells", "in_product", "n_samples_detected",
            "n_post_samples_detected", "is_persistent"]
    return tab.reindex(columns=cols).reset_index(drop=True)


def clone_states(cells: pd.DataFrame, *, min_size: int = 3) -> pd.DataFrame:
    """Cell-state composition of expanded clones.

    Parameters
    ----------
    cells
        ``cells.tsv.gz`` with ``state``.
    min_size
        A clone is expanded when it has at least this many cells (all samples).

    Returns
    -------
    DataFrame
        Long table: ``patient, clone_id, clone_size, n_samples, frac_car_positive,
        state, n_cells, fraction, dominant_state`` (one row per state present).
    """
    _check_cells(cells, extra=("state",))
    tcr = cells[cells["clone_id"].notna()].copy()
    car = _car_mask(cells)
    tcr["_car"] = car[tcr.index].astype(float) if car is not None else np.nan
    size = tcr.groupby("clone_id").size()
    expanded = size.index[size >= min_size]
    tcr = tcr[tcr["clone_id"].isin(expanded)]
    cols = ["patient", "clone_id", "clone_size", "n_samples", "frac_car_positive", "state",
            "n_cells", "fraction", "dominant_state"]
    if tcr.empty:
        return pd.DataFrame(columns=cols)
    per = tcr.groupby(["patient", "clone_id", "state"], sort=True).size().rename("n_cells")
    per = per.reset_index()
    clone_g = tcr.groupby("clone_id")
    per["clone_size"] = per["clone_id"].map(size)
    per["n_samples"] = per["clone_id"].map(clone_g["sample"].nunique())
    per["frac_car_positive"] = per["clone_id"].map(clone_g["_car"].mean())
    per["fraction"] = per["n_cells"] / per["clone_size"]
    dom = per.sort_values(["clone_id", "n_cells", "state"], ascending=[True, False, True],
                          kind="mergesort").groupby("clone_id")["state"].first()
    per["dominant_state"] = per["clone_id"].map(dom)
    per = per.sort_values(["patient", "clone_size", "clone_id", "n_cells", "state"],
                          ascending=[True, False, True, False, True], kind="mergesort")
    return per.reindex(columns=cols).reset_index(drop=True)


@dataclass(frozen=True)
class RepertoireTables:
    """Outputs of :func:`repertoire_tables` (rule ``repertoire``)."""

    #: :func:`repertoire_by_sample` joined with :func:`persistence_by_sample`.
    samples: pd.DataFrame
    #: :func:`track_clones`.
    tracking: pd.DataFrame
    #: :func:`clone_states`.
    states: pd.DataFrame


def repertoire_tables(
    cells: pd.DataFrame,
    *,
    primary_timepoint: str,
    rarefaction_depth: RarefactionDepth = "auto",
    rarefaction_min_cells: int = 50,
    n_bootstrap: int = 200,
    seed: int = 0,
    expanded_min_size: int = 3,
) -> RepertoireTables:
    """All repertoire outputs from ``cells.tsv.gz``: expansion, diversity, persistence, states.

    Parameters
    ----------
    cells
        One row per QC-passing cell (``cells.tsv.gz``) with ``clone_id``; the
        optional ``state`` column gives :func:`clone_states`.
    primary_timepoint
        Timepoint of the infusion product (see :func:`persistence_by_sample`).
    rarefaction_depth, rarefaction_min_cells
        Rarefaction depth, ``"auto"`` or an integer, and the smallest sample
        considered by ``"auto"`` (see :func:`choose_depth`).
    n_bootstrap, seed
        Subsamples / bootstrap samples and master seed of :func:`rarefied_diversity`.
    expanded_min_size
        Cells a clone needs to appear in :func:`clone_states`.

    Returns
    -------
    RepertoireTables
        ``samples``: one row per sample, the columns of
        :func:`repertoire_by_sample` then those of :func:`persistence_by_sample`;
        ``tracking``: :func:`track_clones`; ``states``: :func:`clone_states`
        (empty, with ``patient, clone_id, state, n_cells``, when ``cells`` has
        no ``state``).
    """
    _check_cells(cells)
    cells = cells.copy()
    cells["clone_id"] = cells["clone_id"].astype(object).where(cells["clone_id"].notna())
    rep = repertoire_by_sample(cells, depth=rarefaction_depth, min_cells=rarefaction_min_cells,
                               n_bootstrap=n_bootstrap, seed=seed)
    pers = persistence_by_sample(cells, primary_timepoint=primary_timepoint)
    samples = rep.merge(pers, on="sample", how="left", validate="one_to_one")
    tracking = track_clones(cells, primary_timepoint=primary_timepoint)
    if "state" in cells.columns:
        states = clone_states(cells, min_size=expanded_min_size)
    else:
        log.warning("cells table has no 'state' column; clone_states is empty")
        states = pd.DataFrame(columns=["patient", "clone_id", "state", "n_cells"])
    log.info("%d samples, %d tracked clone x sample rows, %d clone-state rows",
             len(samples), len(tracking), len(states))
    return RepertoireTables(samples=samples, tracking=tracking, states=states)
