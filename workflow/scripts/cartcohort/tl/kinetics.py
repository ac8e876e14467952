"""CAR+ clone kinetics after infusion: expansion, persistence and clone fate.

From the per-cell table ``cells.tsv.gz`` (one row per QC-passing cell with ``clone_id``,
``car_positive`` and ``state``), for each patient:

* **Clones** (:func:`clone_kinetics`): for every clone seen in the product or in a
  post-infusion library, its frequency in the product and in that library among T cells
  with a TCR and among CAR+ T cells with a TCR, each with a Clopper–Pearson interval; the
  fold change product -> library with a Haldane–Anscombe pseudocount and Katz log
  interval; Fisher's exact test with Benjamini–Hochberg q-values within the patient
  (see :mod:`~cartcohort.tl.kinetics_stats` for why); and a class. The fold change of a
  CAR-sorted library is computed among CAR+ cells (``fc_basis``), where the sort does
  not bias it. Every row states the depths (TCR cells) of both libraries.
* **Samples** (:func:`kinetics_samples`): CAR+ fraction with its interval, clonality
  (1 - Pielou) and the Morisita–Horn overlap with the patient's previous library, with a
  permutation p-value.
* **Patients** (:func:`kinetics_patients`): CAR+ fraction over the blood libraries
  (unsorted) with its trapezoid area under the curve over the sampled interval, the day
  of the last CAR+ detection, the share of post-infusion CAR+ cells from the top product
  clones, class counts and the product's clonality. These are **in vivo** features:
  outcome correlates, never predictors of response.
* **Clone fate** (:func:`clone_fate`): for clones seen in the product and later, the
  transition matrix product state -> dominant in vivo state, per patient and pooled
  (transition probabilities by clone, in the spirit of STARTRAC's pTrans).

Classes (column ``kinetic_class``): ``expanded`` / ``contracted`` (q < ``alpha``, fold
change above / below 1), ``persisting`` (in the product and in the library, no
significant change), ``undetected`` (a product clone not seen in the library and not
significantly contracted: at that depth it may simply be missed) and ``emergent`` (seen in
the library, not in the product; the note says "not detected in product at depth N":
it may be a product clone below the product's sampling depth). Clones with fewer than
``min_cells_test`` cells in the two libraries together are not tested (``pvalue`` NA).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..multitest import bh_qvalues
from .kinetics_stats import (
    auc_trapezoid,
    clonality,
    clopper_pearson_arrays,
    fisher_pvalues,
    fold_change_ci,
    morisita_horn_permutation,
)
from .repertoire import _car_mask, _check_cells, _sample_meta, _sample_roles

log = logging.getLogger(__name__)

KINETIC_CLASSES: tuple[str, ...] = (
    "expanded", "persisting", "contracted", "undetected", "emergent",
)
NOTE_COLUMNS: list[str] = ["sample", "step", "check", "count", "detail", "action"]
CLONE_COLUMNS: list[str] = [
    "patient", "clone_id", "sample", "timepoint", "timepoint_day", "compartment", "sort",
    "product_depth", "depth", "product_n_cells", "n_cells", "product_freq",
    "product_freq_ci_low", "product_freq_ci_high", "freq", "freq_ci_low", "freq_ci_high",
    "product_car_depth", "car_depth", "product_n_car", "n_car", "product_freq_car",
    "product_freq_car_ci_low", "product_freq_car_ci_high", "freq_car", "freq_car_ci_low",
    "freq_car_ci_high", "fc_basis", "fold_change", "fc_ci_low", "fc_ci_high", "pvalue",
    "qvalue", "kinetic_class", "class_note",
]


def _note(sample: str, check: str, detail: str, action: str, count: int = 1) -> dict:
    return {"sample": sample, "step": "kinetics", "check": check, "count": count,
            "detail": detail, "action": action}


def _is_sorted(sort: Any, patterns: Sequence[str]) -> bool:
    return isinstance(sort, str) and any(p in sort for p in patterns)


@dataclass(frozen=True)
class _Prepared:
    meta: pd.DataFrame  # per sample: patient, timepoint, day, compartment, sort, roles
    tcr: pd.DataFrame  # cells with a clone id: sample, patient, clone_id, _car, state
    has_car: bool


def _prepare(cells: pd.DataFrame, *, primary_timepoint: str) -> _Prepared:
    _check_cells(cells)
    meta = _sample_roles(_sample_meta(cells), primary_timepoint=primary_timepoint)
    meta["sort"] = cells.groupby("sample")["sort"].first() if "sort" in cells else pd.NA
    car = _car_mask(cells)
    tcr = cells.loc[cells["clone_id"].notna(), ["sample", "patient", "clone_id"]].copy()
    tcr["clone_id"] = tcr["clone_id"].astype(str)
    tcr["_car"] = car[tcr.index].to_numpy() if car is not None else False
    tcr["state"] = cells.loc[tcr.index, "state"] if "state" in cells else pd.NA
    return _Prepared(meta=meta, tcr=tcr, has_car=car is not None)


def _counts(tcr: pd.DataFrame, samples: Sequence[str], car: bool = False) -> pd.Series:
    sel = tcr[tcr["sample"].isin(list(samples))]
    if car:
        sel = sel[sel["_car"]]
    return sel["clone_id"].value_counts()


def _pair_rows(
    prod: tuple[pd.Series, pd.Series],
    later: tuple[pd.Series, pd.Series],
    *,
    car_basis: bool,
    pseudocount: float,
    ci: float,
    min_cells_test: int,
) -> pd.DataFrame:
    """Frequencies, fold change and test of every clone of one product -> library pair."""
    (pc, pcar), (lc, lcar) = prod, later
    clones = pc.index.union(lc.index)
    t = pd.DataFrame(index=clones)
    t["product_n_cells"] = pc.reindex(clones, fill_value=0)
    t["n_cells"] = lc.reindex(clones, fill_value=0)
    t["product_n_car"] = pcar.reindex(clones, fill_value=0)
    t["n_car"] = lcar.reindex(clones, fill_value=0)
    t["product_depth"], t["depth"] = int(pc.sum()), int(lc.sum())
    t["product_car_depth"], t["car_depth"] = int(pcar.sum()), int(lcar.sum())
    for pre, k, n in (("product_freq", "product_n_cells", "product_depth"),
                      ("freq", "n_cells", "depth"),
                      ("product_freq_car", "product_n_car", "product_car_depth"),
                      ("freq_car", "n_car", "car_depth")):
        kk, nn = t[k].to_numpy(), t[n].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            t[pre] = np.where(nn > 0, kk / np.maximum(nn, 1), np.nan)
        t[f"{pre}_ci_low"], t[f"{pre}_ci_high"] = clopper_pearson_arrays(kk, nn, ci=ci)
    k1, n1, k2, n2 = (("product_n_car", "product_car_depth", "n_car", "car_depth")
                      if car_basis else
                      ("product_n_cells", "product_depth", "n_cells", "depth"))
    a, n, c, m = (t[x].to_numpy() for x in (k1, n1, k2, n2))
    t["fc_basis"] = "CAR+ cells" if car_basis else "T cells"
    t["fold_change"], t["fc_ci_low"], t["fc_ci_high"] = fold_change_ci(
        a, n, c, m, pseudocount=pseudocount, ci=ci)
    test = (a + c) >= min_cells_test
    p = np.full(len(t), np.nan)
    if test.any():
        p[test] = fisher_pvalues(a[test], n[test], c[test], m[test])
    t["pvalue"] = p
    t["_k1"], t["_k2"], t["_n1"] = a, c, n
    return t.rename_axis("clone_id").reset_index()


def _classify(t: pd.DataFrame, *, alpha: float) -> pd.DataFrame:
    q = t["qvalue"].to_numpy(float)
    sig = np.isfinite(q) & (q < alpha)
    k1, k2, n1 = t["_k1"].to_numpy(), t["_k2"].to_numpy(), t["_n1"].to_numpy()
    fc = t["fold_change"].to_numpy(float)
    cls = np.where(k1 == 0, "emergent",
                   np.where(sig & (fc > 1), "expanded",
                            np.where(sig & (fc < 1), "contracted",
                                     np.where(k2 > 0, "persisting", "undetected"))))
    basis = t["fc_basis"].astype(str)
    depth2 = np.where(basis == "T cells", t["depth"], t["car_depth"])
    notes = []
    for c, n1_, d2, b, test in zip(cls, n1, depth2, basis, np.isfinite(q), strict=True):
        what = "TCR" if b == "T cells" else "CAR+ TCR"
        if c == "emergent":
            notes.append(f"not detected in product at depth {int(n1_)} {what} cells")
        elif c == "undetected":
            notes.append(f"not detected at depth {int(d2)} {what} cells; may be missed")
        elif not test:
            notes.append("too few cells to test (kinetics.min_cells_test)")
        else:
            notes.append(f"depths {int(n1_)} (product) and {int(d2)} {what} cells")
    t["kinetic_class"] = cls
    t["class_note"] = notes
    return t


def _patient_clones(
    prep: _Prepared,
    patient: str,
    grp: pd.DataFrame,
    notes: list[dict],
    *,
    car_sorted_patterns: Sequence[str],
    pseudocount: float,
    ci: float,
    min_cells_test: int,
) -> pd.DataFrame | None:
    """Clone rows of one patient's post-infusion libraries (None: nothing to compare)."""
    prod = list(grp.index[grp["is_product"]])
    post = grp[grp["is_post_infusion"].fillna(False).astype(bool)]
    if not prod or post.empty:
        notes.append(_note(patient, "single_timepoint",
                           f"patient {patient} has no {'product' if not prod else 'post'}"
                           "-infusion library: no clone kinetics",
                           "none needed; add the missing library to the sheet to track"))
        return None
    pc, pcar = _counts(prep.tcr, prod), _counts(prep.tcr, prod, car=True)
    if pc.sum() == 0:
        notes.append(_note(patient, "no_tcr", f"product of {patient} has no TCR cells",
                           "check the vdj column of the sheet for the product"))
        return None
    parts = []
    for s, row in post.sort_values("timepoint_day").iterrows():
        lc = _counts(prep.tcr, [s])
        if lc.sum() == 0:
            notes.append(_note(str(s), "no_tcr", f"library {s} has no cell with a TCR: "
                               "left out of clone kinetics",
                               "check the vdj column of the sheet for this library"))
            continue
        car_basis = _is_sorted(row["sort"], car_sorted_patterns)
        if car_basis and not prep.has_car:
            notes.append(_note(str(s), "no_car_feature", f"CAR-sorted library {s}: no CAR "
                               "calls, fold change among all T cells (biased by the sort)",
                               "add the CAR feature to the reference"))
            car_basis = False
        t = _pair_rows((pc, pcar), (lc, _counts(prep.tcr, [s], car=True)),
                       car_basis=car_basis, pseudocount=pseudocount, ci=ci,
                       min_cells_test=min_cells_test)
        t["sample"] = s
        for col in ("timepoint", "timepoint_day", "compartment", "sort"):
            t[col] = row.get(col, pd.NA)
        parts.append(t)
    if not parts:
        return None
    tab = pd.concat(parts, ignore_index=True)
    tab["patient"] = patient
    return tab


def clone_kinetics(
    cells: pd.DataFrame,
    *,
    primary_timepoint: str,
    car_sorted_patterns: Sequence[str] = ("CAR+", "CAT+"),
    alpha: float = 0.05,
    min_cells_test: int = 3,
    pseudocount: float = 0.5,
    ci: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patient x clone x post-infusion library: frequencies, fold change, test, class.

    Parameters
    ----------
    cells
        ``cells.tsv.gz`` rows (needs ``clone_id``; ``car_positive``, ``sort`` optional).
    primary_timepoint
        Timepoint of the infusion product (``primary_timepoint``).
    car_sorted_patterns
        Substrings of ``sort`` that mark CAR-enriched libraries (their fold change is
        computed among CAR+ cells).
    alpha
        q-value threshold of the expanded / contracted classes.
    min_cells_test
        Clones with fewer cells in the product and library together are not tested.
    pseudocount, ci
        Of the fold change (:func:`~cartcohort.tl.kinetics_stats.fold_change_ci`) and
        of every interval.

    Returns
    -------
    tuple of DataFrame
        The clone table (:data:`CLONE_COLUMNS`) and notes (:data:`NOTE_COLUMNS`).
    """
    prep = _prepare(cells, primary_timepoint=primary_timepoint)
    frames, notes = [], []
    opts = {"car_sorted_patterns": car_sorted_patterns, "pseudocount": pseudocount, "ci": ci,
            "min_cells_test": min_cells_test}
    for patient, grp in prep.meta.groupby("patient", sort=True):
        tab = _patient_clones(prep, str(patient), grp, notes, **opts)
        if tab is not None:
            tab["qvalue"] = bh_qvalues(tab["pvalue"].to_numpy(float))
            frames.append(_classify(tab, alpha=alpha))
    if not prep.has_car:
        notes.append(_note("", "no_car_feature", "no CAR+ calls in the cohort: CAR+ "
                           "frequencies and CAR kinetics left NA",
                           "add the CAR feature to the reference (annotate.car_*)"))
    out = (pd.concat(frames, ignore_index=True) if frames
           else pd.DataFrame(columns=CLONE_COLUMNS))
    out = out.sort_values(["patient", "timepoint_day", "sample", "product_n_cells", "clone_id"],
                          ascending=[True, True, True, False, True], kind="mergesort")
    return out.reindex(columns=CLONE_COLUMNS).reset_index(drop=True), pd.DataFrame(
        notes, columns=NOTE_COLUMNS)


SAMPLE_COLUMNS: list[str] = [
    "patient", "sample", "timepoint", "timepoint_day", "compartment", "sort", "is_product",
    "is_post_infusion", "n_cells", "n_car", "car_fraction", "car_fraction_ci_low",
    "car_fraction_ci_high", "n_cells_tcr", "n_clones", "clonality", "previous_sample",
    "morisita_horn_previous", "morisita_horn_pvalue",
]


def kinetics_samples(
    cells: pd.DataFrame,
    *,
    primary_timepoint: str,
    n_permutations: int = 999,
    overlap_universe: int | None = 1_000_000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per library: CAR+ fraction, clonality and overlap with the patient's previous library.

    Parameters
    ----------
    cells
        ``cells.tsv.gz`` rows.
    primary_timepoint
        Timepoint of the infusion product.
    n_permutations, overlap_universe, seed
        Of the Morisita–Horn permutation p-value
        (:func:`~cartcohort.tl.kinetics_stats.morisita_horn_permutation`, ``universe``:
        the number of possible clones of its null); each pair's
        generator is seeded from ``seed`` and the pair's position in the sorted sheet.
    ci
        Level of the CAR+ fraction interval (Clopper–Pearson).

    Returns
    -------
    DataFrame
        :data:`SAMPLE_COLUMNS`; the previous library is the patient's library with the
        next-smaller ``timepoint_day`` (ties: sample order); CAR columns NA without
        CAR calls.
    """
    prep = _prepare(cells, primary_timepoint=primary_timepoint)
    car = _car_mask(cells)
    meta = prep.meta.copy()
    meta["n_car"] = (cells.assign(_c=car).groupby("sample")["_c"].sum()
                     if car is not None else np.nan)
    counts = {s: g.value_counts() for s, g in prep.tcr.groupby("sample")["clone_id"]}
    rows = []
    for i, (patient, grp) in enumerate(meta.groupby("patient", sort=True)):
        grp = grp.sort_values("timepoint_day", kind="mergesort")
        prev = None
        for j, (s, r) in enumerate(grp.iterrows()):
            c = counts.get(s, pd.Series(dtype=int))
            row = {"patient": patient, "sample": s, **{k: r.get(k) for k in (
                "timepoint", "timepoint_day", "compartment", "sort", "is_product",
                "is_post_infusion", "n_cells", "n_car")},
                "n_cells_tcr": int(c.sum()), "n_clones": len(c),
                "clonality": clonality(c.to_numpy())}
            if prev is not None:
                pcnt = counts.get(prev, pd.Series(dtype=int))
                idx = c.index.union(pcnt.index)
                mh, p = morisita_horn_permutation(
                    pcnt.reindex(idx, fill_value=0).to_numpy(),
                    c.reindex(idx, fill_value=0).to_numpy(),
                    n_permutations=n_permutations, universe=overlap_universe,
                    seed=np.random.SeedSequence([int(seed), i, j]))
                row.update(previous_sample=prev, morisita_horn_previous=mh,
                           morisita_horn_pvalue=p)
            rows.append(row)
            prev = s
    out = pd.DataFrame(rows).reindex(columns=SAMPLE_COLUMNS)
    if car is not None:
        lo, hi = clopper_pearson_arrays(out["n_car"].to_numpy(float),
                                        out["n_cells"].to_numpy(float), ci=ci)
        out["car_fraction"] = out["n_car"] / out["n_cells"]
        out["car_fraction_ci_low"], out["car_fraction_ci_high"] = lo, hi
    return out


PATIENT_COLUMNS: list[str] = [
    "patient", "n_post_samples", "blood_days", "car_fraction_blood", "car_auc_blood",
    "car_auc_interval_days", "car_mean_fraction_blood", "car_fraction_last_blood",
    "last_car_detection_day", "expanded_log2_retention", "n_expanded_first",
    "post_car_share_top_product_clones", "product_clonality",
    *(f"n_{c}" for c in KINETIC_CLASSES), "frac_tested_expanded", "note",
]


def _blood_car_curve(grp: pd.DataFrame, *, blood_compartment: str,
                     car_sorted_patterns: Sequence[str]) -> pd.DataFrame:
    """Unsorted blood libraries of one patient (post infusion), by day."""
    blood = grp[(grp["compartment"].astype(str) == str(blood_compartment))
                & grp["is_post_infusion"].fillna(False).astype(bool)
                & ~grp["sort"].map(lambda v: _is_sorted(v, car_sorted_patterns))]
    return blood.sort_values("timepoint_day", kind="mergesort")


def expanded_retention(clones: pd.DataFrame) -> tuple[float, int]:
    """Median log2 change, first -> last post-infusion library, of the early-expanded clones.

    The clones called ``expanded`` in the patient's first post-infusion library (by day)
    are followed to its last one; each clone's frequency in both is taken on the last
    library's ``fc_basis`` (T cells, or CAR+ cells for a CAR-sorted library) with a 0.5
    pseudocount, so the ratio is not biased by a sort. 0 = the clones keep their share,
    negative = they contract (CAR+ clones do not persist). NaN with one post library or
    no early-expanded clone.

    Returns
    -------
    tuple
        ``(median log2 ratio, number of early-expanded clones)``.
    """
    if clones.empty:
        return float("nan"), 0
    days = clones.groupby("sample")["timepoint_day"].first().sort_values(kind="mergesort")
    if len(days) < 2:
        return float("nan"), 0
    first, last = clones[clones["sample"] == days.index[0]], clones[
        clones["sample"] == days.index[-1]]
    early = first.loc[first["kinetic_class"] == "expanded", "clone_id"]
    if early.empty:
        return float("nan"), 0
    car = str(last["fc_basis"].iloc[0]) != "T cells"
    k, n = ("n_car", "car_depth") if car else ("n_cells", "depth")

    def freq(t: pd.DataFrame) -> pd.Series:
        t = t.set_index("clone_id")
        return (t[k].reindex(early).fillna(0) + 0.5) / (float(t[n].iloc[0]) + 1.0)

    return float(np.median(np.log2(freq(last) / freq(first)))), len(early)


def _car_curve_features(blood: pd.DataFrame, post: pd.DataFrame) -> dict[str, Any]:
    """CAR+ curve of the unsorted blood libraries, and the last CAR+ detection day."""
    fr = blood["car_fraction"].to_numpy(float)
    days = blood["timepoint_day"].to_numpy(float)
    out: dict[str, Any] = {
        "blood_days": ",".join(f"{d:g}" for d in days) or pd.NA,
        "car_fraction_blood": ";".join(
            f"{d:g}:{f:.4g}" for d, f in zip(days, fr, strict=True)) or pd.NA,
        "car_auc_blood": auc_trapezoid(days, fr),
        "car_auc_interval_days": float(np.ptp(days)) if len(days) > 1 else np.nan,
        "car_fraction_last_blood": fr[-1] if len(fr) else np.nan,
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        out["car_mean_fraction_blood"] = out["car_auc_blood"] / out["car_auc_interval_days"]
    det = post[post["n_car"].fillna(0) > 0]["timepoint_day"]
    out["last_car_detection_day"] = float(det.max()) if len(det) else np.nan
    return out


def kinetics_patients(
    samples: pd.DataFrame,
    clones: pd.DataFrame,
    cells: pd.DataFrame,
    *,
    primary_timepoint: str,
    blood_compartment: str = "PB",
    car_sorted_patterns: Sequence[str] = ("CAR+", "CAT+"),
    top_product_clones: int = 10,
) -> pd.DataFrame:
    """Per patient in vivo kinetics features (outcome correlates, not predictors).

    Parameters
    ----------
    samples, clones
        :func:`kinetics_samples` and :func:`clone_kinetics` tables.
    cells
        ``cells.tsv.gz`` rows (for the top-product-clone share of CAR+ cells).
    primary_timepoint
        Timepoint of the infusion product.
    blood_compartment
        Compartment of blood libraries (``associate.blood_compartment``); CAR-sorted
        libraries are left out of the CAR+ curve (the sort sets their CAR+ share).
    car_sorted_patterns
        Substrings of ``sort`` that mark CAR-enriched libraries.
    top_product_clones
        The largest product clones counted in ``post_car_share_top_product_clones``.

    Returns
    -------
    DataFrame
        :data:`PATIENT_COLUMNS`: the CAR+ fraction of each unsorted post-infusion blood
        library (``day:fraction``, ``;``-joined), its trapezoid AUC (fraction x days)
        over the sampled interval, that AUC per day and the last library's fraction;
        :func:`expanded_retention`; the last post-infusion day with a
        CAR+ cell (any library); the share of post-infusion CAR+ TCR cells from the
        ``top_product_clones`` largest product clones; the product's clonality; class
        counts (NA for a patient without clone kinetics) and the share of tested clone
        rows called expanded.
    """
    prep = _prepare(cells, primary_timepoint=primary_timepoint)
    rows = []
    for patient, grp in samples.groupby("patient", sort=True):
        grp = grp.set_index("sample")
        post = grp[grp["is_post_infusion"].fillna(False).astype(bool)]
        row: dict[str, Any] = {"patient": patient, "n_post_samples": len(post)}
        prod = grp[grp["is_product"].fillna(False).astype(bool)]
        if len(prod):
            row["product_clonality"] = prod["clonality"].iloc[0] if len(prod) == 1 else (
                clonality(_counts(prep.tcr, list(prod.index)).to_numpy()))
        blood = _blood_car_curve(grp, blood_compartment=blood_compartment,
                                 car_sorted_patterns=car_sorted_patterns)
        row.update(_car_curve_features(blood, post))
        if len(prod) and len(post):
            top = _counts(prep.tcr, list(prod.index)).index[:top_product_clones]
            pc = prep.tcr[prep.tcr["sample"].isin(list(post.index)) & prep.tcr["_car"]]
            row["post_car_share_top_product_clones"] = (
                pc["clone_id"].isin(top).mean() if len(pc) else np.nan)
        cl = clones[clones["patient"] == patient]
        row["expanded_log2_retention"], row["n_expanded_first"] = expanded_retention(cl)
        for c in KINETIC_CLASSES:  # NA, not 0, for a patient without clone kinetics
            row[f"n_{c}"] = int((cl["kinetic_class"] == c).sum()) if len(cl) else np.nan
        tested = cl["pvalue"].notna()
        row["frac_tested_expanded"] = ((cl.loc[tested, "kinetic_class"] == "expanded").mean()
                                       if tested.any() else np.nan)
        notes = []
        if not len(post):
            notes.append("single timepoint: no post-infusion library")
        if len(blood) < 2:
            notes.append(f"fewer than 2 unsorted {blood_compartment} libraries after infusion:"
                         " no CAR+ AUC")
        row["note"] = "; ".join(notes) or pd.NA
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=PATIENT_COLUMNS)


FATE_COLUMNS: list[str] = ["scope", "product_state", "in_vivo_state", "n_clones",
                           "n_cells_in_vivo", "transition_probability", "n_from"]


def clone_fate(cells: pd.DataFrame, *, primary_timepoint: str,
               top_product_clones: int = 10) -> pd.DataFrame:
    """Product state -> in vivo state transitions of clones seen in the product and later.

    A clone's state at either end is the dominant ``state`` of its cells in the product
    (pooled product libraries) and in the pooled post-infusion libraries (ties: the
    state name first in sort order). Rows count clones per transition, per patient
    (``scope`` = patient id) and pooled over patients (``scope`` = ``pooled``);
    ``transition_probability`` is the share of the ``product_state`` clones that end in
    ``in_vivo_state`` (row-normalised by clones, as STARTRAC's pTrans is a
    clone-sharing index between states), ``n_cells_in_vivo`` the in vivo cells of those
    clones. Scope ``top_product_clones`` pools each patient's ``top_product_clones``
    largest product clones (product cells; ties by clone id) among those seen again: the
    fate of what dominated the infused product.

    Returns
    -------
    DataFrame
        :data:`FATE_COLUMNS`; empty without a ``state`` column or tracked clones.
    """
    prep = _prepare(cells, primary_timepoint=primary_timepoint)
    if "state" not in cells.columns:
        return pd.DataFrame(columns=FATE_COLUMNS)
    role = prep.meta["is_product"].map({True: "product", False: pd.NA}).astype(object)
    post = prep.meta["is_post_infusion"].fillna(False).astype(bool)
    role[post] = "post"
    t = prep.tcr.assign(role=prep.tcr["sample"].map(role)).dropna(subset=["role", "state"])
    if t.empty:
        return pd.DataFrame(columns=FATE_COLUMNS)
    n = t.groupby(["patient", "clone_id", "role", "state"]).size().rename("n").reset_index()
    n = n.sort_values(["patient", "clone_id", "role", "n", "state"],
                      ascending=[True, True, True, False, True], kind="mergesort")
    dom = n.groupby(["patient", "clone_id", "role"]).agg(state=("state", "first"),
                                                        total=("n", "sum")).reset_index()
    wide = dom.pivot_table(index=["patient", "clone_id"], columns="role",
                           values=["state", "total"], aggfunc="first")
    if ("state", "product") not in wide or ("state", "post") not in wide:
        return pd.DataFrame(columns=FATE_COLUMNS)
    tr = pd.DataFrame({"product_state": wide[("state", "product")],
                       "in_vivo_state": wide[("state", "post")],
                       "n_product": wide[("total", "product")],
                       "n_post": wide[("total", "post")]}).dropna().reset_index()
    top = (tr.sort_values(["patient", "n_product", "clone_id"],
                          ascending=[True, False, True], kind="mergesort")
           .groupby("patient", sort=False).head(int(top_product_clones)))
    frames = []
    for scope, sub in [*tr.groupby("patient", sort=True), ("pooled", tr),
                       ("top_product_clones", top)]:
        g = sub.groupby(["product_state", "in_vivo_state"])
        f = pd.DataFrame({"n_clones": g.size(), "n_cells_in_vivo": g["n_post"].sum()})
        f = f.reset_index()
        f["n_from"] = f.groupby("product_state")["n_clones"].transform("sum")
        f["transition_probability"] = f["n_clones"] / f["n_from"]
        f["scope"] = scope
        frames.append(f)
    return pd.concat(frames, ignore_index=True).reindex(columns=FATE_COLUMNS)


@dataclass(frozen=True)
class KineticsTables:
    """Outputs of :func:`kinetics_tables` (rule ``kinetics``)."""

    #: :func:`clone_kinetics`.
    clones: pd.DataFrame
    #: :func:`kinetics_samples`.
    samples: pd.DataFrame
    #: :func:`kinetics_patients`.
    patients: pd.DataFrame
    #: :func:`clone_fate`.
    fate: pd.DataFrame
    #: notes in the layout of ``warnings.tsv``.
    notes: pd.DataFrame


def kinetics_tables(
    cells: pd.DataFrame,
    *,
    primary_timepoint: str,
    blood_compartment: str = "PB",
    car_sorted_patterns: Sequence[str] = ("CAR+", "CAT+"),
    alpha: float = 0.05,
    min_cells_test: int = 3,
    pseudocount: float = 0.5,
    ci: float = 0.95,
    n_permutations: int = 999,
    overlap_universe: int | None = 1_000_000,
    top_product_clones: int = 10,
    seed: int = 0,
) -> KineticsTables:
    """All clone-kinetics outputs from ``cells.tsv.gz`` (rule ``kinetics``).

    Parameters
    ----------
    cells
        One row per QC-passing cell.
    primary_timepoint, blood_compartment, car_sorted_patterns
        See :func:`kinetics_patients`.
    alpha, min_cells_test, pseudocount, ci
        See :func:`clone_kinetics`.
    n_permutations, overlap_universe, seed
        See :func:`kinetics_samples`.
    top_product_clones
        See :func:`kinetics_patients`; also the clones of the fate figure
        (:func:`clone_fate`).

    Returns
    -------
    KineticsTables
        Clone, sample, patient and clone-fate tables, and notes.
    """
    cells = cells.copy()
    cells["clone_id"] = cells["clone_id"].astype(object).where(cells["clone_id"].notna())
    clones, notes = clone_kinetics(
        cells, primary_timepoint=primary_timepoint, car_sorted_patterns=car_sorted_patterns,
        alpha=alpha, min_cells_test=min_cells_test, pseudocount=pseudocount, ci=ci)
    samples = kinetics_samples(cells, primary_timepoint=primary_timepoint,
                               n_permutations=n_permutations,
                               overlap_universe=overlap_universe, seed=seed, ci=ci)
    patients = kinetics_patients(
        samples, clones, cells, primary_timepoint=primary_timepoint,
        blood_compartment=blood_compartment, car_sorted_patterns=car_sorted_patterns,
        top_product_clones=top_product_clones)
    fate = clone_fate(cells, primary_timepoint=primary_timepoint,
                      top_product_clones=top_product_clones)
    log.info("%d clone rows, %d patients, %d fate rows, %d notes", len(clones),
             len(patients), len(fate), len(notes))
    return KineticsTables(clones=clones, samples=samples, patients=patients, fate=fate,
                          notes=notes)
