"""Logistic regression of response on a feature: maximum likelihood or Firth.

``responder ~ z(feature) + covariates``; effect = log odds ratio per SD of the feature.
Firth's penalised likelihood (Heinze & Schemper 2002; profile penalised-likelihood CI,
finite under separation, and penalised likelihood-ratio test) is used whenever

- the response is completely or quasi-completely separated by the feature and the
  covariates (:func:`separation`, the linear-programming check of the Albert & Anderson
  conditions), where the ML estimate does not exist;
- there are fewer than ``min_events_per_variable`` patients of the smaller group per
  parameter;
- or the ML fit itself shows divergence (no convergence, fitted probabilities of 0 or
  1, singular Hessian).

Otherwise maximum likelihood (statsmodels, Wald CI). The ``note`` column says which fit
was used and why. Beside the per-SD effect, each row gives the odds ratio per stated
unit of the feature (:func:`feature_unit`): 10 percentage points for a fraction,
a doubling for a log2 ratio, 1 SD otherwise.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from ..errors import CartCohortError
from ._utils import ASSOCIATION_COLUMNS, direction


@dataclass(frozen=True)
class LogisticFit:
    """Coefficient of one column of a logistic model.

    Attributes
    ----------
    coef, ci_low, ci_high, pvalue
        Estimate, confidence interval and p-value of the coefficient.
    method
        ``ml`` or ``firth``.
    converged
        Whether the fit converged.
    """

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


def separation(X: np.ndarray, y: np.ndarray, *, tol: float = 1e-7) -> str:
    """Whether the outcome is separated by the design: ``complete``, ``quasi-complete`` or ``''``.

    The linear-programming check of the Albert & Anderson (1984) conditions (as in
    Konis 2007, R package ``safeBinaryRegression`` / ``detectseparation``), over every
    column of ``X`` together (the feature and the covariates), not the feature alone:

    - *quasi-complete*: some ``b != 0`` has ``s_i = (2 y_i - 1) x_i b >= 0`` for every
      patient, i.e. the maximum of ``sum_i s_i`` over ``s >= 0``, ``|b_j| <= 1`` is > 0;
    - *complete*: some ``b`` has every ``s_i > 0``, i.e. the maximum of ``min_i s_i``
      over ``|b_j| <= 1`` is > 0.

    Either way the maximum-likelihood estimate does not exist (it diverges).

    Parameters
    ----------
    X
        Design matrix including the intercept column (full column rank).
    y
        0/1 outcome.
    tol
        Optimum values up to ``tol`` count as 0.
    """
    sign = 2.0 * np.asarray(y, float) - 1.0
    A = sign[:, None] * np.asarray(X, float)  # s = A b
    n, k = A.shape
    # complete: maximise t subject to A b >= t, |b| <= 1, t <= 1
    res = optimize.linprog(
        c=np.r_[np.zeros(k), -1.0],
        A_ub=np.c_[-A, np.ones(n)],
        b_ub=np.zeros(n),
        bounds=[(-1.0, 1.0)] * k + [(None, 1.0)],
        method="highs",
    )
    if res.status == 0 and -res.fun > tol:
        return "complete"
    # quasi-complete: maximise sum(A b) subject to A b >= 0, |b| <= 1
    res = optimize.linprog(
        c=-A.sum(axis=0), A_ub=-A, b_ub=np.zeros(n), bounds=[(-1.0, 1.0)] * k, method="highs"
    )
    if res.status == 0 and -res.fun > tol:
        return "quasi-complete"
    return ""


def _firth_reasons(
    X: np.ndarray, y: np.ndarray, *, min_events_per_variable: float
) -> list[str]:
    """Why the ML fit is not tried (separation, too few events per parameter).

    Raises
    ------
    CartCohortError
        When the design matrix is rank deficient.
    """
    n_params = X.shape[1] - 1
    n_small = int(min(y.sum(), len(y) - y.sum()))
    epv = n_small / n_params
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise CartCohortError(
            "logistic design matrix is rank deficient (a covariate is collinear with the "
            "feature or another covariate); remove it from associate.covariates"
        )
    reasons: list[str] = []
    sep = separation(X, y)
    if sep:
        what = "the feature" if X.shape[1] == 2 else "the feature and covariates"
        reasons.append(f"{sep} separation by {what} (linear-programming check)")
    if epv < min_events_per_variable:
        reasons.append(
            f"{epv:.3g} patients of the smaller group per parameter (< {min_events_per_variable:g})"
        )
    return reasons


def _ml_fit(
    X: np.ndarray, y: np.ndarray, *, alpha: float, reasons: list[str]
) -> LogisticFit | None:
    """Maximum-likelihood fit, or None (with the reasons appended) when it is not usable."""
    import statsmodels.api as sm
    from statsmodels.tools import sm_exceptions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(y, X).fit(disp=0, maxiter=200)
            fitted = res.predict(X)
        except (sm_exceptions.PerfectSeparationError, np.linalg.LinAlgError) as err:
            reasons.append(f"ML fit failed ({type(err).__name__})")
            return None
    kinds = {type(w.message).__name__ for w in caught}
    if "PerfectSeparationWarning" in kinds:
        reasons.append("separation detected by the ML fit")
    if not res.mle_retvals.get("converged", True) or "ConvergenceWarning" in kinds:
        reasons.append("ML fit did not converge")
    if "HessianInversionWarning" in kinds:
        reasons.append("ML Hessian not invertible")
    if np.any(fitted < 1e-8) or np.any(fitted > 1 - 1e-8):
        reasons.append("fitted probabilities of 0 or 1 (quasi-separation)")
    if reasons:
        return None
    ci = res.conf_int(alpha=alpha)
    return LogisticFit(
        float(res.params[1]), float(ci[1, 0]), float(ci[1, 1]), float(res.pvalues[1]), "ml", True
    )


_FRACTION_NAME = re.compile(r"(^|_)(frac|fraction|prop)(_|$)")


def feature_unit(name: str, values: np.ndarray) -> tuple[str, float | None]:
    """The unit an odds ratio of ``name`` is stated per.

    Rule: a feature is a *fraction* when its name has a ``frac``, ``fraction`` or
    ``prop`` token (``memory_like_fraction``, ``frac_treg``, ``rep_top10_fraction``)
    **and** every finite value lies in [0, 1]: unit ``10 percentage points`` (0.1). A
    name starting with ``log2_`` is a log2 ratio: unit ``doubling`` (1 on the log2
    scale). Anything else (scores, diversity indices, counts) has no natural unit:
    ``1 SD``.

    Returns
    -------
    (unit, size)
        The label and the size of one unit in the feature's own scale; ``None`` for
        ``1 SD`` (the size is then the feature's SD).
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if _FRACTION_NAME.search(name) and v.size and v.min() >= 0.0 and v.max() <= 1.0:
        return "10 percentage points", 0.1
    if name.startswith("log2_"):
        return "doubling", 1.0
    return "1 SD", None


def _per_unit(fit: LogisticFit, *, sd: float, size: float | None) -> dict[str, float]:
    """Odds ratio and CI per unit from a fit per SD (``size`` None: per SD)."""
    scale = 1.0 if size is None else size / sd
    return {
        "or_per_unit": float(np.exp(fit.coef * scale)),
        "or_unit_ci_low": float(np.exp(fit.ci_low * scale)),
        "or_unit_ci_high": float(np.exp(fit.ci_high * scale)),
    }


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
        The fit of the feature's coefficient; the note says which fit was
        used and why.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    z = (x - x.mean()) / x.std(ddof=1)
    cols = [np.ones_like(z), z]
    if covariates is not None and covariates.size:
        cols += [covariates[:, j] for j in range(covariates.shape[1])]
    X = np.column_stack(cols)
    reasons = _firth_reasons(X, y, min_events_per_variable=min_events_per_variable)
    if not reasons:
        fit = _ml_fit(X, y, alpha=alpha, reasons=reasons)
        if fit is not None:
            return fit, "maximum likelihood (Wald CI and test)"
    fit = firth_logistic(X, y, column=1, alpha=alpha)
    note = "Firth penalised fit (profile CI, penalised LR test) because: " + "; ".join(reasons)
    if not fit.converged:
        note += "; Firth fit did not fully converge"
    return fit, note


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
    """Logistic-regression rows (family ``logistic``), complete cases per feature.

    Returns
    -------
    pandas.DataFrame
        :data:`~cartcohort.stats.ASSOCIATION_COLUMNS` rows, one per feature, with
        the odds ratio per ``unit`` (:func:`feature_unit`) beside the per-SD log odds
        ratio; features with too few complete cases or constant values are not
        fitted (NA effect, the reason in ``note``); q-values not yet filled.
    """
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
        unit, size = feature_unit(f, v)
        row["unit"] = unit
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
            direction=direction(fit.coef),
            note=f"{note}; {adj}",
            **_per_unit(fit, sd=float(xs.std(ddof=1)), size=size),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))
