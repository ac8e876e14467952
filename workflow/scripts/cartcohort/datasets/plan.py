"""The cohort plan: planted per-patient parameters, the libraries and the clinical table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._utils import clip
from .genes import STATES
from .kinetics import N_EXPANDED
from .params import TIMEPOINTS_LATER, SimParams


@dataclass(frozen=True)
class Effect:
    """One planted patient-level quantity: its mean per response group and between-patient SD.

    ``kind`` is ``planted`` (the groups differ) or ``null`` (drawn from one distribution).
    """

    quantity: str
    kind: str
    responder_mean: float
    nonresponder_mean: float
    between_patient_sd: float
    description: str

    @property
    def standardized(self) -> float:
        """Difference of the group means in between-patient SDs (Cohen's d)."""
        return (self.responder_mean - self.nonresponder_mean) / self.between_patient_sd


# Sizes chosen so that a two-sided Mann-Whitney test at alpha 0.05 with 10 versus 10
# patients has about 80 % power on the planted values (d about 1.5; see stats.power).
EFFECTS: tuple[Effect, ...] = (
    Effect("memory_like_fraction", "planted", 0.40, 0.25, 0.10,
           "naive/Tscm + Tcm share of product cells"),
    Effect("exhausted_fraction", "planted", 0.12, 0.23, 0.075, "exhausted share of product cells"),
    Effect("clonal_expansion_alpha", "planted", 0.80, 1.08, 0.19,
           "Zipf exponent of product clone sizes (higher: more expanded, less diverse)"),
    Effect("cd4_fraction", "null", 0.55, 0.55, 0.12, "CD4 share (hence the CD4:CD8 ratio)"),
    Effect("car_fraction", "null", 0.50, 0.50, 0.115, "CAR+ share of product clones"),
    Effect("treg_fraction", "null", 0.05, 0.05, 0.02, "Treg share of product cells"),
    Effect("proliferating_fraction", "null", 0.06, 0.06, 0.025,
           "proliferating share of product cells"),
)
EFFECT: dict[str, Effect] = {e.quantity: e for e in EFFECTS}


def _draw(effect: str, responder: bool, rng: np.random.Generator, lo: float, hi: float) -> float:
    e = EFFECT[effect]
    mean = e.responder_mean if responder else e.nonresponder_mean
    return clip(rng.normal(mean, e.between_patient_sd), lo, hi)


@dataclass(frozen=True)
class PatientPlan:
    """Planted per-patient parameters."""

    patient: str
    index: int
    response: str
    responder: bool
    longitudinal: bool
    batch: str
    props_ip: dict[str, float]
    alpha: float
    cd4_fraction: float
    car_fraction: float
    n_persistent: int
    dn_fraction: float = 0.0
    gd_fraction: float = 0.0


@dataclass(frozen=True)
class LibraryPlan:
    """One library: its sheet row and file formats."""

    index: int
    sample: str
    patient: str
    timepoint: str
    timepoint_day: int
    compartment: str
    batch: str
    sort: str
    n_cells: int
    gex_format: str
    vdj_format: str

    @property
    def gex_relpath(self) -> str:
        """Path of the GEX input relative to the cohort folder."""
        name = "filtered_feature_bc_matrix" + (".h5" if self.gex_format == "h5" else "")
        return f"{self.sample}/{name}"

    @property
    def vdj_relpath(self) -> str:
        """Path of the TCR input relative to the cohort folder."""
        name = "airr_rearrangement.tsv" if self.vdj_format == "airr" else (
            "filtered_contig_annotations.csv"
        )
        return f"{self.sample}/{name}"


def plan_patients(params: SimParams) -> list[PatientPlan]:
    """Planted parameters of every patient: response, batch, state mix, clonality, CAR share."""
    rng = np.random.default_rng([params.seed, 0])
    n = params.n_patients
    n_resp = n // 2
    order = rng.permutation(n)
    responder = np.zeros(n, dtype=bool)
    responder[order[:n_resp]] = True
    longitudinal = np.zeros(n, dtype=bool)
    batch = np.empty(n, dtype=object)
    for group in (True, False):
        members = np.flatnonzero(responder == group)
        members = members[rng.permutation(len(members))]
        n_long = int(round(params.frac_longitudinal * len(members)))
        longitudinal[members[:n_long]] = True
        start = int(rng.integers(0, params.n_batches))
        for k, m in enumerate(members):
            batch[m] = f"b{(start + k) % params.n_batches + 1}"
    dn, gd = _lineage_fractions(params)
    plans = []
    for i in range(n):
        r = bool(responder[i])
        mem = _draw("memory_like_fraction", r, rng, 0.05, 0.75)
        exh = _draw("exhausted_fraction", r, rng, 0.02, 0.5)
        treg = _draw("treg_fraction", r, rng, 0.01, 0.12)
        prolif = _draw("proliferating_fraction", r, rng, 0.01, 0.15)
        rest = max(1.0 - mem - exh - treg - prolif, 0.1)
        tem_share = rng.beta(5, 5)
        naive_share = rng.beta(6, 6)
        props = np.array(
            [
                mem * naive_share,
                mem * (1 - naive_share),
                rest * tem_share,
                rest * (1 - tem_share),
                exh,
                treg,
                prolif,
            ]
        )
        props /= props.sum()
        alpha = _draw("clonal_expansion_alpha", r, rng, 0.3, 1.6)
        cd4 = _draw("cd4_fraction", r, rng, 0.2, 0.85)
        car = _draw("car_fraction", r, rng, 0.25, 0.75)
        lo, hi = N_EXPANDED[r]
        n_pers = min(int(rng.integers(lo, hi + 1)), max(1, params.min_cells // 8))
        response = "CR" if r else ("PD" if rng.random() < 0.6 else "SD")
        plans.append(
            PatientPlan(
                patient=f"P{i + 1:02d}",
                index=i,
                response=response,
                responder=r,
                longitudinal=bool(longitudinal[i]),
                batch=str(batch[i]),
                props_ip=dict(zip(STATES, (float(x) for x in props), strict=True)),
                alpha=alpha,
                cd4_fraction=cd4,
                car_fraction=car,
                n_persistent=n_pers,
                dn_fraction=float(dn[i]),
                gd_fraction=float(gd[i]),
            )
        )
    return plans


def _lineage_fractions(params: SimParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient DN and gamma-delta shares of product cells (own stream ``[seed, 7]``).

    Beta draws around ``frac_dn`` (concentration 40, limited to 3-35 %) and ``frac_gd``
    (concentration 25, limited to 0.5-20 %; limits widened to include the mean); a mean
    of 0 gives 0 for every patient.
    """
    rng = np.random.default_rng([params.seed, 7])
    out = []
    for mean, conc, lo, hi in ((params.frac_dn, 40.0, 0.03, 0.35),
                               (params.frac_gd, 25.0, 0.005, 0.2)):
        draw = rng.beta(max(mean, 1e-9) * conc, max(1.0 - mean, 1e-9) * conc,
                        size=params.n_patients)
        limited = np.clip(draw, min(lo, mean), max(hi, mean))
        out.append(limited if mean > 0 else np.zeros(params.n_patients))
    return out[0], out[1]


def plan_libraries(params: SimParams, patients: list[PatientPlan]) -> list[LibraryPlan]:
    """The libraries of every patient (product, then the follow-up blood samples)."""
    rng = np.random.default_rng([params.seed, 1])
    libs: list[LibraryPlan] = []
    for p in patients:
        tps = [("IP", 0)] + (list(TIMEPOINTS_LATER) if p.longitudinal else [])
        for k, (tp, day) in enumerate(tps):
            i = len(libs)
            if tp == "IP":
                batch, compartment, sort = p.batch, "product", "CD3+"
            else:
                b = int(p.batch[1:])
                batch = f"b{b % params.n_batches + 1}"
                compartment = "PB"
                sort = "CAR+" if (tp == "M3" and p.index % 2 == 0) else "CD3+"
            libs.append(
                LibraryPlan(
                    index=i,
                    sample=f"{p.patient}_{tp}",
                    patient=p.patient,
                    timepoint=tp,
                    timepoint_day=day,
                    compartment=compartment,
                    batch=batch,
                    sort=sort,
                    n_cells=int(rng.integers(params.min_cells, params.max_cells + 1)),
                    gex_format=(
                        params.gex_format
                        if params.gex_format != "mixed"
                        else ("h5" if i % 2 == 0 else "mtx")
                    ),
                    vdj_format="airr" if i % params.airr_every == 3 % params.airr_every else "csv",
                )
            )
    return libs


def clinical_table(params: SimParams, patients: list[PatientPlan]) -> pd.DataFrame:
    """The clinical table: response, demographics, product and progression-free survival."""
    rng = np.random.default_rng([params.seed, 2])
    rows = []
    counters = {True: 0, False: 0}
    for p in patients:
        k = counters[p.responder]
        counters[p.responder] += 1
        product = ("axi-cel", "tisa-cel")[k % 2]
        if p.responder:
            pfs = int(rng.integers(300, 900))
            event = int(pfs < 730 and rng.random() < 0.2)
            pfs = pfs if event else min(pfs, 730)
        else:
            pfs = int(rng.integers(25, 200))
            event = 1
        rows.append(
            {
                "patient": p.patient,
                "response": p.response,
                "age": int(clip(round(rng.normal(58, 10)), 22, 80)),
                "sex": ("F", "M")[int(rng.random() < 0.6)],
                "product": product,
                "costim": "CD28" if product == "axi-cel" else "41BB",
                "donor_source": "allogeneic" if rng.random() < 0.1 else "autologous",
                "prior_lines": int(rng.integers(2, 6)),
                "pfs_days": pfs,
                "pfs_event": event,
            }
        )
    return pd.DataFrame(rows)
