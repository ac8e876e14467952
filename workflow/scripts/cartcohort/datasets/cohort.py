"""A whole simulated cohort: its plan, libraries one at a time, sheets and truth tables."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .genes import MEMORY_LIKE, STATES
from .library import Library, simulate_library
from .panel import gene_panel
from .params import SimParams, make_params
from .patients import PatientSim
from .plan import LibraryPlan, clinical_table, plan_libraries, plan_patients
from .tcr import Clone

log = logging.getLogger(__name__)

@dataclass
class Cohort:
    """A simulated cohort held in memory.

    Attributes
    ----------
    params
        The settings it was simulated with.
    libraries
        One :class:`Library` per sample, in sheet order.
    samples
        Sample sheet (DESIGN.md columns), paths relative to the cohort folder.
    clinical
        Clinical table.
    truth_cells, truth_patients, truth_clones
        Planted truth per cell, per patient and per clone.
    """

    params: SimParams
    libraries: list[Library]
    samples: pd.DataFrame
    clinical: pd.DataFrame
    truth_cells: pd.DataFrame
    truth_patients: pd.DataFrame
    truth_clones: pd.DataFrame


class CohortGenerator:
    """Plans a cohort and yields its libraries one at a time."""

    def __init__(self, params: SimParams):
        params.validate()
        self.params = params
        self.panel = gene_panel(params.n_background_genes)
        self.patients = plan_patients(params)
        self.library_plans = plan_libraries(params, self.patients)
        self.clinical = clinical_table(params, self.patients)
        rng = np.random.default_rng([params.seed, 5])
        g_n = self.panel.n_genes
        eligible = np.flatnonzero(self.panel.batchable)
        n_aff = min(int(round(params.batch_gene_fraction * g_n)), len(eligible))
        affected = np.sort(rng.choice(eligible, size=n_aff, replace=False))
        self.batch_logfactor: dict[str, np.ndarray] = {}
        for b in range(params.n_batches):
            f = np.zeros(g_n)
            f[affected] = rng.normal(0.0, params.batch_sd, size=n_aff)
            self.batch_logfactor[f"b{b + 1}"] = f
        self.patient_logfactor = {
            p.patient: self._patient_factor(p.index, eligible) for p in self.patients
        }
        self.clones: list[Clone] = []
        self.persistent_counts: dict[str, int] = {}

    def _patient_factor(self, index: int, eligible: np.ndarray) -> np.ndarray:
        """Per-gene log factor of one patient (genetic and clinical background)."""
        rng = np.random.default_rng([self.params.seed, 6, index])
        n_aff = int(round(self.params.patient_gene_fraction * len(eligible)))
        f = np.zeros(self.panel.n_genes)
        f[rng.choice(eligible, size=n_aff, replace=False)] = rng.normal(
            0.0, self.params.patient_sd, size=n_aff
        )
        return f

    def samples(self) -> pd.DataFrame:
        """The sample sheet (paths relative to the cohort folder)."""
        return pd.DataFrame(
            [
                {
                    "sample": lp.sample,
                    "patient": lp.patient,
                    "timepoint": lp.timepoint,
                    "timepoint_day": lp.timepoint_day,
                    "compartment": lp.compartment,
                    "batch": lp.batch,
                    "sort": lp.sort,
                    "gex": lp.gex_relpath,
                    "vdj": lp.vdj_relpath,
                }
                for lp in self.library_plans
            ]
        )

    def libraries(self) -> Iterator[Library]:
        """Simulate the libraries patient by patient, yielding each one when done."""
        used: set[str] = set()
        by_patient: dict[str, list[LibraryPlan]] = {}
        for lp in self.library_plans:
            by_patient.setdefault(lp.patient, []).append(lp)
        for pplan in self.patients:
            psim = PatientSim(pplan, self.params, used)
            self.persistent_counts[pplan.patient] = len(psim.persistent)
            for lp in by_patient[pplan.patient]:
                factor = self.batch_logfactor[lp.batch] + self.patient_logfactor[lp.patient]
                lib = simulate_library(lp, psim, self.panel, factor, self.params)
                log.info(
                    "simulated %s: %d cells, %d contigs", lp.sample, lib.counts.shape[0],
                    len(lib.vdj),
                )
                yield lib
            self.clones.extend(psim.clones)

    def truth_patients(self, truth_cells: pd.DataFrame) -> pd.DataFrame:
        """Planted and observed per-patient truth (call after :meth:`libraries` ran)."""
        rows = []
        for p in self.patients:
            ip = truth_cells[
                (truth_cells["patient"] == p.patient)
                & (truth_cells["timepoint"] == "IP")
                & ~truth_cells["is_doublet"]
                & ~truth_cells["is_low_quality"]
            ]
            n_ip = max(len(ip), 1)
            row = {
                "patient": p.patient,
                "response": p.response,
                "responder": p.responder,
                "batch": p.batch,
                "longitudinal": p.longitudinal,
                "memory_like_fraction": sum(p.props_ip[s] for s in MEMORY_LIKE),
                "exhausted_fraction": p.props_ip["exhausted"],
                "clonal_diversity_param": p.alpha,
                "cd4_fraction": p.cd4_fraction,
                "cd4_cd8_ratio": p.cd4_fraction / (1.0 - p.cd4_fraction),
                "null_feature": "cd4_cd8_ratio",
                "car_fraction": p.car_fraction,
                "treg_fraction": p.props_ip["treg"],
                "proliferating_fraction": p.props_ip["proliferating"],
                "n_persistent_clones": self.persistent_counts.get(p.patient, 0),
                "ip_clean_cells": len(ip),
                "ip_memory_like_observed": ip["state"].isin(MEMORY_LIKE).sum() / n_ip,
                "ip_exhausted_observed": (ip["state"] == "exhausted").sum() / n_ip,
                "ip_car_observed": ip["car_positive"].sum() / n_ip,
                "ip_cd4_observed": (ip["cd4_cd8"] == "CD4").sum() / n_ip,
            }
            for s in STATES:
                row[f"prop_{s}"] = p.props_ip[s]
            rows.append(row)
        return pd.DataFrame(rows)

    def truth_clones(self) -> pd.DataFrame:
        """Every clone drawn (call after :meth:`libraries` ran)."""
        rows = []
        for c in self.clones:
            rows.append(
                {
                    "clone": c.gid,
                    "patient": c.patient,
                    "dominant_state": c.state,
                    "cd4_cd8": "CD4" if c.is_cd4 else "CD8",
                    "car_positive": c.car,
                    "source": "product" if c.source == "ip" else "blood",
                    "persistent": c.persistent,
                    "n_alpha": len(c.alphas),
                    "tra_v": c.alphas[0].v,
                    "tra_j": c.alphas[0].j,
                    "tra_cdr3": c.alphas[0].cdr3,
                    "tra_cdr3_nt": c.alphas[0].cdr3_nt,
                    "tra2_cdr3_nt": c.alphas[1].cdr3_nt if len(c.alphas) > 1 else "",
                    "trb_v": c.beta.v,
                    "trb_j": c.beta.j,
                    "trb_cdr3": c.beta.cdr3,
                    "trb_cdr3_nt": c.beta.cdr3_nt,
                }
            )
        return pd.DataFrame(rows)


def simulate_cohort(
    *,
    seed: int,
    n_patients: int = 20,
    min_cells: int = 150,
    max_cells: int = 450,
    frac_longitudinal: float = 0.1,
    **kwargs: object,
) -> Cohort:
    """Simulate a demo cohort in memory.

    Parameters
    ----------
    seed
        Master seed (same seed and settings give the same cohort).
    n_patients, min_cells, max_cells, frac_longitudinal
        See :class:`SimParams`.
    **kwargs
        Any other :class:`SimParams` field (``n_background_genes``, ``chemistry``,
        ``car_detection``, ``doublet_rate``,
        ``median_umis``, ``batch_sd``, ``gex_format``, ...).

    Returns
    -------
    Cohort
        Libraries, sheets and truth tables.
    """
    kwargs.update(
        n_patients=n_patients,
        min_cells=min_cells,
        max_cells=max_cells,
        frac_longitudinal=frac_longitudinal,
    )
    gen = CohortGenerator(make_params(seed, kwargs))
    libs = list(gen.libraries())
    truth_cells = pd.concat([lib.truth for lib in libs], ignore_index=True)
    return Cohort(
        params=gen.params,
        libraries=libs,
        samples=gen.samples(),
        clinical=gen.clinical,
        truth_cells=truth_cells,
        truth_patients=gen.truth_patients(truth_cells),
        truth_clones=gen.truth_clones(),
    )
