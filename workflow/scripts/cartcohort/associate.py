"""Patient-level association of product features with clinical response.

The statistical unit is the **patient**: every test below compares one value
per patient (cells are never replicates for a patient-level claim). When a
patient has several samples at the primary timepoint (e.g. two product bags,
or separately sorted CD4/CD8 fractions), the patient's value is the
``n_cells``-weighted mean of the sample values (for whole-sample fractions
this equals pooling the cells); state counts for the compositional test are
summed.

Response groups: patients whose ``response`` is in ``responders`` (default
``CR``) are responders; every other known code is a non-responder except the
``excluded`` codes (default ``NE``) and missing values, which are left out.

Test families (``test`` column of ``association.tsv``), Benjamini–Hochberg
q-values are computed within each family across features:

``mann_whitney``
    Two-sided Mann–Whitney U test; exact null distribution for up to 100
    patients (conditional on the ties when there are ties,
    :func:`exact_rank_sum_pvalue`), otherwise the normal approximation with
    tie and continuity correction. Effect: rank-biserial
    correlation ``2 U / (n1 n0) - 1`` (positive = higher in responders) with
    a seeded, group-stratified percentile bootstrap CI.
``auroc``
    Area under the ROC curve of the feature for predicting response
    (``U / (n1 n0)``; 1 = every responder above every non-responder) with the
    same bootstrap CI; its test of AUROC = 0.5 is the Mann–Whitney test, so
    p-values equal that family's.
``logistic``
    ``responder ~ z(feature) + covariates``; effect = log odds ratio per SD.
    Maximum likelihood (statsmodels, Wald CI) unless the data are separated,
    the fit does not converge, or there are fewer than ``min_events_per_variable``
    patients of the smaller group per parameter; then Firth's penalised
    likelihood (profile penalised-likelihood CI, penalised likelihood-ratio
    test). The ``note`` column says which fit was used and why.
``compositional``
    propeller-style test of state proportions: per patient, state counts are
    transformed (logit of ``(count + 0.5) / sum(count + 0.5)`` or arcsine
    square root of the proportion) and a linear model ``transformed ~
    responder + covariates`` is fitted per state (t-test of the responder
    coefficient; no empirical-Bayes variance moderation).

Further analyses (own tables): longitudinal mixed models of each feature over
``timepoint_day`` (:func:`longitudinal_models`), Cox models of
progression-free survival (:func:`survival_models`), pseudobulk DESeq2 per
state (:func:`pseudobulk_de`), and product scorecards
(:func:`build_reference`, :func:`score_product`).
"""

from __future__ import annotations

import html
import logging
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from .errors import CartCohortError, InputError, Problem
from .features import ID_COLUMNS, is_descriptive

logger = logging.getLogger(__name__)

ASSOCIATION_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_responders",
    "n_nonresponders",
    "effect_type",
    "direction",
    "median_responders",
    "median_nonresponders",
    "note",
)
NOTE_COLUMNS: tuple[str, ...] = ("scope", "item", "note")
FAMILIES: tuple[str, ...] = ("mann_whitney", "auroc", "logistic", "compositional")
#: Columns of a patient-level table that are not features.
PATIENT_ID_COLUMNS: tuple[str, ...] = (
    "patient",
    "response",
    "responder",
    "n_samples",
    "samples",
)


def _notes(rows: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(NOTE_COLUMNS))


def _feature_seed(seed: int, name: str) -> np.random.Generator:
    """Generator for one feature, independent of which other features exist."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


# --------------------------------------------------------------------------- #
# Inputs: response labels, covariates, patient aggregation
# --------------------------------------------------------------------------- #


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

    Identifiers (:data:`cartcohort.features.ID_COLUMNS`, patient-table
    bookkeeping) and descriptive-only columns
    (:func:`cartcohort.features.is_descriptive`) are excluded.
    """
    skip = set(ID_COLUMNS) | set(PATIENT_ID_COLUMNS)
    return [
        c
        for c in table.columns
        if c not in skip
        and not is_descriptive(c)
        and (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
    ]


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
    sub = sub.sort_values(["patient", "sample"], kind="mergesort")
    feats = feature_columns(sub)
    if "n_cells" in sub.columns:
        w = pd.to_numeric(sub["n_cells"], errors="coerce").fillna(0).to_numpy(float)
    else:
        w = np.ones(len(sub))
    values = sub[feats].astype(float)
    known = values.notna().to_numpy()
    wv = np.where(known, values.fillna(0).to_numpy() * w[:, None], 0.0)
    wk = known * w[:, None]
    groups = sub["patient"].to_numpy()
    num = pd.DataFrame(wv, columns=feats).groupby(groups, sort=True).sum()
    den = pd.DataFrame(wk, columns=feats).groupby(groups, sort=True).sum()
    agg = (num / den).where(den > 0)
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


def composition_states(table: pd.DataFrame) -> list[str]:
    """States with a whole-sample ``frac_<state>`` column (no subset suffix)."""
    return [
        c[len("frac_") :]
        for c in table.columns
        if c.startswith("frac_") and not c.endswith(("_cd4", "_cd8", "_car"))
    ]


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
        raw = sub[cov]
        text = raw.astype("string").str.strip()
        text = text.mask(text == "")
        num = pd.to_numeric(text, errors="coerce")
        if text.notna().sum() and num[text.notna()].notna().all():
            sd = num.std(ddof=1)
            if not np.isfinite(sd) or sd == 0:
                notes.append(("covariate", cov, "dropped: constant among analysed patients"))
                continue
            design[cov] = (num - num.mean()) / sd
        else:
            levels = sorted(text.dropna().unique())
            if len(levels) < 2:
                notes.append(("covariate", cov, "dropped: a single level among analysed patients"))
                continue
            for level in levels[1:]:
                col = (text == level).astype(float)
                col[text.isna()] = np.nan
                design[f"{cov}[{level}]"] = col
        n_missing = int(text.isna().sum())
        if n_missing:
            notes.append(
                ("covariate", cov, f"{n_missing} patient(s) missing: left out of adjusted tests")
            )
    return design, _notes(notes)


# --------------------------------------------------------------------------- #
# Univariate statistics
# --------------------------------------------------------------------------- #


def _u_statistic(x: np.ndarray, y: np.ndarray) -> float:
    diff = x[:, None] - y[None, :]
    return float((diff > 0).sum() + 0.5 * (diff == 0).sum())


def rank_biserial(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank-biserial correlation of ``x`` (responders) versus ``y``.

    ``2 U / (n_x n_y) - 1`` where ``U`` counts pairs with ``x > y`` (ties
    count one half): +1 when every ``x`` is above every ``y``, -1 when below.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) == 0 or len(ya) == 0:
        raise CartCohortError("rank_biserial needs at least one value in each group")
    return 2.0 * _u_statistic(xa, ya) / (len(xa) * len(ya)) - 1.0


def auroc(x: Sequence[float], y: Sequence[float]) -> float:
    """Area under the ROC curve for separating ``x`` (positives) from ``y``.

    Equal to ``U / (n_x n_y)``, i.e. the probability that a random ``x``
    exceeds a random ``y`` (ties one half).
    """
    return (rank_biserial(x, y) + 1.0) / 2.0


def exact_rank_sum_pvalue(x: Sequence[float], y: Sequence[float]) -> float:
    """Exact two-sided p-value of the Wilcoxon rank-sum / Mann–Whitney test, ties allowed.

    The null distribution of the sum of ``x``'s mid-ranks is enumerated
    conditionally on the observed ties (every assignment of ``n_x`` of the
    pooled values to ``x`` equally likely), by dynamic programming over the
    doubled mid-ranks (integers). Two-sided: ``P(|W - E W| >= |w - E W|)``.
    Without ties this equals SciPy's exact Mann–Whitney p-value.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n1, n = len(xa), len(xa) + len(ya)
    pooled = np.concatenate([xa, ya])
    scores = np.rint(2 * stats.rankdata(pooled)).astype(np.int64)  # doubled mid-ranks
    total = int(scores.sum())
    # dp[k, s]: number of size-k subsets with doubled rank sum s (float64 counts)
    dp = np.zeros((n1 + 1, total + 1))
    dp[0, 0] = 1.0
    for i, sc in enumerate(scores):
        for k in range(min(i + 1, n1), 0, -1):
            dp[k, sc:] += dp[k - 1, : total + 1 - sc]
    dist = dp[n1]
    dist = dist / dist.sum()
    observed = int(scores[:n1].sum())
    expected = n1 * (n + 1)  # E[W] in doubled units (2 * n1 (n + 1) / 2)
    dev = np.abs(np.arange(total + 1) - expected)
    p = float(dist[dev >= abs(observed - expected)].sum())
    return min(1.0, p)


def mann_whitney(
    x: Sequence[float], y: Sequence[float], *, max_exact_n: int = 100
) -> tuple[float, float, str]:
    """Two-sided Mann–Whitney U test.

    Parameters
    ----------
    x, y
        The two groups (no missing values).
    max_exact_n
        Up to this many values in total the p-value is exact (SciPy's exact
        distribution without ties; :func:`exact_rank_sum_pvalue`, conditional
        on the ties, with ties); above, the normal approximation with tie and
        continuity correction.

    Returns
    -------
    U, pvalue, method
        ``U`` of ``x``; method is ``exact``, ``exact_ties`` or ``asymptotic``.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n1, n0 = len(xa), len(ya)
    pooled = np.concatenate([xa, ya])
    u = _u_statistic(xa, ya)
    if np.all(pooled == pooled[0]):
        return u, 1.0, "constant"
    ties = len(np.unique(pooled)) < len(pooled)
    if n1 + n0 <= max_exact_n:
        if ties:
            return u, exact_rank_sum_pvalue(xa, ya), "exact_ties"
        res = stats.mannwhitneyu(xa, ya, alternative="two-sided", method="exact")
        return u, float(min(1.0, res.pvalue)), "exact"
    res = stats.mannwhitneyu(xa, ya, alternative="two-sided", method="asymptotic")
    return u, float(min(1.0, res.pvalue)), "asymptotic"


def bootstrap_rank_biserial(
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_bootstrap: int = 2000,
    seed: int | np.random.Generator = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the rank-biserial correlation.

    Resampling is stratified (each group resampled with replacement within
    itself), so every replicate keeps the group sizes.

    Returns
    -------
    (low, high)
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n1, n0 = len(xa), len(ya)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    diff = xa[:, None] - ya[None, :]
    pair = (diff > 0).astype(float) + 0.5 * (diff == 0)
    w1 = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=n_bootstrap).astype(float)
    w0 = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=n_bootstrap).astype(float)
    u = np.einsum("bi,ij,bj->b", w1, pair, w0)
    r = 2.0 * u / (n1 * n0) - 1.0
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bh_qvalues(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values).

    Missing p-values stay missing and do not count towards the number of tests.
    """
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def _direction(effect: float, null: float = 0.0) -> str:
    if not np.isfinite(effect):
        return "NA"
    if effect > null:
        return "higher_in_responders"
    if effect < null:
        return "lower_in_responders"
    return "none"


# --------------------------------------------------------------------------- #
# Feature selection
# --------------------------------------------------------------------------- #


def testable_features(
    table: pd.DataFrame,
    *,
    features: Sequence[str],
    responder: pd.Series,
    min_per_group: int,
) -> tuple[list[str], pd.DataFrame]:
    """Features that can be tested, with a note for every feature left out.

    A feature is left out when fewer than ``min_per_group`` patients of a
    group have a value, when it is constant over the patients, or when it is
    identical to a feature listed earlier (e.g. ``exhausted_fraction`` and
    ``frac_exhausted``), so it is tested once.
    """
    notes: list[tuple[str, str, str]] = []
    kept: list[str] = []
    seen: dict[bytes, str] = {}
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
        key = np.where(np.isfinite(v), v, np.inf).tobytes()
        if key in seen:
            notes.append(("feature", f, f"not tested: identical to {seen[key]}"))
            continue
        seen[key] = f
        kept.append(f)
    return kept, _notes(notes)


# --------------------------------------------------------------------------- #
# Logistic regression (ML with a Firth fallback)
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LogisticFit:
    """Coefficient of one column of a logistic model."""

    coef: float
    ci_low: float
    ci_high: float
    pvalue: float
    method: str
    converged: bool


def _penalized_loglik(X: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    eta = X @ beta
    ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    p = special.expit(eta)
    w = p * (1.0 - p)
    sign, logdet = np.linalg.slogdet(X.T @ (X * w[:, None]))
    if sign <= 0:
        return -np.inf
    return ll + 0.5 * logdet


def _firth_newton(
    X: np.ndarray,
    y: np.ndarray,
    *,
    fixed: tuple[int, float] | None = None,
    start: np.ndarray | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> tuple[np.ndarray, float, bool]:
    """Maximise the Firth-penalised log-likelihood, optionally with one coefficient fixed.

    The penalty uses the information matrix of the full design (as logistf
    does for profile likelihoods); the Newton step uses Firth's modified score.
    """
    k = X.shape[1]
    beta = np.zeros(k) if start is None else np.array(start, dtype=float)
    free = np.ones(k, dtype=bool)
    if fixed is not None:
        free[fixed[0]] = False
        beta[fixed[0]] = fixed[1]
    Xf = X[:, free]
    pll = _penalized_loglik(X, y, beta)
    converged = False
    for _ in range(max_iter):
        p = special.expit(X @ beta)
        w = p * (1.0 - p)
        info = X.T @ (X * w[:, None])
        try:
            info_inv = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            info_inv = np.linalg.pinv(info)
        h = w * np.einsum("ij,jk,ik->i", X, info_inv, X)
        score = Xf.T @ (y - p + h * (0.5 - p))
        info_f = Xf.T @ (Xf * w[:, None])
        try:
            step = np.linalg.solve(info_f, score)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(info_f, score, rcond=None)[0]
        largest = np.max(np.abs(step)) if step.size else 0.0
        if largest > 5.0:
            step *= 5.0 / largest
        improved = False
        cand = beta
        for _half in range(40):
            cand = beta.copy()
            cand[free] += step
            pll_c = _penalized_loglik(X, y, cand)
            if pll_c >= pll - 1e-12:
                improved = True
                break
            step = step / 2.0
        if not improved:
            converged = bool(np.max(np.abs(score)) < 1e-5) if score.size else True
            break
        beta, pll = cand, pll_c
        if step.size == 0 or np.max(np.abs(step)) < tol:
            converged = True
            break
    return beta, pll, converged


def firth_logistic(
    X: np.ndarray, y: np.ndarray, *, column: int = 1, alpha: float = 0.05
) -> LogisticFit:
    """Firth's bias-reduced logistic regression for one coefficient.

    Parameters
    ----------
    X
        Design matrix including the intercept column.
    y
        0/1 outcome.
    column
        Index of the coefficient to report.
    alpha
        1 - confidence level.

    Returns
    -------
    LogisticFit
        Coefficient, profile penalised-likelihood CI and penalised
        likelihood-ratio p-value (Heinze & Schemper 2002).
    """
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    beta, pll, converged = _firth_newton(X, y)
    _, pll0, _ = _firth_newton(X, y, fixed=(column, 0.0), start=beta)
    lr = max(0.0, 2.0 * (pll - pll0))
    pvalue = float(stats.chi2.sf(lr, 1))
    crit = float(stats.chi2.ppf(1 - alpha, 1))
    b_hat = float(beta[column])

    def g(b: float) -> float:
        _, pll_b, _ = _firth_newton(X, y, fixed=(column, b), start=beta)
        return 2.0 * (pll - pll_b) - crit

    p = special.expit(X @ beta)
    info = X.T @ (X * (p * (1 - p))[:, None])
    try:
        se = float(np.sqrt(np.linalg.inv(info)[column, column]))
    except np.linalg.LinAlgError:
        se = 1.0
    if not np.isfinite(se) or se <= 0:
        se = 1.0
    bounds = []
    for sign in (-1.0, 1.0):
        step = max(se, 0.1)
        b = b_hat + sign * step
        found = False
        for _ in range(60):
            if g(b) > 0:
                found = True
                break
            step *= 2.0
            b = b_hat + sign * step
        if not found:
            bounds.append(sign * np.inf)
            continue
        lo, hi = sorted((b_hat, b))
        bounds.append(float(optimize.brentq(g, lo, hi, xtol=1e-6)))
    return LogisticFit(b_hat, bounds[0], bounds[1], pvalue, "firth", converged)


def _separated(x: np.ndarray, y: np.ndarray) -> str:
    """'complete', 'quasi' or '' for separation of y by the single predictor x."""
    a, b = x[y == 1], x[y == 0]
    if a.min() > b.max() or b.min() > a.max():
        return "complete"
    if a.min() >= b.max() or b.min() >= a.max():
        return "quasi-complete"
    return ""


def logistic_association(
    x: np.ndarray,
    y: np.ndarray,
    *,
    covariates: np.ndarray | None = None,
    min_events_per_variable: float = 5.0,
    alpha: float = 0.05,
) -> tuple[LogisticFit, str]:
    """Log odds ratio of response per SD of ``x``, adjusted for covariates.

    Parameters
    ----------
    x
        Feature values (no missing values).
    y
        0/1 responder indicator.
    covariates
        Extra design columns (no missing values), or None.
    min_events_per_variable
        Below this many patients of the smaller group per model parameter
        (intercept excluded), Firth's penalised fit is used.
    alpha
        1 - confidence level.

    Returns
    -------
    fit, note
        The note says which fit was used and why.
    """
    import statsmodels.api as sm
    from statsmodels.tools import sm_exceptions

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    z = (x - x.mean()) / x.std(ddof=1)
    cols = [np.ones_like(z), z]
    if covariates is not None and covariates.size:
        cols += [covariates[:, j] for j in range(covariates.shape[1])]
    X = np.column_stack(cols)
    n_params = X.shape[1] - 1
    n_small = int(min(y.sum(), len(y) - y.sum()))
    epv = n_small / n_params
    reasons: list[str] = []
    sep = _separated(z, y)
    if sep:
        reasons.append(f"{sep} separation by the feature")
    if epv < min_events_per_variable:
        reasons.append(
            f"{epv:.3g} patients of the smaller group per parameter (< {min_events_per_variable:g})"
        )
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise CartCohortError(
            "logistic design matrix is rank deficient (a covariate is collinear with the "
            "feature or another covariate); remove it from associate.covariates"
        )
    if not reasons:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = sm.Logit(y, X).fit(disp=0, maxiter=200)
                fitted = res.predict(X)
            except (sm_exceptions.PerfectSeparationError, np.linalg.LinAlgError) as err:
                res = None
                reasons.append(f"ML fit failed ({type(err).__name__})")
        if res is not None:
            kinds = {type(w.message).__name__ for w in caught}
            if "PerfectSeparationWarning" in kinds:
                reasons.append("separation detected by the ML fit")
            if not res.mle_retvals.get("converged", True) or "ConvergenceWarning" in kinds:
                reasons.append("ML fit did not converge")
            if "HessianInversionWarning" in kinds:
                reasons.append("ML Hessian not invertible")
            if np.any(fitted < 1e-8) or np.any(fitted > 1 - 1e-8):
                reasons.append("fitted probabilities of 0 or 1 (quasi-separation)")
            if not reasons:
                ci = res.conf_int(alpha=alpha)
                fit = LogisticFit(
                    float(res.params[1]),
                    float(ci[1, 0]),
                    float(ci[1, 1]),
                    float(res.pvalues[1]),
                    "ml",
                    True,
                )
                return fit, "maximum likelihood (Wald CI and test)"
    fit = firth_logistic(X, y, column=1, alpha=alpha)
    note = "Firth penalised fit (profile CI, penalised LR test) because: " + "; ".join(reasons)
    if not fit.converged:
        note += "; Firth fit did not fully converge"
    return fit, note


# --------------------------------------------------------------------------- #
# Association driver
# --------------------------------------------------------------------------- #


@dataclass
class AssociationResult:
    """Outputs of :func:`run_association`."""

    association: pd.DataFrame
    notes: pd.DataFrame
    patients: pd.DataFrame
    tested: list[str] = field(default_factory=list)
    skipped: bool = False


def _skipped_table(n1: int, n0: int, note: str) -> pd.DataFrame:
    row = {c: np.nan for c in ASSOCIATION_COLUMNS}
    row.update(
        feature="(all)",
        test="skipped",
        n_responders=n1,
        n_nonresponders=n0,
        effect_type="NA",
        direction="NA",
        note=note,
    )
    return pd.DataFrame([row], columns=list(ASSOCIATION_COLUMNS))


def univariate_tests(
    table: pd.DataFrame,
    *,
    responder: pd.Series,
    features: Sequence[str],
    n_bootstrap: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mann–Whitney and AUROC rows for each feature (one value per patient).

    Parameters
    ----------
    table
        Patient-level table (one row per patient).
    responder
        Boolean per row of ``table`` (no missing values).
    features
        Columns to test.
    n_bootstrap, seed, alpha
        Bootstrap replicates, seed and 1 - confidence level of the CIs.

    Returns
    -------
    pandas.DataFrame
        :data:`ASSOCIATION_COLUMNS` rows for families ``mann_whitney`` and
        ``auroc``; q-values not yet filled.
    """
    resp = np.asarray(responder, dtype=bool)
    rows = []
    for f in features:
        v = table[f].to_numpy(dtype=float)
        ok = np.isfinite(v)
        x, y = v[ok & resp], v[ok & ~resp]
        u, p, method = mann_whitney(x, y)
        r = 2.0 * u / (len(x) * len(y)) - 1.0
        lo, hi = bootstrap_rank_biserial(
            x, y, n_bootstrap=n_bootstrap, seed=_feature_seed(seed, f), alpha=alpha
        )
        common = dict(
            feature=f,
            pvalue=p,
            n_responders=len(x),
            n_nonresponders=len(y),
            median_responders=float(np.median(x)),
            median_nonresponders=float(np.median(y)),
        )
        rows.append(
            dict(
                common,
                test="mann_whitney",
                effect=r,
                ci_low=lo,
                ci_high=hi,
                effect_type="rank_biserial",
                direction=_direction(r),
                note=f"{method} p-value; stratified percentile bootstrap CI ({n_bootstrap})",
            )
        )
        rows.append(
            dict(
                common,
                test="auroc",
                effect=(r + 1) / 2,
                ci_low=(lo + 1) / 2,
                ci_high=(hi + 1) / 2,
                effect_type="auroc",
                direction=_direction(r),
                note="p-value of AUROC = 0.5 is the Mann-Whitney p-value; bootstrap CI",
            )
        )
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))


def logistic_tests(
    table: pd.DataFrame,
    *,
    responder: pd.Series,
    features: Sequence[str],
    design: pd.DataFrame | None = None,
    min_per_group: int = 3,
    min_events_per_variable: float = 5.0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Logistic-regression rows (family ``logistic``), complete cases per feature."""
    resp = np.asarray(responder, dtype=bool)
    cov = None if design is None or design.shape[1] == 0 else design.to_numpy(float)
    adj = (
        "unadjusted"
        if cov is None
        else "adjusted for " + ", ".join(map(str, design.columns))  # type: ignore[union-attr]
    )
    rows = []
    for f in features:
        v = table[f].to_numpy(dtype=float)
        ok = np.isfinite(v)
        if cov is not None:
            ok &= np.isfinite(cov).all(axis=1)
        n1, n0 = int((ok & resp).sum()), int((ok & ~resp).sum())
        row = dict(
            feature=f,
            test="logistic",
            n_responders=n1,
            n_nonresponders=n0,
            effect_type="log_odds_ratio_per_sd",
            median_responders=float(np.median(v[ok & resp])) if n1 else np.nan,
            median_nonresponders=float(np.median(v[ok & ~resp])) if n0 else np.nan,
        )
        xs = v[ok]
        if min(n1, n0) < min_per_group or np.all(xs == xs[0]):
            row.update(
                effect=np.nan,
                ci_low=np.nan,
                ci_high=np.nan,
                pvalue=np.nan,
                direction="NA",
                note=f"not fitted: {n1} vs {n0} complete cases or constant feature ({adj})",
            )
            rows.append(row)
            continue
        fit, note = logistic_association(
            xs,
            resp[ok].astype(float),
            covariates=None if cov is None else cov[ok],
            min_events_per_variable=min_events_per_variable,
            alpha=alpha,
        )
        row.update(
            effect=fit.coef,
            ci_low=fit.ci_low,
            ci_high=fit.ci_high,
            pvalue=fit.pvalue,
            direction=_direction(fit.coef),
            note=f"{note}; {adj}",
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))


def compositional_tests(
    table: pd.DataFrame,
    *,
    responder: pd.Series,
    states: Sequence[str],
    design: pd.DataFrame | None = None,
    transform: str = "logit",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """propeller-style per-state test of cell-state proportions.

    Parameters
    ----------
    table
        Patient-level table with ``count_<state>`` columns.
    responder
        Boolean per row.
    states
        States (all of them form the composition).
    design
        Covariate design columns (complete cases are used).
    transform
        ``logit`` (of ``(count + 0.5) / sum(count + 0.5)``) or ``asin``
        (arcsine square root of the proportion).

    Returns
    -------
    pandas.DataFrame
        Rows of family ``compositional``; ``feature`` is ``prop_<state>``,
        effect = responder minus non-responder difference on the transformed
        scale, medians are of the raw proportions.
    """
    import statsmodels.api as sm

    if transform not in ("logit", "asin"):
        raise CartCohortError(
            f"associate.composition_transform must be 'logit' or 'asin', not {transform!r}"
        )
    counts = table[[f"count_{s}" for s in states]].to_numpy(dtype=float)
    total = counts.sum(axis=1)
    keep = total > 0
    resp = np.asarray(responder, dtype=bool)
    cov = None if design is None or design.shape[1] == 0 else design.to_numpy(float)
    if cov is not None:
        keep &= np.isfinite(cov).all(axis=1)
    props = counts / np.where(total > 0, total, 1)[:, None]
    if transform == "logit":
        pseudo = (counts + 0.5) / (counts + 0.5).sum(axis=1, keepdims=True)
        tr = np.log(pseudo / (1 - pseudo))
    else:
        tr = np.arcsin(np.sqrt(props))
    Xcols = [np.ones(keep.sum()), resp[keep].astype(float)]
    if cov is not None:
        Xcols += [cov[keep, j] for j in range(cov.shape[1])]
    X = np.column_stack(Xcols)
    n1, n0 = int((keep & resp).sum()), int((keep & ~resp).sum())
    adj = ""
    if cov is not None and design is not None:
        adj = "; adjusted for " + ", ".join(map(str, design.columns))
    rows = []
    for j, s in enumerate(states):
        t = tr[keep, j]
        row = dict(
            feature=f"prop_{s}",
            test="compositional",
            n_responders=n1,
            n_nonresponders=n0,
            effect_type=f"{transform}_proportion_difference",
            median_responders=float(np.median(props[keep & resp, j])),
            median_nonresponders=float(np.median(props[keep & ~resp, j])),
        )
        if np.allclose(t, t[0]) or counts[keep, j].sum() == 0:
            row.update(
                effect=np.nan,
                ci_low=np.nan,
                ci_high=np.nan,
                pvalue=np.nan,
                direction="NA",
                note="not tested: state absent or constant",
            )
        else:
            res = sm.OLS(t, X).fit()
            ci = res.conf_int(alpha=alpha)
            row.update(
                effect=float(res.params[1]),
                ci_low=float(ci[1, 0]),
                ci_high=float(ci[1, 1]),
                pvalue=float(res.pvalues[1]),
                direction=_direction(float(res.params[1])),
                note=f"linear model on {transform}-transformed proportions (t-test){adj}",
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))


def add_qvalues(table: pd.DataFrame) -> pd.DataFrame:
    """Fill ``qvalue`` with BH q-values within each ``test`` family."""
    out = table.copy()
    out["qvalue"] = np.nan
    for _test, idx in out.groupby("test", sort=True).groups.items():
        out.loc[idx, "qvalue"] = bh_qvalues(out.loc[idx, "pvalue"].to_numpy(float))
    return out


def notes_from(table: pd.DataFrame, *, scope: str) -> pd.DataFrame:
    """Notes table rows for the skipped / not-fitted rows of a result table."""
    if table.empty or "note" not in table.columns:
        return _notes([])
    note = table["note"].fillna("").astype(str)
    keep = (table["test"] == "skipped") | note.str.startswith(("not fitted", "fit failed"))
    sub = table[keep].drop_duplicates(subset=["feature", "note"])
    items = sub["feature"].astype(str)
    return _notes([(scope, item, note) for item, note in zip(items, sub["note"], strict=True)])


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
        from the clinical table).
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
            notes.append(("patient", p, f"response {r if not pd.isna(r) else 'missing'}: excluded"))
    no_sample = sorted(set(labels.index) - set(pt["patient"]))
    for p in no_sample:
        notes.append(("patient", p, f"no {primary_timepoint} sample: not analysed"))
    return pt, _notes(notes)


def run_association(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    primary_timepoint: str = "IP",
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    covariates: Sequence[str] = (),
    n_bootstrap: int = 2000,
    min_patients_per_group: int = 3,
    min_events_per_variable: float = 5.0,
    composition_transform: str = "logit",
    seed: int = 0,
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> AssociationResult:
    """Test every product feature against response, one observation per patient.

    Parameters
    ----------
    features
        Per-sample feature table.
    clinical
        Clinical table (``patient``, ``response``, covariates).
    primary_timepoint
        Timepoint whose samples are tested (the infusion product).
    responders, excluded
        Response codes counted as responders / left out.
    covariates
        Clinical columns adjusted for in the logistic and compositional models.
    n_bootstrap
        Bootstrap replicates for the rank-biserial / AUROC CIs.
    min_patients_per_group
        Fewer patients than this in either group: association is skipped
        (a ``skipped`` row with the reason), not an error.
    min_events_per_variable
        Threshold for switching the logistic fit to Firth's method.
    composition_transform
        ``logit`` or ``asin`` for the compositional test.
    seed
        Seed of the bootstraps (a per-feature stream is derived from it).

    Returns
    -------
    AssociationResult
    """
    patients, notes = labelled_patients(
        features,
        clinical=clinical,
        primary_timepoint=primary_timepoint,
        responders=responders,
        excluded=excluded,
        source=source,
        clinical_source=clinical_source,
    )
    lab = patients[patients["responder"].notna()].reset_index(drop=True)
    resp = lab["responder"].astype(bool)
    n1, n0 = int(resp.sum()), int((~resp).sum())
    logger.info(
        "%d responders vs %d non-responders at %s (responders = %s)",
        n1,
        n0,
        primary_timepoint,
        list(responders),
    )
    if min(n1, n0) < min_patients_per_group:
        reason = (
            f"skipped: {n1} responder(s) ({'/'.join(responders)}) and {n0} non-responder(s) "
            f"with a {primary_timepoint} sample; at least {min_patients_per_group} per group "
            "are needed (associate.min_patients_per_group)"
        )
        logger.warning(reason)
        notes = pd.concat([notes, _notes([("association", "(all)", reason)])], ignore_index=True)
        return AssociationResult(_skipped_table(n1, n0, reason), notes, patients, [], True)

    candidates = [f for f in feature_columns(lab) if not f.startswith("count_")]
    feats, fnotes = testable_features(
        lab, features=candidates, responder=resp, min_per_group=min_patients_per_group
    )
    if not feats:
        reason = (
            f"skipped: none of the {len(candidates)} feature(s) can be tested at "
            f"{primary_timepoint} (see association_notes.tsv)"
        )
        logger.warning(reason)
        notes = pd.concat(
            [notes, fnotes, _notes([("association", "(all)", reason)])], ignore_index=True
        )
        return AssociationResult(_skipped_table(n1, n0, reason), notes, patients, [], True)
    design, cnotes = encode_covariates(
        clinical, covariates=covariates, patients=lab["patient"], source=clinical_source
    )
    design = design.reset_index(drop=True)
    parts = [
        univariate_tests(lab, responder=resp, features=feats, n_bootstrap=n_bootstrap, seed=seed),
        logistic_tests(
            lab,
            responder=resp,
            features=feats,
            design=design,
            min_per_group=min_patients_per_group,
            min_events_per_variable=min_events_per_variable,
        ),
    ]
    states = composition_states(lab)
    if states and all(f"count_{s}" in lab.columns for s in states):
        parts.append(
            compositional_tests(
                lab, responder=resp, states=states, design=design, transform=composition_transform
            )
        )
    else:
        fnotes = pd.concat(
            [fnotes, _notes([("association", "compositional", "no state fractions: skipped")])],
            ignore_index=True,
        )
    table = add_qvalues(pd.concat(parts, ignore_index=True))
    table["_family"] = table["test"].map({t: i for i, t in enumerate(FAMILIES)})
    table = table.sort_values(["_family", "pvalue", "feature"], kind="mergesort").drop(
        columns="_family"
    )
    notes = pd.concat([notes, fnotes, cnotes], ignore_index=True)
    return AssociationResult(table.reset_index(drop=True), notes, patients, feats, False)


# --------------------------------------------------------------------------- #
# Longitudinal mixed models
# --------------------------------------------------------------------------- #

LONGITUDINAL_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "term",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_responders",
    "n_nonresponders",
    "n_samples",
    "note",
)
_TERMS = ("responder", "day", "day:responder")


def longitudinal_models(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    features_to_test: Sequence[str] | None = None,
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    min_patients_per_group: int = 3,
    alpha: float = 0.05,
    clinical_source: str = "clinical table",
) -> pd.DataFrame:
    """Mixed model of each feature over ``timepoint_day`` by response group.

    ``features_to_test`` defaults to every feature column, with columns
    identical to an earlier one left out.

    ``value ~ day + responder + day:responder + (1 | patient)`` (statsmodels
    MixedLM, REML). Samples without ``timepoint_day`` are left out. Terms:
    ``responder`` (difference at day 0), ``day`` (slope per day in
    non-responders), ``day:responder`` (difference of slopes per day).
    q-values: BH within each term across features.

    Returns
    -------
    pandas.DataFrame
        :data:`LONGITUDINAL_COLUMNS`; a single ``skipped`` row with the reason
        when the design does not allow the model.
    """
    import statsmodels.api as sm
    from statsmodels.tools import sm_exceptions

    labels = response_labels(
        clinical, responders=responders, excluded=excluded, source=clinical_source
    )
    df = features.copy()
    df["patient"] = df["patient"].astype(str)
    df["timepoint_day"] = pd.to_numeric(df.get("timepoint_day"), errors="coerce")
    df["responder"] = labels["responder"].reindex(df["patient"]).to_numpy()
    df = df[df["timepoint_day"].notna() & df["responder"].notna()].reset_index(drop=True)

    def skipped(reason: str) -> pd.DataFrame:
        row = {c: np.nan for c in LONGITUDINAL_COLUMNS}
        row.update(feature="(all)", test="skipped", term="NA", note=reason)
        return pd.DataFrame([row], columns=list(LONGITUDINAL_COLUMNS))

    if df.empty:
        return skipped("skipped: no sample with both timepoint_day and a response label")
    resp_pt = df.groupby("patient", sort=True)["responder"].first().astype(bool)
    n1, n0 = int(resp_pt.sum()), int((~resp_pt).sum())
    if min(n1, n0) < min_patients_per_group:
        return skipped(
            f"skipped: {n1} responder(s) and {n0} non-responder(s) with dated samples "
            f"(< {min_patients_per_group} per group)"
        )
    if df["timepoint_day"].nunique() < 2:
        return skipped("skipped: a single timepoint_day in the cohort")
    if int(df.groupby("patient").size().max()) < 2:
        return skipped("skipped: no patient has more than one dated sample")
    if features_to_test is None:
        features_to_test, seen = [], set()
        for f in feature_columns(df.drop(columns=["responder"])):
            key = df[f].to_numpy(float).tobytes()
            if key not in seen:
                seen.add(key)
                features_to_test.append(f)
    rows = []
    for f in features_to_test:
        if f not in df.columns:
            continue
        d = df[["patient", "timepoint_day", "responder", f]].dropna()
        r = d["responder"].astype(float).to_numpy()
        day = d["timepoint_day"].to_numpy(float)
        y = d[f].to_numpy(float)
        pts = d.groupby("patient", sort=True)["responder"].first().astype(bool)
        m1, m0 = int(pts.sum()), int((~pts).sum())
        base = dict(
            feature=f, test="mixedlm", n_responders=m1, n_nonresponders=m0, n_samples=len(d)
        )
        if (
            min(m1, m0) < min_patients_per_group
            or len(np.unique(day)) < 2
            or np.allclose(y, y[0])
            or d.groupby("patient").size().max() < 2
        ):
            for term in _TERMS:
                rows.append(
                    dict(
                        base,
                        term=term,
                        effect=np.nan,
                        ci_low=np.nan,
                        ci_high=np.nan,
                        pvalue=np.nan,
                        note="not fitted: too few patients/timepoints or constant values",
                    )
                )
            continue
        # Fit on standardised value and day (better conditioned), report on the raw scales.
        y_sd = float(np.std(y))
        day_sd = float(np.std(day))
        ys = (y - y.mean()) / y_sd
        dz = day / day_sd
        X = np.column_stack([np.ones_like(dz), r, dz, dz * r])
        res, err, kinds = None, "", []
        for method in ("bfgs", "lbfgs", "powell", "nm"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    fit = sm.MixedLM(ys, X, groups=d["patient"].to_numpy()).fit(
                        reml=True, method=[method]
                    )
                except (np.linalg.LinAlgError, ValueError) as e:
                    err = f"fit failed: {type(e).__name__}: {e}"
                    continue
            kinds = sorted(
                {
                    str(w.message).split(".")[0]
                    for w in caught
                    if issubclass(w.category, (sm_exceptions.ConvergenceWarning, UserWarning))
                }
            )
            if fit.converged:
                res = fit
                break
            err = f"fit did not converge ({method})"
        note = "MixedLM REML, random intercept per patient"
        if kinds:
            note += "; " + "; ".join(kinds)
        if res is None:
            for term in _TERMS:
                rows.append(
                    dict(base, term=term, effect=np.nan, ci_low=np.nan, ci_high=np.nan,
                         pvalue=np.nan, note=err)
                )
            continue
        scale = np.array([y_sd, y_sd, y_sd / day_sd, y_sd / day_sd])
        ci = np.asarray(res.conf_int(alpha=alpha))[:4] * scale[:, None]
        params = np.asarray(res.params)[:4] * scale
        pvals = np.asarray(res.pvalues)
        for term, j in zip(_TERMS, (1, 2, 3), strict=True):
            rows.append(
                dict(
                    base,
                    term=term,
                    effect=float(params[j]),
                    ci_low=float(ci[j, 0]),
                    ci_high=float(ci[j, 1]),
                    pvalue=float(pvals[j]),
                    note=note,
                )
            )
    out = pd.DataFrame(rows, columns=list(LONGITUDINAL_COLUMNS))
    out["qvalue"] = np.nan
    for _term, idx in out.groupby("term", sort=True).groups.items():
        out.loc[idx, "qvalue"] = bh_qvalues(out.loc[idx, "pvalue"].to_numpy(float))
    return out.sort_values(["term", "pvalue", "feature"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- #
# Survival
# --------------------------------------------------------------------------- #

SURVIVAL_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_patients",
    "n_events",
    "note",
)


def survival_models(
    patients: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    features: Sequence[str] | None = None,
    duration: str = "pfs_days",
    event: str = "pfs_event",
    min_events: int = 3,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Univariable Cox proportional-hazards model per feature (lifelines).

    Every patient with a primary-timepoint value and non-missing
    ``duration``/``event`` is used (response labels are not needed). Effect:
    log hazard ratio per SD of the feature (positive = shorter PFS). When the
    clinical table has no PFS columns, or fewer than ``min_events`` events, a
    single ``skipped`` row with the reason is returned.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    def skipped(reason: str) -> pd.DataFrame:
        row = {c: np.nan for c in SURVIVAL_COLUMNS}
        row.update(feature="(all)", test="skipped", note=reason)
        return pd.DataFrame([row], columns=list(SURVIVAL_COLUMNS))

    clin = clinical if "patient" in clinical.columns else clinical.reset_index()
    if duration not in clin.columns or event not in clin.columns:
        return skipped(f"skipped: clinical table has no '{duration}'/'{event}' columns")
    clin = clin.assign(patient=clin["patient"].astype(str)).set_index("patient")
    dur = pd.to_numeric(clin[duration], errors="coerce")
    ev_text = clin[event].astype("string").str.strip().str.lower()
    ev = ev_text.map(
        {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}
    ).astype(float)
    bad_ev = ev_text[ev_text.notna() & (ev_text != "") & ev.isna()]
    if len(bad_ev):
        raise InputError(
            [
                Problem(
                    file="clinical table",
                    where=f"patient {bad_ev.index[0]}, column '{event}'",
                    what=f"value {clin[event].loc[bad_ev.index[0]]!r} is not an event code",
                    fix="code events as 1 (progression or death) and 0 (censored)",
                )
            ]
        )
    pt = patients.assign(patient=patients["patient"].astype(str)).set_index("patient")
    pt = pt.join(pd.DataFrame({"_T": dur, "_E": ev}), how="left")
    pt = pt[pt["_T"].notna() & pt["_E"].notna()]
    if len(pt) == 0:
        return skipped(f"skipped: no patient has both '{duration}' and '{event}'")
    n_events = int(pt["_E"].sum())
    if n_events < min_events:
        return skipped(f"skipped: {n_events} event(s) (< {min_events})")
    feats = list(features) if features is not None else feature_columns(pt.reset_index())
    feats = [
        f for f in feats if f in pt.columns and not f.startswith("count_") and f not in ("_T", "_E")
    ]
    rows = []
    for f in feats:
        d = pt[[f, "_T", "_E"]].dropna()
        base = dict(feature=f, test="cox_ph", n_patients=len(d), n_events=int(d["_E"].sum()))
        sd = d[f].std(ddof=1) if len(d) > 1 else np.nan
        if base["n_events"] < min_events or not np.isfinite(sd) or sd == 0:
            rows.append(
                dict(base, effect=np.nan, ci_low=np.nan, ci_high=np.nan, pvalue=np.nan,
                     note=f"not fitted: < {min_events} events or constant feature")
            )
            continue
        dd = pd.DataFrame(
            {"z": (d[f] - d[f].mean()) / sd, "T": d["_T"], "E": d["_E"].astype(int)}
        )
        note = "Cox PH, unadjusted, log HR per SD"
        fitted = None
        for penalizer in (0.0, 0.1):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    cph = CoxPHFitter(penalizer=penalizer, alpha=alpha)
                    cph.fit(dd, duration_col="T", event_col="E")
                except ConvergenceError:
                    continue
            warned = any(issubclass(type(w.message), ConvergenceWarning) for w in caught)
            if warned and penalizer == 0:
                continue
            fitted = cph
            if penalizer:
                note += f"; ML did not converge, refitted with penalizer={penalizer}"
            break
        if fitted is None:
            rows.append(
                dict(base, effect=np.nan, ci_low=np.nan, ci_high=np.nan, pvalue=np.nan,
                     note="not fitted: Cox model did not converge")
            )
            continue
        s = fitted.summary.loc["z"]
        rows.append(
            dict(
                base,
                effect=float(s["coef"]),
                ci_low=float(s[f"coef lower {100 * (1 - alpha):g}%"]),
                ci_high=float(s[f"coef upper {100 * (1 - alpha):g}%"]),
                pvalue=float(s["p"]),
                note=note,
            )
        )
    out = pd.DataFrame(rows, columns=list(SURVIVAL_COLUMNS))
    out["qvalue"] = bh_qvalues(out["pvalue"].to_numpy(float))
    return out.sort_values(["pvalue", "feature"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- #
# Pseudobulk differential expression
# --------------------------------------------------------------------------- #

DE_COLUMNS: tuple[str, ...] = (
    "state",
    "gene",
    "base_mean",
    "log2fc",
    "lfc_se",
    "stat",
    "pvalue",
    "padj",
    "n_responders",
    "n_nonresponders",
    "note",
)


def pseudobulk_counts(
    counts: object,
    *,
    obs: pd.DataFrame,
    genes: Sequence[str],
    groupby: Sequence[str] = ("patient", "state"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum raw counts of cells per group.

    Parameters
    ----------
    counts
        Cells x genes matrix of raw counts (dense or scipy sparse).
    obs
        Per-cell table (rows aligned with ``counts``) with the ``groupby`` columns.
    genes
        Gene names (columns of ``counts``).

    Returns
    -------
    sums, meta
        ``sums``: groups x genes (int64); ``meta``: the group keys and
        ``n_cells`` per group, same row order.
    """
    import scipy.sparse as sp

    keys = obs[list(groupby)].astype(str)
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    uniq = pd.MultiIndex.from_tuples(list(uniques), names=list(groupby))
    order = np.argsort(np.asarray([";".join(u) for u in uniq]), kind="mergesort")
    indicator = sp.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniq), len(codes))
    )
    mat = counts if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts))
    sums = np.asarray((indicator @ mat).todense())
    n_cells = np.bincount(codes, minlength=len(uniq))
    rounded = np.rint(sums)
    if not np.allclose(sums, rounded, atol=1e-3):
        raise CartCohortError(
            "pseudobulk DE needs raw integer counts; the matrix used (layers['counts'] "
            "or X of the gex modality) holds non-integer values"
        )
    sums_df = pd.DataFrame(rounded.astype(np.int64)[order], columns=list(genes))
    meta = uniq.to_frame(index=False).iloc[order].reset_index(drop=True)
    meta["n_cells"] = n_cells[order]
    return sums_df, meta


def pseudobulk_de(
    counts: object,
    *,
    obs: pd.DataFrame,
    genes: Sequence[str],
    clinical: pd.DataFrame,
    primary_timepoint: str = "IP",
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    min_cells: int = 10,
    min_patients_per_group: int = 3,
    min_gene_count: int = 10,
    clinical_source: str = "clinical table",
) -> pd.DataFrame:
    """Pseudobulk DESeq2 (pydeseq2) per state, responders vs non-responders.

    Cells of the primary timepoint are summed per patient x state (all of a
    patient's primary-timepoint samples pooled: the patient is the
    replicate). Per state, patients with fewer than ``min_cells`` cells are
    dropped; the state is skipped (noted) when fewer than
    ``min_patients_per_group`` patients per group remain. Genes with fewer than
    ``min_gene_count`` summed counts over the state's pseudobulks are not
    tested. Design ``~ group``; log2 fold change = responders / non-responders;
    ``padj`` is DESeq2's BH within the state.

    Returns
    -------
    pandas.DataFrame
        :data:`DE_COLUMNS`; states that were skipped have one row with
        ``gene`` NA and the reason in ``note``.
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.ds import DeseqStats

    for col in ("patient", "state", "timepoint"):
        if col not in obs.columns:
            raise CartCohortError(f"cohort gex.obs has no '{col}' column; re-run rule annotate")
    labels = response_labels(
        clinical, responders=responders, excluded=excluded, source=clinical_source
    )
    sel = (obs["timepoint"].astype(str) == str(primary_timepoint)).to_numpy()
    if "qc_pass" in obs.columns:
        sel &= obs["qc_pass"].astype(bool).to_numpy()
    resp = labels["responder"].reindex(obs["patient"].astype(str)).to_numpy()
    sel &= pd.notna(resp)
    if not sel.any():
        row = {c: np.nan for c in DE_COLUMNS}
        row.update(state="(all)", note=f"skipped: no labelled {primary_timepoint} cells")
        return pd.DataFrame([row], columns=list(DE_COLUMNS))
    import scipy.sparse as sp

    mat = counts[np.flatnonzero(sel)] if sp.issparse(counts) else np.asarray(counts)[sel]
    sums, meta = pseudobulk_counts(mat, obs=obs.loc[sel], genes=genes)
    meta["responder"] = labels["responder"].reindex(meta["patient"]).astype(bool).to_numpy()
    rows: list[pd.DataFrame] = []
    for state in sorted(meta["state"].unique()):
        idx = np.flatnonzero(
            (meta["state"] == state).to_numpy() & (meta["n_cells"] >= min_cells).to_numpy()
        )
        m = meta.iloc[idx]
        n1, n0 = int(m["responder"].sum()), int((~m["responder"]).sum())
        if min(n1, n0) < min_patients_per_group:
            row = {c: np.nan for c in DE_COLUMNS}
            row.update(
                state=state,
                n_responders=n1,
                n_nonresponders=n0,
                note=(
                    f"skipped: {n1} responder and {n0} non-responder pseudobulks with >= "
                    f"{min_cells} cells (< {min_patients_per_group} per group)"
                ),
            )
            rows.append(pd.DataFrame([row], columns=list(DE_COLUMNS)))
            continue
        c = sums.iloc[idx]
        c = c.loc[:, c.sum(axis=0) >= min_gene_count]
        c.index = m["patient"].to_numpy()
        md = pd.DataFrame(
            {"group": np.where(m["responder"], "responder", "non_responder")}, index=c.index
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dds = DeseqDataSet(
                counts=c,
                metadata=md,
                design="~group",
                size_factors_fit_type="poscounts",
                refit_cooks=True,
                n_cpus=1,
                quiet=True,
            )
            dds.deseq2()
            ds = DeseqStats(
                dds, contrast=["group", "responder", "non_responder"], quiet=True, n_cpus=1
            )
            ds.summary()
        res = ds.results_df
        out = pd.DataFrame(
            {
                "state": state,
                "gene": res.index.astype(str),
                "base_mean": res["baseMean"].to_numpy(),
                "log2fc": res["log2FoldChange"].to_numpy(),
                "lfc_se": res["lfcSE"].to_numpy(),
                "stat": res["stat"].to_numpy(),
                "pvalue": res["pvalue"].to_numpy(),
                "padj": res["padj"].to_numpy(),
                "n_responders": n1,
                "n_nonresponders": n0,
                "note": f"pydeseq2 ~group; {c.shape[1]} genes with >= {min_gene_count} counts",
            },
            columns=list(DE_COLUMNS),
        )
        rows.append(out)
        logger.info("pseudobulk DE %s: %d vs %d patients, %d genes", state, n1, n0, c.shape[1])
    out = pd.concat(rows, ignore_index=True)
    out = out.sort_values(["state", "pvalue", "gene"], kind="mergesort", na_position="last")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- #
# Scorecards
# --------------------------------------------------------------------------- #

SCORECARD_COLUMNS: tuple[str, ...] = (
    "sample",
    "feature",
    "value",
    "cohort_percentile",
    "cohort_n",
    "cohort_median",
    "responder_min",
    "responder_median",
    "responder_max",
    "nonresponder_median",
    "n_responders",
    "flag",
    "direction",
    "qvalue",
)


def build_reference(patients: pd.DataFrame) -> pd.DataFrame:
    """Reference table for scorecards: one row per cohort patient.

    Parameters
    ----------
    patients
        Patient-level table from :func:`labelled_patients` (primary
        timepoint; ``response``/``responder`` columns).

    Returns
    -------
    pandas.DataFrame
        ``patient, response, responder`` then every feature column (the
        ``count_*`` helper columns are dropped). Written as
        ``results/tables/reference_features.tsv``.
    """
    feats = [c for c in feature_columns(patients) if not c.startswith("count_")]
    ref = patients[["patient", "response", "responder"] + feats].copy()
    ref["responder"] = ref["responder"].astype("boolean")
    return ref.sort_values("patient", kind="mergesort").reset_index(drop=True)


def score_product(
    product: pd.Series,
    *,
    reference: pd.DataFrame,
    association: pd.DataFrame | None = None,
    exclude_patient: str | None = None,
    min_reference: int = 3,
) -> pd.DataFrame:
    """Place one product's features in the cohort reference.

    Parameters
    ----------
    product
        One row of a sample-feature table (``sample`` plus feature values).
    reference
        Table from :func:`build_reference` (e.g. read from
        ``reference_features.tsv``).
    association
        ``association.tsv`` (optional): adds the Mann–Whitney direction and
        q-value of each feature.
    exclude_patient
        Patient left out of the reference (leave-one-out when scoring a
        cohort product, so it is not compared with itself).
    min_reference
        Features with fewer reference values get flag ``no_reference``.

    Returns
    -------
    pandas.DataFrame
        :data:`SCORECARD_COLUMNS`, one row per feature. ``cohort_percentile``
        is the mid-rank percentile ``100 (n_below + n_equal / 2) / n`` among
        reference patients; ``flag`` is ``below_responder_range``,
        ``above_responder_range``, ``within_responder_range``, ``no_value``
        or ``no_reference``.
    """
    ref = reference.copy()
    ref["patient"] = ref["patient"].astype(str)
    if exclude_patient is not None:
        ref = ref[ref["patient"] != str(exclude_patient)]
    responder = ref["responder"]
    if not pd.api.types.is_bool_dtype(responder):
        responder = responder.map(
            lambda v: pd.NA if pd.isna(v) else str(v).strip().lower() in ("true", "1")
        )
    is_resp = responder.fillna(False).astype(bool).to_numpy()
    is_non = (responder.notna() & ~responder.fillna(False).astype(bool)).to_numpy()
    feats = [f for f in feature_columns(ref) if not f.startswith("count_")]
    mw = None
    if association is not None and len(association):
        mw = association[association["test"] == "mann_whitney"].set_index("feature")
    rows = []
    sample = str(product.get("sample", "NA"))
    for f in feats:
        ref_v = ref[f].to_numpy(float)
        ok = np.isfinite(ref_v)
        allv = ref_v[ok]
        rv = ref_v[ok & is_resp]
        nv = ref_v[ok & is_non]
        raw = product.get(f, np.nan)
        value = float(raw) if raw is not None and not pd.isna(raw) else np.nan
        row = dict(
            sample=sample,
            feature=f,
            value=value,
            cohort_n=len(allv),
            cohort_median=float(np.median(allv)) if len(allv) else np.nan,
            responder_min=float(rv.min()) if len(rv) else np.nan,
            responder_median=float(np.median(rv)) if len(rv) else np.nan,
            responder_max=float(rv.max()) if len(rv) else np.nan,
            nonresponder_median=float(np.median(nv)) if len(nv) else np.nan,
            n_responders=len(rv),
            direction=mw.loc[f, "direction"] if mw is not None and f in mw.index else "NA",
            qvalue=float(mw.loc[f, "qvalue"]) if mw is not None and f in mw.index else np.nan,
        )
        if not np.isfinite(value):
            row.update(cohort_percentile=np.nan, flag="no_value")
        elif len(allv) < min_reference:
            row.update(cohort_percentile=np.nan, flag="no_reference")
        else:
            pct = 100.0 * ((allv < value).sum() + 0.5 * (allv == value).sum()) / len(allv)
            row["cohort_percentile"] = pct
            if len(rv) < min_reference:
                row["flag"] = "no_reference"
            elif value < rv.min():
                row["flag"] = "below_responder_range"
            elif value > rv.max():
                row["flag"] = "above_responder_range"
            else:
                row["flag"] = "within_responder_range"
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(SCORECARD_COLUMNS))
    return out


def score_cohort_products(
    features: pd.DataFrame,
    *,
    reference: pd.DataFrame,
    association: pd.DataFrame | None,
    samples: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """Scorecards of cohort products, each against the reference without its patient.

    A sample listed in ``samples`` but absent from ``features`` (e.g. excluded
    at QC) gets a card whose every feature is flagged ``no_value``.
    """
    by_sample = features.assign(sample=features["sample"].astype(str)).set_index("sample")
    cards: dict[str, pd.DataFrame] = {}
    for sample in samples:
        if sample in by_sample.index:
            row = by_sample.loc[sample].copy()
            row["sample"] = sample
            patient = str(row.get("patient"))
        else:
            logger.warning("sample %s has no features (excluded upstream?): no values", sample)
            row, patient = pd.Series({"sample": sample}), None
        cards[sample] = score_product(
            row, reference=reference, association=association, exclude_patient=patient
        )
    return cards


def product_meta(
    features: pd.DataFrame, *, patients: pd.DataFrame, samples: Sequence[str]
) -> pd.DataFrame:
    """Per-product header info for the scorecard page: patient, response, cells."""
    f = features.assign(sample=features["sample"].astype(str)).set_index("sample")
    resp = patients.assign(patient=patients["patient"].astype(str)).set_index("patient")["response"]
    rows = {}
    for s in samples:
        if s not in f.index:
            rows[s] = {"patient": "NA", "response": "NA", "n_cells": "NA"}
            continue
        pt = str(f.loc[s, "patient"])
        r = resp.get(pt, pd.NA)
        rows[s] = {
            "patient": pt,
            "response": "NA" if pd.isna(r) else str(r),
            "n_cells": int(f.loc[s, "n_cells"]) if "n_cells" in f.columns else "NA",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def scorecards_html(
    cards: Mapping[str, pd.DataFrame],
    *,
    meta: pd.DataFrame | None = None,
    qvalue_threshold: float = 0.05,
    title: str = "Product scorecards",
) -> str:
    """Self-contained HTML page with one table per product.

    Rows are ordered by association q-value (features associated with
    response first); values outside the responders' range are highlighted.

    Parameters
    ----------
    cards
        Sample -> table from :func:`score_product`.
    meta
        Optional per-sample info (index sample; e.g. patient, response) shown
        in each section header.
    qvalue_threshold
        Features with a Mann–Whitney q-value below this are marked.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;font-size:13px;margin:1em}"
        "table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        ".out{background:#f8d7da}.in{background:#d4edda}.sig{font-weight:bold}"
        "</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<p>Each infusion product's features placed in the cohort: percentile among the "
        "cohort's patients (leave-one-out for cohort products) and whether the value lies "
        "outside the range seen in responders (red) or inside it (green). Bold features have "
        f"a Mann&ndash;Whitney q-value &lt; {qvalue_threshold:g} for response. Association "
        "is cohort-level evidence, not a prediction for one product.</p>",
    ]
    summary = []
    for sample, card in cards.items():
        sig = card[card["qvalue"] < qvalue_threshold]
        out = sig["flag"].isin(["below_responder_range", "above_responder_range"]).sum()
        summary.append((sample, len(sig), int(out)))
    parts.append(
        "<h2>Overview</h2><table><tr><th>product</th><th>associated features</th>"
        "<th>outside responder range</th></tr>"
    )
    for sample, n_sig, n_out in summary:
        parts.append(
            f"<tr><td><a href='#{esc(sample)}'>{esc(sample)}</a></td><td>{n_sig}</td>"
            f"<td>{n_out}</td></tr>"
        )
    parts.append("</table>")
    cols = [
        "feature",
        "value",
        "cohort_percentile",
        "responder_min",
        "responder_median",
        "responder_max",
        "nonresponder_median",
        "direction",
        "qvalue",
        "flag",
    ]
    for sample, card in cards.items():
        header = esc(sample)
        if meta is not None and sample in meta.index:
            info = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in meta.loc[sample].items())
            header += f" <small>({info})</small>"
        parts.append(f"<h2 id='{esc(sample)}'>{header}</h2><table><tr>")
        parts.extend(f"<th>{esc(c)}</th>" for c in cols)
        parts.append("</tr>")
        card = card.assign(_q=card["qvalue"].fillna(np.inf)).sort_values(
            ["_q", "feature"], kind="mergesort"
        )
        for _, r in card.iterrows():
            cls = (
                "out"
                if r["flag"] in ("below_responder_range", "above_responder_range")
                else "in" if r["flag"] == "within_responder_range" else ""
            )
            sig = " sig" if r["qvalue"] < qvalue_threshold else ""
            cells = []
            for c in cols:
                v = r[c]
                if isinstance(v, float):
                    v = "NA" if not np.isfinite(v) else f"{v:.4g}"
                cells.append(f"<td>{esc(str(v))}</td>")
            parts.append(f"<tr class='{cls}{sig}'>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
