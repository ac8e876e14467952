"""Statistical primitives of clone kinetics (:mod:`cartcohort.tl.kinetics`).

* Binomial intervals of a clone's frequency: Clopper–Pearson (exact; never narrower
  than the nominal level, and defined at 0 and at n cells).
* Fold change of a clone's frequency between two libraries: the ratio of the two
  frequencies with a **Haldane–Anscombe pseudocount** (0.5 added to each of the four
  cells of the 2 x 2 table) and the Katz log interval. The pseudocount keeps the ratio
  and its interval finite when a clone is absent from one library (an emergent clone,
  or a product clone no longer seen) and shrinks extreme ratios of tiny counts towards
  1; the log interval has close to nominal coverage of the ratio of two binomial
  proportions from a few cells upwards (Katz et al. 1978; Fagerland et al. 2015).
* The test of expansion or contraction is **Fisher's exact test** (two-sided,
  conditional on the margins) on the same 2 x 2 table without pseudocount: exact at the
  small counts of most clones, where a beta-binomial model would need an
  overdispersion estimate that a single pair of libraries cannot give.
* Morisita–Horn overlap with a permutation p-value: the null hypothesis is "no clonal
  relationship": one repertoire's clones are placed at random among the possible clones
  (``universe``, by default 10^6; each repertoire keeps its clone sizes), so the p-value
  is the share of permuted overlaps at least as large as the observed one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.stats import beta, fisher_exact, norm

from ..errors import CartCohortError


def clopper_pearson_arrays(
    k: np.ndarray, n: np.ndarray, *, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial interval of ``k / n``, elementwise; NaN where ``n`` is 0.

    Parameters
    ----------
    k, n
        Successes and trials (same shape, ``0 <= k <= n``).
    ci
        Confidence level.

    Returns
    -------
    tuple of ndarray
        Lower and upper limits.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(k < 0) or np.any(k > n):
        raise CartCohortError("binomial interval needs 0 <= k <= n")
    a = (1.0 - ci) / 2.0
    ok = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(a, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - a, k + 1, n - k), 1.0)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def fold_change_ci(
    k1: np.ndarray,
    n1: np.ndarray,
    k2: np.ndarray,
    n2: np.ndarray,
    *,
    pseudocount: float = 0.5,
    ci: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold change ``(k2/n2) / (k1/n1)`` with a pseudocount, and its Katz log interval.

    Parameters
    ----------
    k1, n1
        Cells of the clone and all cells of the reference library (the product).
    k2, n2
        The same in the later library.
    pseudocount
        Added to ``k`` and to ``n - k`` of each library (0.5: Haldane–Anscombe).
    ci
        Confidence level.

    Returns
    -------
    tuple of ndarray
        Fold change, lower and upper limit (NaN where a library has no cells).
    """
    k1, n1, k2, n2 = (np.asarray(x, dtype=float) for x in (k1, n1, k2, n2))
    if pseudocount <= 0:
        raise CartCohortError(f"kinetics.pseudocount must be > 0, got {pseudocount}")
    a, b = k1 + pseudocount, n1 + 2 * pseudocount
    c, d = k2 + pseudocount, n2 + 2 * pseudocount
    with np.errstate(invalid="ignore", divide="ignore"):
        log_fc = np.log(c / d) - np.log(a / b)
        se = np.sqrt(1.0 / a - 1.0 / b + 1.0 / c - 1.0 / d)
    z = float(norm.ppf(0.5 + ci / 2.0))
    ok = (n1 > 0) & (n2 > 0)
    fc = np.where(ok, np.exp(log_fc), np.nan)
    return fc, np.where(ok, np.exp(log_fc - z * se), np.nan), np.where(
        ok, np.exp(log_fc + z * se), np.nan)


@lru_cache(maxsize=65536)
def _fisher(a: int, b: int, c: int, d: int) -> float:
    return float(fisher_exact([[a, b], [c, d]], alternative="two-sided")[1])


def fisher_pvalues(k1: np.ndarray, n1: np.ndarray, k2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Two-sided Fisher exact p-value of each clone's 2 x 2 table (clone vs rest, two libraries).

    Identical tables are computed once (most clones share the few small-count tables).
    """
    k1, n1, k2, n2 = (np.asarray(x, dtype=np.int64) for x in (k1, n1, k2, n2))
    out = np.empty(k1.shape, dtype=float)
    for i, (a, n, c, m) in enumerate(zip(k1.ravel(), n1.ravel(), k2.ravel(), n2.ravel(),
                                         strict=True)):
        out.flat[i] = _fisher(int(a), int(n - a), int(c), int(m - c)) if n and m else np.nan
    return out


def _mh(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Morisita–Horn of ``x`` (1-D) against each row of ``y`` (2-D), same clone order."""
    nx, ny = x.sum(), y.sum(axis=-1)
    dx = (x**2).sum() / nx**2
    dy = (y**2).sum(axis=-1) / ny**2
    return 2.0 * (y @ x) / ((dx + dy) * nx * ny)


def morisita_horn_permutation(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 999,
    universe: int | None = 1_000_000,
    seed: int | np.random.SeedSequence = 0,
) -> tuple[float, float]:
    """Morisita–Horn overlap of two repertoires and its permutation p-value.

    Null hypothesis "no clonal relationship": ``y``'s clones are placed at random among
    ``universe`` possible clones, of which ``x``'s observed clones are some (each
    repertoire keeps its clone sizes), so clones are shared only by chance. A
    permutation draws how many of ``y``'s clones land on ``x``'s clones
    (hypergeometric) and which ones pair up (uniformly), which is exactly a random
    permutation of ``y``'s clone identities over ``universe`` positions.

    ``universe`` is the number of distinct clones the two libraries could come from:
    the default 10^6 is a lower bound of the distinct alpha-beta clonotypes of human
    blood (10^6-10^8: Arstila et al. 1999; Qi et al. 2014), so an exact nucleotide
    clonotype shared between two libraries is almost never chance. ``None`` permutes over
    the observed union only (the ecological null "abundances unrelated across the
    clones seen"), which asks whether the *large* clones coincide: two libraries whose
    shared clones are all small then get a large p-value.

    Parameters
    ----------
    x, y
        Cells per clone of the two repertoires, aligned on the union of their clones
        (zeros where a clone is absent).
    n_permutations
        Random placements of ``y``'s clones.
    universe
        Possible clones (at least the observed union is used), or ``None``.
    seed
        Seed of the generator.

    Returns
    -------
    tuple of float
        Overlap (1 = identical clone frequencies, 0 = no shared clone) and the p-value
        ``(1 + #{permuted >= observed}) / (1 + n_permutations)``; both NaN if either
        repertoire is empty.
    """
    from scipy.stats import hypergeom

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise CartCohortError("Morisita-Horn needs two clone-count vectors on the same clones")
    if n_permutations < 1:
        raise CartCohortError(f"kinetics.n_permutations must be >= 1, got {n_permutations}")
    if x.sum() == 0 or y.sum() == 0:
        return float("nan"), float("nan")
    obs = float(_mh(x, y[None, :])[0])
    nx, ny = x.sum(), y.sum()
    scale = 2.0 / (((x**2).sum() / nx**2 + (y**2).sum() / ny**2) * nx * ny)
    xs, ys = x[x > 0], y[y > 0]
    size = max(int(universe or 0), int(((x > 0) | (y > 0)).sum()))
    rng = np.random.default_rng(seed)
    ks = hypergeom.rvs(size, len(xs), len(ys), size=n_permutations, random_state=rng)
    hits = 0
    for k in ks:
        if k == 0:
            hits += obs <= 1e-12
            continue
        cross = rng.choice(xs, size=k, replace=False) @ rng.choice(ys, size=k, replace=False)
        hits += scale * cross >= obs - 1e-12
    return obs, (1.0 + hits) / (1.0 + n_permutations)


    order = np.argsort(p[ok], kind="mergesort")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def clonality(counts: np.ndarray) -> float:
    """Clonality ``1 - Pielou evenness`` of clone sizes (0 = all clones the same size,
    towards 1 = one clone dominates); NaN with fewer than 2 clones."""
    c = np.asarray(counts, dtype=float)
    c = c[c > 0]
    if len(c) < 2:
        return float("nan")
    p = c / c.sum()
    return float(1.0 + (p * np.log(p)).sum() / np.log(len(c)))


def auc_trapezoid(days: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under ``values`` over ``days`` (sorted by day); NaN with < 2 points."""
    d = np.asarray(days, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(d) & np.isfinite(v)
    d, v = d[ok], v[ok]
    if len(d) < 2:
        return float("nan")
    order = np.argsort(d, kind="mergesort")
    d, v = d[order], v[order]
    return float(np.sum((d[1:] - d[:-1]) * (v[1:] + v[:-1]) / 2.0))
