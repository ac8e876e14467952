"""Deterministic demo CAR-T single-cell cohort (scRNA-seq + scTCR-seq) and its truth.

The simulated cohort mimics human 10x Genomics 5' GEX + V(D)J data of CAR-T
infusion products (timepoint ``IP``) and, for about half of the patients,
peripheral-blood follow-up samples (``D14``, ``M3``). Everything is derived from
one integer seed: two runs with the same arguments write byte-identical files.

Real shape (fitted to real 10x data; ``data/fit.json`` records each value and its source)
---------------------------------------------------------------------------------------
* About 30,800 features in the Cell Ranger layout: the real symbols of 150 real human
  T cells (scirpy's ``wu2020_200``), a few symbols under two ids as in GRCh38, the CAR.
* Gene shares drawn from a Poisson-lognormal fit, NB dispersion from the fitted trend,
  real within-library spread of library sizes: ~1,500 detected genes per cell.
* Marker dropout, ambient RNA (CAR reads in CAR- cells), CAR detection set by chemistry
  with the CAR UMI distribution fitted to real sorted CAR+ cells.

Planted biology (what downstream steps should recover)
------------------------------------------------------
* Seven T-cell states (``STATES``) on a continuum: each cell blends its state's program
  with a neighbour's (truth keeps ``state_weight`` and ``state_secondary``); lineage
  (CD4, CD8, double-negative ``DN``, gamma-delta ``gd``) and CAR status are properties
  of the clone. DN alpha-beta cells (~15 % of product cells) and gamma-delta cells (~6 %;
  TRG/TRD contigs only with ``gd_contigs=True``) lean to effector-memory/effector states.
* Responders' products have more memory-like cells, fewer exhausted cells and a less
  expanded repertoire, each about 1.5 between-patient SDs (``plan.EFFECTS``; designed
  power about 85 % at 10 versus 10, see :mod:`.power`); four null quantities (CD4 share,
  CAR share, Treg share, proliferating share) do not differ.
* Persistence: a handful of expanded CAR+ product clones per patient appear
  with >= 2 clean cells (singlet, good quality, paired TCR) in the product and
  in every follow-up library of that patient.
* QC truth: ~5 % low-quality cells (few counts, 25-60 % mito) and ~5 %
  doublets (sum of two cells of the library, TCR contigs = union of both).
* Batch and patient effects: gene-wise log-normal factors on background genes.

Two ways to use it, with the same files for the same arguments:
:func:`simulate_cohort` returns a :class:`Cohort` held in memory and
:func:`write_cohort` writes it; :func:`write_demo_cohort` generates and writes one
library at a time (constant memory, for large benchmark cohorts).
:func:`evaluate_against_truth` scores the workflow's QC calls against the planted truth.
"""

from __future__ import annotations

from ._utils import CODON_TABLE, gene_id, gex_symbol, translate
from .cohort import Cohort, simulate_cohort
from .genes import CAR_FEATURE, MEMORY_LIKE, MITO_GENES, STATES
from .library import TRUTH_CELL_COLUMNS, Library
from .panel import GenePanel, gene_panel
from .params import Chemistry, GexFormat, SimParams
from .plan import EFFECTS, Effect
from .power import design_power, truth_effects
from .plan import LibraryPlan, PatientPlan
from .tcr import AIRR_COLUMNS, TENX_VDJ_COLUMNS, Chain, Clone
from .truth import evaluate_against_truth
from .write import write_10x_h5, write_10x_mtx, write_cohort, write_demo_cohort

__all__ = [
    "AIRR_COLUMNS",
    "CAR_FEATURE",
    "CODON_TABLE",
    "Chemistry",
    "EFFECTS",
    "Effect",
    "Chain",
    "Clone",
    "Cohort",
    "GenePanel",
    "GexFormat",
    "Library",
    "LibraryPlan",
    "MEMORY_LIKE",
    "MITO_GENES",
    "PatientPlan",
    "STATES",
    "SimParams",
    "TENX_VDJ_COLUMNS",
    "TRUTH_CELL_COLUMNS",
    "design_power",
    "evaluate_against_truth",
    "gene_id",
    "gene_panel",
    "gex_symbol",
    "simulate_cohort",
    "translate",
    "truth_effects",
    "write_10x_h5",
    "write_10x_mtx",
    "write_cohort",
    "write_demo_cohort",
]
