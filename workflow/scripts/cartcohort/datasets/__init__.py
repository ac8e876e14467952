"""Deterministic demo CAR-T single-cell cohort (scRNA-seq + scTCR-seq) and its truth.

The simulated cohort mimics human 10x Genomics 5' GEX + V(D)J data of CAR-T
infusion products (timepoint ``IP``) and, for about half of the patients,
peripheral-blood follow-up samples (``D14``, ``M3``). Everything is derived from
one integer seed: two runs with the same arguments write byte-identical files.

Planted biology (what downstream steps should recover)
------------------------------------------------------
* Seven T-cell states (``STATES``), each a baseline plus a strong marker program
  (3-8x on 6-10 genes, a few genes down), CD4/CD8 lineage, a CAR transgene
  feature ``CAR`` whose status is a property of the clone.
* Responders (response ``CR``) have products with more memory-like cells
  (``naive_tscm`` + ``tcm``), fewer ``exhausted`` cells and a more diverse
  (less expanded) repertoire than non-responders (``PD``/``SD``).
* Null control: the CD4 fraction (hence the CD4:CD8 ratio) is drawn from the
  same distribution in both response groups.
* Persistence: a handful of expanded CAR+ product clones per patient appear
  with >= 2 clean cells (singlet, good quality, paired TCR) in the product and
  in every follow-up library of that patient.
* QC truth: ~5 % low-quality cells (few counts, 25-60 % mito) and ~5 %
  doublets (sum of two cells of the library, TCR contigs = union of both).
* Batch effect: per batch, gene-wise log-normal factors on ~20 % of the
  non-marker genes (state, lineage, TCR and mito genes are left alone).

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
from .params import GexFormat, SimParams
from .plan import LibraryPlan, PatientPlan
from .tcr import AIRR_COLUMNS, TENX_VDJ_COLUMNS, Chain, Clone
from .truth import evaluate_against_truth
from .write import write_10x_h5, write_10x_mtx, write_cohort, write_demo_cohort

__all__ = [
    "AIRR_COLUMNS",
    "CAR_FEATURE",
    "CODON_TABLE",
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
    "evaluate_against_truth",
    "gene_id",
    "gene_panel",
    "gex_symbol",
    "simulate_cohort",
    "translate",
    "write_10x_h5",
    "write_10x_mtx",
    "write_cohort",
    "write_demo_cohort",
]
