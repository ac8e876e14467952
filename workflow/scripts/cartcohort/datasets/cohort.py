"""A whole simulated cohort: its plan, libraries one at a time, sheets and truth tables."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .genes import MEMORY_LIKE, STATES
from .kinetics import expected_frequency, target_fc
from .library import Library, simulate_library
from .panel import gene_panel
from .params import SimParams, make_params
from .patients import PatientSim
from .plan import LibraryPlan, clinical_table, plan_libraries, plan_patients
from .tcr import Chain, Clone

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
    truth_kinetics
        Planted clone kinetics (:meth:`CohortGenerator.truth_kinetics`).
    """

    params: SimParams
    libraries: list[Library]
    samples: pd.DataFrame
    clinical: pd.DataFrame
    truth_cells: pd.DataFrame
    truth_patients: pd.DataFrame
    truth_clones: pd.DataFrame
    truth_kinetics: pd.DataFrame


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
        self.kinetics_rows: list[dict] = []

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
            self.kinetics_rows.extend(_kinetics_truth(psim, by_patient[pplan.patient]))
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
            n_sp = max(int(ip["cd4_cd8"].isin(["CD4", "CD8"]).sum()), 1)
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
                "ip_cd4_observed": (ip["cd4_cd8"] == "CD4").sum() / n_sp,
            }
            for s in STATES:
                row[f"prop_{s}"] = p.props_ip[s]
            row.update(
                dn_fraction=p.dn_fraction,
                gd_fraction=p.gd_fraction,
                ip_dn_observed=(ip["cd4_cd8"] == "DN").sum() / n_ip,
                ip_gd_observed=(ip["cd4_cd8"] == "gd").sum() / n_ip,
            )
            rows.append(row)
        return pd.DataFrame(rows)

    def truth_kinetics(self) -> pd.DataFrame:
        """Planted clone kinetics (call after :meth:`libraries` ran): one row per planted
        clone x unsorted blood library, with the planted and the exact expected fold change
        of its frequency among alpha-beta TCR cells (:mod:`~cartcohort.datasets.kinetics`).
        """
        return pd.DataFrame(self.kinetics_rows, columns=list(TRUTH_KINETICS_COLUMNS))

    def truth_clones(self) -> pd.DataFrame:
        """Every clone drawn (call after :meth:`libraries` ran).

        Alpha-beta clones fill the ``tra_*``/``trb_*`` columns, gamma-delta clones the
        ``trg_*``/``trd_*`` columns (the others are empty).
        """
        rows = []
        for c in self.clones:
            ab = () if c.is_gd else c.alphas
            gd = c.is_gd
            rows.append(
                {
                    "clone": c.gid,
                    "patient": c.patient,
                    "dominant_state": c.state,
                    "cd4_cd8": c.lineage,
                    "car_positive": c.car,
                    "source": "product" if c.source == "ip" else "blood",
                    "persistent": c.persistent,
                    "n_alpha": len(ab),
                    **_chain_fields("tra", ab[0] if ab else None),
                    "tra2_cdr3_nt": ab[1].cdr3_nt if len(ab) > 1 else "",
                    **_chain_fields("trb", None if gd else c.beta),
                    "cd8aa": c.cd8aa,
                    **_chain_fields("trg", c.alphas[0] if gd else None, with_c=True),
                    **_chain_fields("trd", c.beta if gd else None),
                }
            )
        return pd.DataFrame(rows)


TRUTH_KINETICS_COLUMNS: tuple[str, ...] = (
    "patient", "responder", "clone", "sample", "timepoint", "timepoint_day", "planted",
    "planted_fc", "true_freq_product", "true_freq", "true_fc",
)


def _kinetics_truth(psim: PatientSim, libs: list[LibraryPlan]) -> list[dict]:
    """Truth rows of one patient's planted clones in each unsorted blood library."""
    prod = [lp for lp in libs if lp.timepoint == "IP"]
    if not prod:
        return []
    f0 = expected_frequency(psim, "IP", 0, prod[0].n_cells)
    rows = []
    for lp in libs:
        if lp.timepoint == "IP" or lp.sort != "CD3+":
            continue
        f1 = expected_frequency(psim, lp.timepoint, lp.timepoint_day, lp.n_cells)
        for p in psim.planted:
            rows.append({
                "patient": lp.patient, "responder": psim.plan.responder,
                "clone": psim.clones[p.clone].gid, "sample": lp.sample,
                "timepoint": lp.timepoint, "timepoint_day": lp.timepoint_day,
                "planted": "expanded" if p.expanded else "null",
                "planted_fc": target_fc(p, day=lp.timepoint_day,
                                        responder=psim.plan.responder),
                "true_freq_product": f0[p.clone], "true_freq": f1[p.clone],
                "true_fc": f1[p.clone] / f0[p.clone],
            })
    return rows


def _chain_fields(prefix: str, chain: Chain | None, *, with_c: bool = False) -> dict[str, str]:
    """``<prefix>_v``, ``_j`` (``_c``), ``_cdr3``, ``_cdr3_nt`` of a clone's chain ("" if none)."""
    parts = ("v", "j", "c", "cdr3", "cdr3_nt") if with_c else ("v", "j", "cdr3", "cdr3_nt")
    return {f"{prefix}_{k}": getattr(chain, k) if chain is not None else "" for k in parts}


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
        truth_kinetics=gen.truth_kinetics(),
    )
