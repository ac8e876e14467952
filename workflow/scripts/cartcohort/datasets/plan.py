"""The cohort plan: planted per-patient parameters, the libraries and the clinical table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._utils import clip
from .genes import STATES
from .params import TIMEPOINTS_LATER, SimParams

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
    plans = []
    for i in range(n):
        r = bool(responder[i])
        mem = clip(rng.normal(0.45 if r else 0.25, 0.06), 0.08, 0.7)
        exh = clip(rng.normal(0.10 if r else 0.30, 0.04 if r else 0.06), 0.02, 0.5)
        treg = clip(rng.normal(0.05, 0.015), 0.01, 0.1)
        prolif = clip(rng.normal(0.06, 0.02), 0.01, 0.12)
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
        alpha = clip(rng.normal(0.7 if r else 1.15, 0.08), 0.3, 1.6)
        cd4 = clip(rng.normal(0.55, 0.1), 0.25, 0.8)  # null control: same in both groups
        car = float(rng.uniform(0.3, 0.7))
        n_pers = min(int(rng.integers(5, 13)), max(1, params.min_cells // 8))
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
            )
        )
    return plans


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
