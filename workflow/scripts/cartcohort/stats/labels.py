"""Inputs of the association tests: response labels, patient rows, covariates, features.

The statistical unit is the **patient**. When a patient has several samples at the
primary timepoint (e.g. two product bags, or separately sorted CD4/CD8 fractions),
the patient's value is the ``n_cells``-weighted mean of the sample values (for
whole-sample fractions this equals pooling the cells); state counts for the
compositional test are summed.

Response groups: patients whose ``response`` is in ``responders`` (default ``CR``)
are responders; every other code is a non-responder except the ``excluded`` codes
(default ``NE``) and missing values, which are left out. In the workflow every code
of the clinical table is one of the config's ``responders``, ``non_responders`` and
``associate.exclude_responses``, or ``NA`` (not known; read as missing): any other
code, or an empty response, is refused before any job runs
(:func:`cartcohort.sheets.prepare_inputs`), and the NA patients are listed in
``warnings.tsv``. So "every other code" is exactly ``non_responders``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError, Problem
from ..tl.features import ID_COLUMNS, is_descriptive
from ._utils import notes_table

logger = logging.getLogger(__name__)

#: Columns of a patient-level table that are not features.
PATIENT_ID_COLUMNS: tuple[str, ...] = (
    "patient",
    "response",
    "responder",
    "n_samples",
    "samples",
)


def response_labels(
    clinical: pd.DataFrame,
    *,
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    source: str = "clinical table",
) -> pd.DataFrame:
    """Responder labels per patient.

    Parameters
    ----------
    clinical
        Clinical table with ``patient`` and ``response`` columns (``patient``
        may also be the index).
    responders
        Response codes counted as responders.
    excluded
        Codes left out of response comparisons (e.g. not evaluable).
    source
        File name for error messages.

    Returns
    -------
    pandas.DataFrame
        Indexed by patient (str), columns ``response`` (str or NA) and
        ``responder`` (nullable boolean; NA for excluded/missing responses).
    """
    clin = clinical
    if "patient" not in clin.columns:
        clin = clin.reset_index()
    problems = [
        Problem(
            file=source,
            where=f"column '{col}'",
            what="required column is missing",
            fix="the clinical table needs 'patient' and 'response' columns",
        )
        for col in ("patient", "response")
        if col not in clin.columns
    ]
    if problems:
        raise InputError(problems)
    patients = clin["patient"].astype(str)
    dup = patients[patients.duplicated()]
    if len(dup):
        raise InputError(
            [
                Problem(
                    file=source,
                    where="column 'patient'",
                    what=f"patient(s) {sorted(dup.unique())[:5]} appear on several rows",
                    fix="one row per patient",
                )
            ]
        )
    response = clin["response"].astype("string").str.strip()
    response = response.mask(response == "")
    responder = pd.Series(
        response.isin(list(responders)).to_numpy(), index=patients.to_numpy(), dtype="boolean"
    )
    drop = (response.isna() | response.isin(list(excluded))).to_numpy()
    responder[drop] = pd.NA
    out = pd.DataFrame(
        {"response": response.to_numpy(), "responder": responder.to_numpy()},
        index=pd.Index(patients.to_numpy(), name="patient"),
    )
    out["responder"] = out["responder"].astype("boolean")
    return out


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Numeric feature columns of a sample- or patient-level table.

    Identifiers (:data:`cartcohort.tl.features.ID_COLUMNS`, patient-table
    bookkeeping) and descriptive-only columns
    (:func:`cartcohort.tl.features.is_descriptive`) are excluded.
    """
    skip = set(ID_COLUMNS) | set(PATIENT_ID_COLUMNS)
    return [
        c
        for c in table.columns
        if c not in skip
        and not is_descriptive(c)
        and (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
    ]


def composition_states(table: pd.DataFrame) -> list[str]:
    """States with a whole-sample ``frac_<state>`` column (no subset suffix)."""
    return [
        c[len("frac_") :]
        for c in table.columns
        if c.startswith("frac_") and not c.endswith(("_cd4", "_cd8", "_car"))
    ]


def _timepoint_samples(features: pd.DataFrame, *, timepoint: str, source: str) -> pd.DataFrame:
    """The samples of one timepoint, sorted by patient and sample (patient as text)."""
    for col in ("sample", "patient", "timepoint"):
        if col not in features.columns:
            raise InputError(
                [
                    Problem(
                        file=source,
                        where=f"column '{col}'",
                        what="required column is missing",
                        fix="re-run rule sample_features",
                    )
                ]
            )
    tp = features["timepoint"].astype(str)
    sub = features[tp == str(timepoint)].copy()
    if sub.empty:
        raise InputError(
            [
                Problem(
                    file="config/config.yaml",
                    where="key 'primary_timepoint'",
                    what=(
                        f"no sample of {source} has timepoint {timepoint!r}; "
                        f"timepoints present: {sorted(tp.unique())}"
                    ),
                    fix="set primary_timepoint to the label of the infusion-product samples",
                )
            ]
        )
    sub["patient"] = sub["patient"].astype(str)
    return sub.sort_values(["patient", "sample"], kind="mergesort")


def _weighted_means(sub: pd.DataFrame, w: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Per-patient ``w``-weighted means of the feature columns (missing values ignored)."""
    feats = feature_columns(sub)
    values = sub[feats].astype(float)
    known = values.notna().to_numpy()
    wv = np.where(known, values.fillna(0).to_numpy() * w[:, None], 0.0)
    wk = known * w[:, None]
    num = pd.DataFrame(wv, columns=feats).groupby(groups, sort=True).sum()
    den = pd.DataFrame(wk, columns=feats).groupby(groups, sort=True).sum()
    return (num / den).where(den > 0)


def patient_table(
    features: pd.DataFrame,
    *,
    timepoint: str,
    source: str = "results/tables/sample_features.tsv",
) -> pd.DataFrame:
    """Aggregate the per-sample features of one timepoint to one row per patient.

    Parameters
    ----------
    features
        Per-sample feature table (``sample_features.tsv``).
    timepoint
        Timepoint label to keep (config ``primary_timepoint``).
    source
        File name for error messages.

    Returns
    -------
    pandas.DataFrame
        One row per patient, sorted: ``patient, n_samples, samples, n_cells``,
        then every feature as the ``n_cells``-weighted mean over the patient's
        samples (missing values ignored), plus ``count_<state>``: summed cell
        counts per state (for the compositional test).

    Raises
    ------
    InputError
        When no sample has the timepoint.
    """
    sub = _timepoint_samples(features, timepoint=timepoint, source=source)
    if "n_cells" in sub.columns:
        w = pd.to_numeric(sub["n_cells"], errors="coerce").fillna(0).to_numpy(float)
    else:
        w = np.ones(len(sub))
    groups = sub["patient"].to_numpy()
    agg = _weighted_means(sub, w, groups)
    out = pd.DataFrame(index=agg.index)
    out["n_samples"] = sub.groupby("patient", sort=True).size()
    out["samples"] = sub.groupby("patient", sort=True)["sample"].agg(
        lambda s: ";".join(map(str, s))
    )
    if "n_cells" in sub.columns:
        out["n_cells"] = sub.groupby("patient", sort=True)["n_cells"].sum()
        for state in composition_states(sub):
            counts = np.rint(sub[f"frac_{state}"].fillna(0).to_numpy(float) * w)
            out[f"count_{state}"] = pd.Series(counts).groupby(groups, sort=True).sum().to_numpy()
    out = pd.concat([out, agg], axis=1)
    out.index.name = "patient"
    multi = out.index[out["n_samples"] > 1]
    if len(multi):
        logger.info(
            "%d patient(s) have several %s samples, aggregated (n_cells-weighted mean): %s",
            len(multi),
            timepoint,
            list(multi[:5]),
        )
    return out.reset_index()


def labelled_patients(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    primary_timepoint: str,
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Patient-level table of the primary timepoint joined to response labels.

    Returns
    -------
    patients, notes
        ``patients`` has every patient with a primary-timepoint sample, with
        ``response`` and ``responder`` (NA when excluded, missing or absent
        from the clinical table); ``notes`` (scope ``patient``) says why a
        patient is left out.
    """
    labels = response_labels(
        clinical, responders=responders, excluded=excluded, source=clinical_source
    )
    pt = patient_table(features, timepoint=primary_timepoint, source=source)
    notes: list[tuple[str, str, str]] = []
    unknown = sorted(set(pt["patient"]) - set(labels.index))
    for p in unknown:
        notes.append(("patient", p, f"not in {clinical_source}: left out of response tests"))
    lab = labels.reindex(pt["patient"])
    pt.insert(1, "response", lab["response"].to_numpy())
    pt.insert(2, "responder", lab["responder"].astype("boolean").to_numpy())
    for p, r in zip(pt["patient"], pt["response"], strict=True):
        if p in labels.index and (pd.isna(r) or r in excluded):
            code = r if not pd.isna(r) else "NA (not known)"
            notes.append(("patient", p, f"response {code}: excluded"))
    no_sample = sorted(set(labels.index) - set(pt["patient"]))
    for p in no_sample:
        notes.append(("patient", p, f"no {primary_timepoint} sample: not analysed"))
    return pt, notes_table(notes)


def encode_covariates(
    clinical: pd.DataFrame,
    *,
    covariates: Sequence[str],
    patients: Sequence[str],
    source: str = "clinical table",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric design columns for covariates, one row per patient.

    Numeric covariates are standardised (mean 0, SD 1 over ``patients``);
    categorical ones are one-hot encoded with the first level (sorted) as
    reference. Covariates with a single level among ``patients`` are dropped
    (noted). Missing values stay missing (complete-case analysis downstream).

    Returns
    -------
    design, notes
        ``design`` indexed by patient; ``notes`` (scope ``covariate``).
    """
    notes: list[tuple[str, str, str]] = []
    clin = clinical if "patient" in clinical.columns else clinical.reset_index()
    clin = clin.assign(patient=clin["patient"].astype(str)).set_index("patient")
    missing = [c for c in covariates if c not in clin.columns]
    if missing:
        raise InputError(
            [
                Problem(
                    file="config/config.yaml",
                    where="key 'associate.covariates'",
                    what=f"covariate(s) {missing} are not columns of {source}",
                    fix=f"remove them or add them to {source} (columns: {list(clin.columns)})",
                )
            ]
        )
    sub = clin.reindex(list(patients))
    design = pd.DataFrame(index=sub.index)
    for cov in covariates:
        text = sub[cov].astype("string").str.strip()
        text = text.mask(text == "")
        dropped = _encode_covariate(design, cov, text)
        if dropped:
            notes.append(("covariate", cov, dropped))
            continue
        n_missing = int(text.isna().sum())
        if n_missing:
            notes.append(
                ("covariate", cov, f"{n_missing} patient(s) missing: left out of adjusted tests")
            )
    return design, notes_table(notes)


def _encode_covariate(design: pd.DataFrame, cov: str, text: pd.Series) -> str:
    """Add the design column(s) of one covariate; the reason when it is dropped instead."""
    num = pd.to_numeric(text, errors="coerce")
    if text.notna().sum() and num[text.notna()].notna().all():
        sd = num.std(ddof=1)
        if not np.isfinite(sd) or sd == 0:
            return "dropped: constant among analysed patients"
        design[cov] = (num - num.mean()) / sd
        return ""
    levels = sorted(text.dropna().unique())
    if len(levels) < 2:
        return "dropped: a single level among analysed patients"
    for level in levels[1:]:
        col = (text == level).astype(float)
        col[text.isna()] = np.nan
        design[f"{cov}[{level}]"] = col
    return ""


def testable_features(
    table: pd.DataFrame,
    *,
    features: Sequence[str],
    responder: pd.Series,
    min_per_group: int,
) -> tuple[list[str], pd.DataFrame]:
    """Features that can be tested, with a note for every feature left out.

    A feature is left out when fewer than ``min_per_group`` patients of a
    group have a value, or when it is constant over the patients. Near-copies
    (identical columns such as ``exhausted_fraction`` and ``frac_exhausted``
    included) are collapsed afterwards by :func:`~cartcohort.stats.twins.collapse_twins`.
    """
    notes: list[tuple[str, str, str]] = []
    kept: list[str] = []
    resp = responder.to_numpy(dtype=bool)
    for f in features:
        v = table[f].to_numpy(dtype=float)
        n1 = int(np.isfinite(v[resp]).sum())
        n0 = int(np.isfinite(v[~resp]).sum())
        if min(n1, n0) < min_per_group:
            notes.append(
                (
                    "feature",
                    f,
                    f"not tested: values for {n1} responders and {n0} non-responders "
                    f"(< {min_per_group} per group)",
                )
            )
            continue
        finite = v[np.isfinite(v)]
        if np.all(finite == finite[0]):
            notes.append(("feature", f, "not tested: constant over the analysed patients"))
            continue
        kept.append(f)
    return kept, notes_table(notes)
