"""Planted clone kinetics after infusion, and their exact expected frequencies (truth).

Each patient has two planted sets of product clones (alpha-beta, CAR+, the largest
expected product share first; :class:`~cartcohort.datasets.patients.PatientSim`):

* **expanded** clones (8-12 in responders, 4-7 in non-responders): each gets a fold
  change drawn log-uniformly in :data:`FC_RANGE` (its frequency among T cells in blood
  over its frequency in the product). At day <= :data:`EARLY_DAY` the fold change holds
  in every patient; later it is multiplied by :data:`LATE_FACTOR` (responders keep their
  CAR+ clones, non-responders lose them), and non-responders' blood is mostly new
  CAR-negative clones (:data:`LATE_NEW_CLONE_RATE`): CAR+ persistence is longer in
  responders;
* **null** clones (the next :data:`N_NULL` candidates): fold change 1 at every timepoint.

A blood library draws a share ``a`` of its non-Treg cells from these planted clones (the
"in vivo" branch, probabilities ``pi``), the rest as before from the blood pools and the
product pools by state. ``a`` and ``pi`` are solved so that each planted clone's
expected frequency, in vivo branch and product pools together, equals its target
(:func:`in_vivo_plan`); :func:`expected_frequency` gives the exact expectation, which
is the truth the kinetics tests are scored against (``truth_kinetics.tsv``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .genes import STATES

#: Planted fold change of an expanded clone: log-uniform in this range.
FC_RANGE: tuple[float, float] = (4.0, 10.0)
#: Days after infusion up to which the planted fold change holds in every patient.
EARLY_DAY: int = 30
#: Later: fold change multiplied by this, by response (True = responder).
LATE_FACTOR: dict[bool, float] = {True: 0.8, False: 0.15}
#: Later, non-responders' blood is mostly new (endogenous, CAR-negative) clones: the
#: share of blood cells from clones absent from the product rises to at least this.
LATE_NEW_CLONE_RATE: float = 0.85
#: Planted null clones per patient.
N_NULL: int = 8
#: Number of planted expanded clones: inclusive range by response.
N_EXPANDED: dict[bool, tuple[int, int]] = {True: (8, 12), False: (4, 7)}
#: Planted persistent clones get at least this many cells in every library.
MIN_PLANTED_CELLS: int = 2
_I_TREG = STATES.index("treg")
_I_PROLIF = STATES.index("proliferating")


def clone_state_probs(props: np.ndarray, stray_rate: float) -> np.ndarray:
    """P(the pool state a cell's clone is drawn from), ``STATES`` order (proliferating 0).

    Mirrors :func:`cartcohort.datasets.library._draw_states`: proliferating cells, and
    a ``stray_rate`` share of the other non-Treg cells, draw their clone from a pool
    state chosen by the non-Treg, non-proliferating proportions.
    """
    props = np.asarray(props, dtype=float)
    alt = np.array([i for i in range(len(STATES)) if i not in (_I_TREG, _I_PROLIF)])
    alt_w = props[alt] / props[alt].sum()
    moved = props[_I_PROLIF] + stray_rate * props[alt].sum()
    out = np.zeros(len(STATES))
    out[alt] = props[alt] * (1.0 - stray_rate) + moved * alt_w
    out[_I_TREG] = props[_I_TREG]
    return out


@dataclass(frozen=True)
class PlantedClone:
    """One planted clone: index in ``PatientSim.clones``, pool state and rank, planted FC."""

    clone: int
    state: str
    rank: int
    fc: float  # planted early fold change (1 for null clones)
    expanded: bool


@dataclass(frozen=True)
class InVivoPlan:
    """The in vivo branch of one blood timepoint."""

    share: float  # ``a``: per non-Treg cell
    clones: np.ndarray  # indices into PatientSim.clones
    probs: np.ndarray  # ``pi``
    expected: np.ndarray  # expected frequency of each planted clone among all cells


def target_fc(p: PlantedClone, *, day: int, responder: bool) -> float:
    """The planted fold change of clone ``p`` at ``day`` after infusion."""
    if not p.expanded:
        return 1.0
    return p.fc if day <= EARLY_DAY else p.fc * LATE_FACTOR[responder]


def new_clone_rate(psim, day: int) -> float:
    """Share of an unsorted blood library's non-planted cells from blood-only clones."""
    ncr = psim.params.new_clone_rate
    if day > EARLY_DAY and not psim.plan.responder:
        return max(ncr, LATE_NEW_CLONE_RATE)
    return ncr


def _pool_w(pool) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], pool.cum]))


def product_frequency(psim, p: PlantedClone) -> float:
    """Expected frequency of planted clone ``p`` among all product cells."""
    cs = clone_state_probs(_props(psim, "IP"), psim.params.stray_rate)
    return float(cs[STATES.index(p.state)] * _pool_w(psim.pools[("ip", p.state)])[p.rank])


def _props(psim, timepoint: str) -> np.ndarray:
    from .patients import timepoint_props

    return timepoint_props(psim.plan, timepoint)


def in_vivo_plan(psim, timepoint: str, day: int) -> InVivoPlan:
    """Share and probabilities of the in vivo branch of an unsorted blood library.

    Solves ``a (1 - p_treg) pi_j + (1 - a) c_j = target_j`` (``c_j``: the clone's
    product-pool contribution at this timepoint) by fixed-point iteration, with the
    in vivo part of a clone floored at 0 and ``a`` capped at ``params.persistent_share``
    (both make the realised fold change differ from the planted one; the truth table
    holds the realised expectation).
    """
    props = _props(psim, timepoint)
    cs = clone_state_probs(props, psim.params.stray_rate)
    ncr = new_clone_rate(psim, day)
    planted: list[PlantedClone] = psim.planted
    target = np.array([target_fc(p, day=day, responder=psim.plan.responder)
                       * product_frequency(psim, p) for p in planted])
    c = np.array([(1.0 - ncr) * cs[STATES.index(p.state)]
                  * _pool_w(psim.pools[("ip", p.state)])[p.rank] for p in planted])
    non_treg = 1.0 - props[_I_TREG]
    a = 0.0
    for _ in range(200):
        v = np.maximum(target - (1.0 - a) * c, 0.0)
        a_new = min(float(v.sum()) / non_treg, psim.params.persistent_share)
        if abs(a_new - a) < 1e-12:
            break
        a = a_new
    v = np.maximum(target - (1.0 - a) * c, 0.0)
    probs = v / v.sum() if v.sum() > 0 else np.full(len(v), 1.0 / max(len(v), 1))
    expected = a * non_treg * probs + (1.0 - a) * c
    return InVivoPlan(share=a, clones=np.array([p.clone for p in planted], dtype=np.int64),
                      probs=probs, expected=expected)


def _gd_share(psim, props: np.ndarray, a: float, day: int) -> float:
    """Expected share of gamma-delta cells (no reported TCR) in a library (``a`` < 0:
    the product)."""
    from .patients import _GD, POOL_STATES

    cs = clone_state_probs(props, psim.params.stray_rate)
    ncr = new_clone_rate(psim, day) if a >= 0 else 0.0
    total = 0.0
    for s in POOL_STATES:
        i = STATES.index(s)
        keep = 1.0 if s == "treg" else 1.0 - max(a, 0.0)
        for source, share in (("ip", 1.0 - ncr), ("pb", ncr)):
            pool = psim.pools[(source, s)]
            total += cs[i] * keep * share * float(_pool_w(pool)[pool.lineage == _GD].sum())
    return total


def _forced(freq: float, n_cells: int) -> float:
    """Expected frequency of a clone forced to >= MIN_PLANTED_CELLS cells (Poisson)."""
    from scipy.stats import poisson

    lam = freq * n_cells
    ks = np.arange(MIN_PLANTED_CELLS)
    extra = float(((MIN_PLANTED_CELLS - ks) * poisson.pmf(ks, lam)).sum())
    return (lam + extra) / n_cells


def expected_frequency(psim, timepoint: str, day: int, n_cells: int) -> dict[int, float]:
    """Expected frequency of each planted clone among alpha-beta TCR cells of a library.

    ``timepoint`` ``IP`` is the product; any other an unsorted blood library at ``day``.
    Expanded clones are forced to >= :data:`MIN_PLANTED_CELLS` of the ``n_cells`` cells.
    """
    if timepoint == "IP":
        freqs = np.array([product_frequency(psim, p) for p in psim.planted])
        gd = _gd_share(psim, _props(psim, "IP"), -1.0, 0)
    else:
        plan = in_vivo_plan(psim, timepoint, day)
        freqs = plan.expected
        gd = _gd_share(psim, _props(psim, timepoint), plan.share, day)
    out = {}
    for p, f in zip(psim.planted, freqs, strict=True):
        f = _forced(f, n_cells) if p.expanded else f
        out[p.clone] = float(f / (1.0 - gd))
    return out
