"""Per-patient clone pools: who the cells of a patient's libraries are drawn from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._utils import clip
from .genes import STATES
from .params import SimParams
from .plan import PatientPlan
from .tcr import Clone, make_chain

POOL_STATES: tuple[str, ...] = tuple(s for s in STATES if s != "proliferating")


@dataclass
class _Pool:
    cum: np.ndarray
    is_cd4: np.ndarray
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
        cd4_other = clip(
            (plan.cd4_fraction - plan.props_ip["treg"]) / (1 - plan.props_ip["treg"]), 0.05, 0.95
        )
        for source in ("ip", "pb"):
            for state in POOL_STATES:
                self.pools[(source, state)] = self._new_pool(source, state, cd4_other)
        # persistent clones: the CAR+ product clones with the largest expected share
        cands = []
        for state in POOL_STATES:
            if state == "treg":
                continue
            pool = self.pools[("ip", state)]
            w = np.diff(np.concatenate([[0.0], pool.cum])) * plan.props_ip[state]
            for k in np.flatnonzero(pool.car[:50]):
                cands.append((-w[k], state, int(k)))
        cands.sort()
        self.persistent: list[int] = []
        for _, state, k in cands[: plan.n_persistent]:
            ci = self.clone_of(("ip", state), k)
            self.clones[ci].persistent = True
            self.persistent.append(ci)

    def _new_pool(self, source: str, state: str, cd4_other: float) -> _Pool:
        k = self.params.clone_pool_size
        rng = self.rng
        w = (np.arange(k) + 1.0) ** -self.plan.alpha
        cum = np.cumsum(w / w.sum())
        cum[-1] = 1.0
        is_cd4 = np.ones(k, bool) if state == "treg" else rng.random(k) < cd4_other
        car = (rng.random(k) < self.plan.car_fraction) if source == "ip" else np.zeros(k, bool)
        dual = rng.random(k) < 0.07
        car_idx = np.flatnonzero(car)
        if len(car_idx):
            cw = w[car_idx]
            car_cum = np.cumsum(cw / cw.sum())
            car_cum[-1] = 1.0
        else:
            car_cum = np.zeros(0)
        return _Pool(cum, is_cd4, car, dual, np.full(k, -1), car_idx, car_cum)

    def clone_of(self, key: tuple[str, str], k: int) -> int:
        """Index in :attr:`clones` of rank ``k`` of pool ``key``, drawing its chains once."""
        pool = self.pools[key]
        if pool.clone[k] < 0:
            n_alpha = 2 if pool.dual[k] else 1
            alphas = tuple(make_chain("TRA", self.rng, self.used) for _ in range(n_alpha))
            beta = make_chain("TRB", self.rng, self.used)
            self.clones.append(
                Clone(
                    gid=f"{self.plan.patient}_{len(self.clones) + 1}",
                    patient=self.plan.patient,
                    state=key[1],
                    is_cd4=bool(pool.is_cd4[k]),
                    car=bool(pool.car[k]),
                    source=key[0],
                    alphas=alphas,
                    beta=beta,
                )
            )
            pool.clone[k] = len(self.clones) - 1
        return int(pool.clone[k])


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
