"""The simulated cohort's planted effects are found at the designed power; nulls are not.

Over 100 seeds, the planted patient-level values of the simulator's plan are observed
through finite product libraries (cells drawn from each patient's planted state mix,
lineage and CAR share; clone sizes from the planted Zipf exponent), then tested with the
association step's primary test (:func:`cartcohort.stats.mann_whitney`, two-sided).
The Monte Carlo design power of :func:`cartcohort.datasets.power.design_power` is stated
in ``truth_effects.tsv``; the observed rejection rates must match it within sampling error,
and the pooled false-positive rate of the null quantities must stay at or below 5 %.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartcohort.datasets import SimParams
from cartcohort.datasets.plan import EFFECTS, plan_libraries, plan_patients
from cartcohort.datasets.power import design_power, truth_effects
from cartcohort.stats import mann_whitney

N_SEEDS = 300
MEMORY = ("naive_tscm", "tcm")


def _shannon(sizes: np.ndarray) -> float:
    p = sizes[sizes > 0] / sizes.sum()
    return float(-(p * np.log(p)).sum())


def _observed(seed: int) -> pd.DataFrame:
    """Per-patient values seen in the simulated product libraries of one cohort."""
    from cartcohort.datasets import STATES

    params = SimParams(seed=seed, frac_longitudinal=0.0)
    patients = plan_patients(params)
    libs = {lp.patient: lp for lp in plan_libraries(params, patients)}
    rng = np.random.default_rng([seed, 99])
    rows = []
    for p in patients:
        n = libs[p.patient].n_cells
        counts = rng.multinomial(n, [p.props_ip[s] for s in STATES])
        frac = dict(zip(STATES, counts / n, strict=True))
        cd4 = rng.binomial(n, p.cd4_fraction)
        w = (np.arange(params.clone_pool_size) + 1.0) ** -p.alpha
        clones = rng.multinomial(150, w / w.sum())  # rarefied to 150 cells
        rows.append(
            {
                "responder": p.responder,
                "memory_like_fraction": sum(frac[s] for s in MEMORY),
                "exhausted_fraction": frac["exhausted"],
                "clonal_expansion_alpha": -_shannon(clones),  # less diverse = more expanded
                "cd4_fraction": cd4 / n,
                "car_fraction": rng.binomial(n, p.car_fraction) / n,
                "treg_fraction": frac["treg"],
                "proliferating_fraction": frac["proliferating"],
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def rejections() -> pd.DataFrame:
    out = []
    for seed in range(N_SEEDS):
        obs = _observed(seed)
        r = obs["responder"].to_numpy()
        row = {}
        for e in EFFECTS:
            _, p, _ = mann_whitney(obs.loc[r, e.quantity], obs.loc[~r, e.quantity])
            row[e.quantity] = p < 0.05
        out.append(row)
    return pd.DataFrame(out)


def test_truth_effects_states_the_design():
    t = truth_effects(n_responders=10, n_nonresponders=10).set_index("quantity")
    planted = t[t["kind"] == "planted"]
    nulls = t[t["kind"] == "null"]
    assert len(planted) >= 3 and len(nulls) >= 3
    assert planted["design_power"].between(0.70, 0.90).all(), planted["design_power"]
    assert (nulls["difference"] == 0).all()
    assert (nulls["design_power"] <= 0.05).all()


@pytest.mark.parametrize("effect", [e for e in EFFECTS if e.kind == "planted"],
                         ids=lambda e: e.quantity)
def test_planted_effects_found_at_designed_power(rejections, effect):
    designed = design_power(effect, n_responders=10, n_nonresponders=10)
    observed = rejections[effect.quantity].mean()
    se = np.sqrt(designed * (1 - designed) / N_SEEDS)
    # cells and clones are a finite sample of the planted values: the power may only drop
    # by sampling noise on top of the Monte Carlo error of 100 cohorts
    assert observed >= designed - 0.08 - 2 * se, (effect.quantity, observed, designed)
    assert observed <= designed + 2 * se + 0.02, (effect.quantity, observed, designed)


def test_nulls_rejected_at_most_five_percent(rejections):
    nulls = [e.quantity for e in EFFECTS if e.kind == "null"]
    rate = rejections[nulls].to_numpy().mean()
    assert rate <= 0.05, rate
    assert (rejections[nulls].mean() <= 0.08).all(), rejections[nulls].mean()
