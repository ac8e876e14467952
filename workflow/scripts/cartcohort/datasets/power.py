"""The design's power: how often a patient-level test finds each planted effect.

The simulator plants each effect as a difference of group means with a between-patient
SD (:data:`.plan.EFFECTS`). :func:`design_power` estimates, by Monte Carlo, the power of a
two-sided Mann-Whitney U test (the association step's primary test) at the planted sizes;
:func:`truth_effects` writes it beside every planted and null quantity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .plan import EFFECTS, Effect


def design_power(
    effect: Effect,
    *,
    n_responders: int,
    n_nonresponders: int,
    alpha: float = 0.05,
    n_sim: int = 4000,
    seed: int = 0,
) -> float:
    """Monte Carlo power of a two-sided Mann-Whitney U test on the planted patient values.

    Parameters
    ----------
    effect
        The planted quantity (group means and between-patient SD; normal draws).
    n_responders, n_nonresponders
        Patients per group.
    alpha
        Two-sided significance level.
    n_sim
        Simulated trials.
    seed
        Seed of the trials.

    Returns
    -------
    float
        Share of trials with ``p < alpha``; for a null quantity, the false-positive rate.
    """
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(seed)
    x = rng.normal(effect.responder_mean, effect.between_patient_sd, (n_sim, n_responders))
    y = rng.normal(effect.nonresponder_mean, effect.between_patient_sd, (n_sim, n_nonresponders))
    p = mannwhitneyu(x, y, axis=1, alternative="two-sided").pvalue
    return float((p < alpha).mean())


def truth_effects(*, n_responders: int, n_nonresponders: int) -> pd.DataFrame:
    """Every planted and null patient-level quantity with its designed power.

    Returns
    -------
    pandas.DataFrame
        ``quantity``, ``kind``, ``responder_mean``, ``nonresponder_mean``, ``difference``,
        ``between_patient_sd``, ``standardized_difference``, ``design_power``
        (Mann-Whitney, two-sided, alpha 0.05; for nulls the expected false-positive rate),
        ``description``.
    """
    rows = []
    for e in EFFECTS:
        rows.append(
            {
                "quantity": e.quantity,
                "kind": e.kind,
                "responder_mean": e.responder_mean,
                "nonresponder_mean": e.nonresponder_mean,
                "difference": round(e.responder_mean - e.nonresponder_mean, 4),
                "between_patient_sd": e.between_patient_sd,
                "standardized_difference": round(e.standardized, 3),
                "design_power": round(
                    design_power(e, n_responders=n_responders, n_nonresponders=n_nonresponders),
                    3,
                ),
                "description": e.description,
            }
        )
    return pd.DataFrame(rows)
