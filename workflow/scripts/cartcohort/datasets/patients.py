"""Per-patient clone pools: who the cells of a patient's libraries are drawn from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._utils import clip
from .genes import DN_CD4_LIKE, STATES
from .kinetics import FC_RANGE, N_NULL, InVivoPlan, PlantedClone, in_vivo_plan
from .params import SimParams
from .plan import PatientPlan
from .tcr import Clone, make_chain, make_gd_chains

POOL_STATES: tuple[str, ...] = tuple(s for s in STATES if s != "proliferating")
LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "gd")
_DN = LINEAGES.index("DN")
_GD = LINEAGES.index("gd")
# Relative enrichment of DN and gamma-delta clones in each state's pool: both lean to
# effector-memory and effector cells (DN CAR-T cells are mostly effector-memory; blood
# gamma-delta cells, mostly V-gamma-9 V-delta-2, are effector-memory or cytotoxic effectors).
_DN_ENRICHMENT = {"naive_tscm": 0.4, "tcm": 0.7, "tem": 1.8, "teff": 1.4, "exhausted": 1.0}
_GD_ENRICHMENT = {"naive_tscm": 0.2, "tcm": 0.4, "tem": 1.5, "teff": 2.0, "exhausted": 0.7}
_BLOOD_DN_SCALE = 0.5  # blood-only (not product) clones are DN half as often
_MAX_UNCONVENTIONAL = 0.8  # at most this share of a pool's clones is DN or gamma-delta


@dataclass
class _Pool:
    cum: np.ndarray
    lineage: np.ndarray  # index into LINEAGES
    car: np.ndarray
    dual: np.ndarray
    clone: np.ndarray  # index into PatientSim.clones, -1 = not drawn yet
    car_idx: np.ndarray
    car_cum: np.ndarray


class PatientSim:
    """A patient's clone pools (per source and state); clones are drawn when first used."""

    def __init__(self, plan: PatientPlan, params: SimParams, used_cdr3: set[str]):
        self.plan = plan
        self.params = params
        self.rng = np.random.default_rng([params.seed, 3, plan.index])
        self.used = used_cdr3
        self.clones: list[Clone] = []
        self.pools: dict[tuple[str, str], _Pool] = {}
        shares = lineage_shares(plan)
        for source in ("ip", "pb"):
            for state in POOL_STATES:
                self.pools[(source, state)] = self._new_pool(source, state, shares)
        # planted clones: the CAR+ product clones with the largest expected share, the
        # first n_persistent expanded after infusion (kinetics.py), the next N_NULL null
        cands = []
        for state in POOL_STATES:
            if state == "treg":
                continue
            pool = self.pools[("ip", state)]
            w = np.diff(np.concatenate([[0.0], pool.cum])) * plan.props_ip[state]
            # persistence is tracked by the alpha-beta TCR: gamma-delta clones are left out
            for k in np.flatnonzero(pool.car[:50] & (pool.lineage[:50] != _GD)):
                cands.append((-w[k], state, int(k)))
        cands.sort()
        self.persistent: list[int] = []
        self.planted: list[PlantedClone] = []
        fc_rng = np.random.default_rng([params.seed, 9, plan.index])
        lo, hi = np.log(FC_RANGE[0]), np.log(FC_RANGE[1])
        for i, (_, state, k) in enumerate(cands[: plan.n_persistent + N_NULL]):
            ci = self.clone_of(("ip", state), k)
            expanded = i < plan.n_persistent
            fc = float(np.exp(fc_rng.uniform(lo, hi))) if expanded else 1.0
            self.planted.append(PlantedClone(ci, state, k, fc, expanded))
            if expanded:
                self.clones[ci].persistent = True
                self.persistent.append(ci)
        self._in_vivo: dict[tuple[str, int], InVivoPlan] = {}

    def in_vivo(self, timepoint: str, day: int) -> InVivoPlan:
        """The in vivo branch of a blood library at ``timepoint`` (cached)."""
        key = (timepoint, int(day))
        if key not in self._in_vivo:
            self._in_vivo[key] = in_vivo_plan(self, timepoint, int(day))
        return self._in_vivo[key]

    def _new_pool(
        self, source: str, state: str, shares: dict[str, tuple[float, float, float]]
    ) -> _Pool:
        k = self.params.clone_pool_size
        rng = self.rng
        w = (np.arange(k) + 1.0) ** -self.plan.alpha
        cum = np.cumsum(w / w.sum())
        cum[-1] = 1.0
        if state == "treg":
            lineage = np.zeros(k, dtype=np.int8)  # every Treg is CD4
        else:
            p_dn, p_gd, p_cd4 = shares[state]
            if source == "pb":
                p_dn *= _BLOOD_DN_SCALE
            u = rng.random(k)
            rest = (u - p_gd - p_dn) / max(1.0 - p_gd - p_dn, 1e-9)
            lineage = np.where(u < p_gd, _GD, np.where(u < p_gd + p_dn, _DN, (rest >= p_cd4)))
            lineage = lineage.astype(np.int8)
        car = (rng.random(k) < self.plan.car_fraction) if source == "ip" else np.zeros(k, bool)
        dual = rng.random(k) < 0.07
        car_idx = np.flatnonzero(car)
        if len(car_idx):
            cw = w[car_idx]
            car_cum = np.cumsum(cw / cw.sum())
            car_cum[-1] = 1.0
        else:
            car_cum = np.zeros(0)
        return _Pool(cum, lineage, car, dual, np.full(k, -1), car_idx, car_cum)

    def clone_of(self, key: tuple[str, str], k: int) -> int:
        """Index in :attr:`clones` of rank ``k`` of pool ``key``, drawing its chains once."""
        pool = self.pools[key]
        if pool.clone[k] < 0:
            lineage = LINEAGES[int(pool.lineage[k])]
            cd8aa = cd4_like = False
            if lineage == "DN":
                cd4_like = bool(self.rng.random() < DN_CD4_LIKE)
            if lineage == "gd":
                gamma, beta = make_gd_chains(self.rng, self.used)
                alphas: tuple = (gamma,)
                cd8aa = bool(self.rng.random() < 1.0 / 3.0)
            else:
                n_alpha = 2 if pool.dual[k] else 1
                alphas = tuple(make_chain("TRA", self.rng, self.used) for _ in range(n_alpha))
                beta = make_chain("TRB", self.rng, self.used)
            self.clones.append(
                Clone(
                    gid=f"{self.plan.patient}_{len(self.clones) + 1}",
                    patient=self.plan.patient,
                    state=key[1],
                    lineage=lineage,
                    car=bool(pool.car[k]),
                    source=key[0],
                    alphas=alphas,
                    beta=beta,
                    cd8aa=cd8aa,
                    cd4_like=cd4_like,
                )
            )
            pool.clone[k] = len(self.clones) - 1
        return int(pool.clone[k])


def lineage_shares(plan: PatientPlan) -> dict[str, tuple[float, float, float]]:
    """Per non-Treg pool state: the DN share, the gamma-delta share and the CD4 share of the rest.

    A clone's lineage is drawn with these probabilities in the pool of its dominant state.
    DN and gamma-delta clones are enriched in effector-memory and effector pools
    (``_DN_ENRICHMENT``, ``_GD_ENRICHMENT``), scaled so that their product cells make up
    the patient's ``dn_fraction`` and ``gd_fraction``. ``cd4_fraction`` is the CD4 share of
    the single-positive (CD4 + CD8) cells, Tregs included, so it sets the CD4:CD8 ratio.
    """
    states = [s for s in POOL_STATES if s != "treg"]
    treg = plan.props_ip["treg"]
    q = np.array([plan.props_ip[s] for s in states])
    q = q / q.sum() * (1.0 - treg)  # cells per clone-pool state (proliferating ones spread)
    out = {}
    shares: dict[str, np.ndarray] = {}
    for name, frac, enrich in (("dn", plan.dn_fraction, _DN_ENRICHMENT),
                               ("gd", plan.gd_fraction, _GD_ENRICHMENT)):
        e = np.array([enrich[s] for s in states])
        shares[name] = frac * e / float(q @ e)
    total = shares["dn"] + shares["gd"]
    scale = np.minimum(1.0, _MAX_UNCONVENTIONAL / np.maximum(total, 1e-12))
    rest = 1.0 - treg - plan.dn_fraction - plan.gd_fraction
    p_cd4 = clip((plan.cd4_fraction * (treg + rest) - treg) / max(rest, 1e-9), 0.05, 0.95)
    for i, s in enumerate(states):
        out[s] = (float(shares["dn"][i] * scale[i]), float(shares["gd"][i] * scale[i]), p_cd4)
    return out


def timepoint_props(plan: PatientPlan, timepoint: str) -> np.ndarray:
    """State proportions (``STATES`` order) of a patient's library at ``timepoint``."""
    ip = np.array([plan.props_ip[s] for s in STATES])
    if timepoint == "IP":
        return ip
    # blood after infusion: D14 effector/proliferative, M3 memory/effector-memory
    profiles = {
        "D14": np.array([0.06, 0.08, 0.2, 0.34, 0.14, 0.04, 0.14]),
        "M3": np.array([0.14, 0.2, 0.28, 0.18, 0.12, 0.05, 0.03]),
    }
    prof = profiles.get(timepoint, profiles["M3"])
    out = 0.5 * ip + 0.5 * prof
    return out / out.sum()
