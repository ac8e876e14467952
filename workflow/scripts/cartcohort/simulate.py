"""Deterministic simulator of a demo CAR-T single-cell cohort (scRNA-seq + scTCR-seq).

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

Two ways to use it:

* :func:`simulate_cohort` returns a :class:`Cohort` held in memory and
  :func:`write_cohort` writes it;
* :func:`write_demo_cohort` generates and writes one library at a time
  (constant memory, for large benchmark cohorts).

Both give the same files for the same arguments.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import vocab
from .errors import CartCohortError
from .tables import write_table

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Vocabulary and gene panel
# --------------------------------------------------------------------------------------

STATES: tuple[str, ...] = vocab.STATES
MEMORY_LIKE: tuple[str, ...] = vocab.MEMORY_LIKE

STATE_UP: dict[str, tuple[str, ...]] = {
    "naive_tscm": ("CCR7", "SELL", "TCF7", "LEF1", "IL7R", "CD27", "CD28", "FAS", "CXCR3", "IL2RB"),
    "tcm": ("CCR7", "SELL", "IL7R", "CD27", "CD28", "S100A4", "ANXA1", "LTB", "AQP3"),
    "tem": ("GZMK", "CCL5", "CCL4", "KLRB1", "CXCR4", "EOMES", "CD44"),
    "teff": ("GZMB", "PRF1", "GNLY", "NKG7", "KLRG1", "CX3CR1", "FGFBP2", "GZMH"),
    "exhausted": ("PDCD1", "HAVCR2", "LAG3", "TIGIT", "CTLA4", "TOX", "ENTPD1", "LAYN", "CXCL13"),
    "treg": ("FOXP3", "IL2RA", "IKZF2", "CTLA4", "TNFRSF18", "TNFRSF4"),
    "proliferating": ("MKI67", "TOP2A", "TYMS", "STMN1", "TUBB", "CDK1", "PCNA"),
}
STATE_DOWN: dict[str, tuple[str, ...]] = {
    "naive_tscm": ("GZMB", "PRF1", "GNLY", "NKG7", "GZMK", "CCL5", "PDCD1"),
    "tcm": ("GZMB", "PRF1", "GNLY", "FGFBP2", "PDCD1"),
    "tem": ("CCR7", "LEF1", "TCF7"),
    "teff": ("CCR7", "SELL", "TCF7", "LEF1", "IL7R", "CD27", "CD28"),
    "exhausted": ("CCR7", "SELL", "LEF1", "IL7R", "KLRG1", "CX3CR1"),
    "treg": ("GZMB", "PRF1", "GNLY", "NKG7"),
    "proliferating": (),
}
# Markers (nearly) silent outside their state.
SPECIFIC_MARKERS: frozenset[str] = frozenset(
    {
        "FOXP3", "IKZF2", "TNFRSF18", "TNFRSF4", "MKI67", "TOP2A", "CDK1", "TYMS", "LAYN",
        "CXCL13", "HAVCR2", "PDCD1", "LAG3", "ENTPD1", "FGFBP2", "CX3CR1", "KLRG1", "AQP3",
    }
)
LINEAGE_GENES: dict[str, float] = {"CD4": 1.6, "CD8A": 3.0, "CD8B": 2.5}
T_CELL_GENES: dict[str, float] = {
    "CD3D": 10.0,
    "CD3E": 8.0,
    "CD3G": 4.0,
    "CD2": 5.0,
    "PTPRC": 8.0,
    "CD247": 2.0,
}
MITO_GENES: tuple[str, ...] = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)
RIBO_GENES: tuple[str, ...] = (
    "RPL3", "RPL4", "RPL5", "RPL6", "RPL7", "RPL7A", "RPL8", "RPL9", "RPL10", "RPL10A",
    "RPL11", "RPL12", "RPL13", "RPL13A", "RPL14", "RPL15", "RPL18", "RPL19", "RPL21",
    "RPL23A", "RPL27A", "RPL30", "RPL32", "RPL34", "RPL41", "RPS2", "RPS3", "RPS3A",
    "RPS4X", "RPS6", "RPS8", "RPS12", "RPS13", "RPS14", "RPS15A", "RPS18", "RPS19",
    "RPS23", "RPS25", "RPS27", "RPS27A", "RPS29",
)
HOUSEKEEPING: dict[str, float] = {
    "MALAT1": 120.0, "B2M": 110.0, "TMSB4X": 100.0, "EEF1A1": 90.0, "ACTB": 60.0,
    "TPT1": 40.0, "FTH1": 25.0, "FTL": 18.0, "GAPDH": 15.0, "PTMA": 15.0, "UBC": 10.0,
    "PPIA": 10.0, "HSP90AB1": 8.0, "ACTG1": 12.0, "PFN1": 10.0, "HLA-A": 12.0,
    "HLA-B": 15.0, "HLA-C": 10.0, "TMSB10": 40.0, "EEF1G": 8.0,
}
# V(D)J reference names (10x vdj reference spelling, roughly by usage frequency).
TRAV: tuple[str, ...] = (
    "TRAV1-2", "TRAV13-1", "TRAV29/DV5", "TRAV9-2", "TRAV26-1", "TRAV17", "TRAV12-1",
    "TRAV21", "TRAV8-3", "TRAV38-2/DV8", "TRAV14/DV4", "TRAV12-2", "TRAV13-2", "TRAV19",
    "TRAV8-4", "TRAV23/DV6", "TRAV26-2", "TRAV12-3", "TRAV3", "TRAV27", "TRAV10",
    "TRAV8-6", "TRAV4", "TRAV25", "TRAV5", "TRAV41", "TRAV20", "TRAV38-1", "TRAV6",
    "TRAV16", "TRAV1-1", "TRAV36/DV7", "TRAV8-2", "TRAV8-1", "TRAV2", "TRAV35", "TRAV39",
    "TRAV22", "TRAV30", "TRAV24",
)
TRAJ: tuple[str, ...] = (
    "TRAJ49", "TRAJ33", "TRAJ45", "TRAJ37", "TRAJ40", "TRAJ20", "TRAJ54", "TRAJ53",
    "TRAJ48", "TRAJ42", "TRAJ23", "TRAJ6", "TRAJ4", "TRAJ22", "TRAJ29", "TRAJ39",
    "TRAJ30", "TRAJ43", "TRAJ31", "TRAJ15", "TRAJ52", "TRAJ10", "TRAJ57", "TRAJ32",
    "TRAJ34", "TRAJ36", "TRAJ44", "TRAJ11", "TRAJ26", "TRAJ13", "TRAJ28", "TRAJ5",
    "TRAJ47", "TRAJ21", "TRAJ24", "TRAJ8", "TRAJ58", "TRAJ17", "TRAJ27", "TRAJ12",
)
TRBV: tuple[str, ...] = (
    "TRBV20-1", "TRBV19", "TRBV6-2", "TRBV7-9", "TRBV6-5", "TRBV5-1", "TRBV7-2",
    "TRBV4-3", "TRBV28", "TRBV12-4", "TRBV3-1", "TRBV18", "TRBV27", "TRBV9", "TRBV12-3",
    "TRBV4-1", "TRBV2", "TRBV7-6", "TRBV5-4", "TRBV11-2", "TRBV6-6", "TRBV5-6", "TRBV6-4",
    "TRBV6-1", "TRBV7-8", "TRBV10-3", "TRBV21-1", "TRBV30", "TRBV15", "TRBV5-5",
    "TRBV29-1", "TRBV7-3", "TRBV7-7", "TRBV12-5", "TRBV24-1", "TRBV13", "TRBV10-2",
    "TRBV11-3", "TRBV14", "TRBV10-1",
)
# Real J-region motifs of the human TRBJ genes (end of the junction, ending in F).
TRBJ_MOTIF: dict[str, str] = {
    "TRBJ1-1": "NTEAFF", "TRBJ1-2": "NYGYTF", "TRBJ1-3": "SGNTIYF", "TRBJ1-4": "TNEKLFF",
    "TRBJ1-5": "SNQPQHF", "TRBJ1-6": "SYNSPLHF", "TRBJ2-1": "SYNEQFF", "TRBJ2-2": "NTGELFF",
    "TRBJ2-3": "STDTQYF", "TRBJ2-4": "AKNIQYF", "TRBJ2-5": "QETQYF", "TRBJ2-6": "SGANVLTF",
    "TRBJ2-7": "SYEQYF",
}
TRBJ: tuple[str, ...] = tuple(TRBJ_MOTIF)
# TCR genes present as features of the GEX panel (10x GEX reference spelling: no "/").
PANEL_TRAV: tuple[str, ...] = TRAV[:12]
PANEL_TRBV: tuple[str, ...] = TRBV[:12]
PANEL_TRAJ: tuple[str, ...] = TRAJ[:6]
PANEL_TRBJ: tuple[str, ...] = ("TRBJ1-1", "TRBJ2-7", "TRBJ1-2", "TRBJ2-1", "TRBJ2-3", "TRBJ1-5")
TCR_CONSTANT: dict[str, float] = {
    "TRAC": 0.6, "TRBC1": 0.6, "TRBC2": 0.6, "TRDC": 0.08, "TRGC1": 0.05, "TRGC2": 0.08,
}
CAR_FEATURE = "CAR"
OTHER_GENES: tuple[str, ...] = (
    # other immune genes worth having (MAIT, gd, NK-like, activation)
    "GZMA", "CD69", "IL32", "IFNG", "TNF", "SLC4A10", "ZBTB16", "KLRD1", "FCGR3A",
    "NCAM1", "ITGAE", "CD38", "HLA-DRA", "TBX21", "PRDM1", "BATF", "IRF4", "CD7", "CD5",
    "CD6", "LCK", "ZAP70", "ITK", "CD96", "KLRF1",
)

_FILLER_POOL = """
    B2M EEF1A1 TMSB4X ACTB TMSB10 TPT1 FOS JUNB JUN ZFP36 PTMA FAU FTH1 HSPA1A DNAJB1 DUSP1
    EIF1 CCL5 H3F3B PFN1 TSC22D3 FXYD5 IL32 ACTG1 SH3BGRL3 GAPDH VIM FTL S100A4 BTG1 CD69
    CCL4 HSPA1B NACA CD74 UBC HSPA8 IFITM1 SRGN UBA52 CXCL13 SARAF CFL1 SERF2 ZFP36L2 KLF6
    EEF1D CRIP1 CD3E HSP90AA1 IL7R ARHGDIB PPIA NFKBIA MYL12A EEF1B2 ATP5E CD52 PFDN5 TMA7
    MYL6 CXCR4 S100A6 TXNIP NKG7 HNRNPA1 CD3D UBB EEF2 DUSP2 DDIT4 PCBP2 BTF3 EEF1G PABPC1
    IER2 LTB TNFAIP3 MIF DDX5 PTPRC COX4I1 CALM1 CORO1A HSP90AB1 PTPRCAP LAPTM5 GNLY COX7C
    PPDPF ITM2B TOMM7 RGS1 ATP5L HINT1 CD7 RAC2 IFITM2 OST4 HCST PPP1R15A S100A10 HMGB1
    ATP5G2 ANXA1 COMMD6 NPM1 CD2 CIRBP PSME1 BTG2 RHOA SRP14 CD99 ARPC2 HNRNPDL CYTIP
    LRRC75A-AS1 TAGLN2 CYBA CCNI CLIC1 CHCHD2 YWHAZ CST7 SAT1 GZMA SRSF7 LDHB EIF3K UBL5
    MYL12B PNRC1 SUMO2 IL2RG ZFAS1 UQCR11 DAZAP2 S100A11 SNRPD2 ARPC1B CD37 EVL LSP1 ARPC3
    ALDOA UQCRB YWHAB RARRES3 HNRNPA2B1 PPIB SUB1 CNBP ALOX5AP DNAJA1 EDF1 GABARAP SOD1
    COX6C TPM3 COX6B1 LIMD2 IFITM3 CALM2 GSTK1 HMGN2 SLC2A3 ISG20 TPI1 RBM3 SLC25A6 LGALS1
    SRSF5 CD44 COX6A1 SKP1 TCEB2 ZFP36L1 LY6E FYB COX7A2 EMP3 LEPROTL1 CD8A PSMB9 ANAPC16
    GADD45B ARL6IP5 HNRNPK ATP5I PCED1B-AS1 FOSB UCP2 GZMK SNHG6 GPSM3 HMGN1 COTL1 YBX1
    GLTSCR2 SLC25A3 LCP1 SSR4 COX5B CAPZB APRT LCK RNASEK EIF4A2 CIB1 HSPE1 SSR2 NDUFA4
    COX8A GMFG PCBP1 SNHG8 CITED2 EIF3F KRTCAP2 ITGB2 PKM HNRNPA0 SLC25A5 TMEM258 CTSW SERP1
    LDHA KLRB1 CD8B USMG5 GUK1 RHOH RBM39 SPOCK2 ATP6V1G1 NDUFS5 EIF3E NR4A1 RAN PRR13 PSMA7
    SAP18 NDUFA13 MCL1 NDUFA11 ATP6V0C CDC42 PGK1 SRSF2 GZMB STK17A ARF1 CKLF VAMP2 STK17B
    TMBIM6 CYCS UQCR10 ATPIF1 RBM8A RAP1B TRMT112 PARK7 NDUFB11 ATP6V0E1 GYPC PPP1CA GZMH
    POLR2L CALR BATF UBE2D2 PSMB8 UBE2D3 TUBA1A PTGES3 IFNG LIME1 GPX4 ABRACL VAMP8 SEC61B
    MORF4L1 CNN2 NR3C1 PLP2 EIF3G ACTR3 GZMM PSME2 UBXN1 GIMAP4 SPCS1 CUTA CDC37 PHLDA1 TSPO
    TAPBP NCL HSPB1 CCNH PET100 PPP1R2 PGAM1 CACYBP SRSF3 NDUFA3 CD3G ITM2A TAGAP RABAC1
    CTSC HIGD2A RGS10 HNRNPA3 ATP5J2 ERP29 CD96 ANP32B HERPUD1 NDUFA1 MSN YWHAQ H3F3AP4 CD53
    WIPF1 SF1 TMEM50A MBNL1 HCLS1 DBI DRAP1 EIF3H EPC1 TUBA1B GNG5 ELF1 CCND3 EIF5A NDUFB2
    ATP5B LCP2 ARF5 HNRNPC PRDM1 GSTP1 MYH9 RBX1 H2AFZ UQCRH BRK1 SEC61G CCNL1 PDIA3 CD247
    RGCC YPEL5 ATP5G3 EID1 ANXA6 CLDND1 SNRPG ATP5O SOCS3 CSNK2B ENO1 CAP1 CELF2 EZR SON
    TUBA4A TSTD1 FUS CLEC2B PIM2 ISCU SQSTM1 GAS5 NR4A2 HSPH1 CD48 PAIP2 DDX24 CTSD DAD1
    CD27 ARL6IP4 IRF1 MATR3 PEBP1 LAMTOR4 HNRNPF WDR83OS CALM3 FKBP1A SAMSN1 KLF2 BRD2
    EIF4G2 NHP2L1 PRF1 ARPC5 ST13 BSG ATP5D AHNAK PRDX1 LITAF SF3B5 OCIAD2 SKAP1 MAP1LC3B
    TBC1D10C NDUFB4 FKBP5 EIF3L BUB3 EIF4B ICAM3 SELK TOMM6 DYNLL1 TUBB AES GLIPR1 FAIM3
    SHISA5 ERH TMBIM4 SERBP1 CDC42SE2 LSM7 RSRP1 EGR1 WDR1 HMGB2 CCDC85B CSDE1 ARGLU1 NDUFB1
    CDKN1A TIGIT SMDT1 ITGB1 SH2D2A ACAP1 VPS28 GABARAPL2 TMEM59 ID2 UXT SHFM1 NDFIP1 MAT2B
    CLK1 MINOS1 NFKBIZ MRPS21 ATF3 LBH SRRM1 IL10RA PIK3IP1 ETS1 LAT SH3BGRL ARHGEF1 SRSF11
    KMT2E ROMO1 SF3B1 CSTB NDUFB8 HSP90B1 ZYX RSL24D1 GPX1 PTGER4 ANKRD12 NOP10 TOMM20
    PPP1R18 PRRC2C SRP9 NEDD8 CD97 COPE ECH1 SEPW1 HOPX POLR1D JUND OSTF1 TECR STK4 COX7B
    CSRNP1 RALY RNF213 PRDX2 GNG2 NSA2 SF3B6 TXN HSPA5 JAK1 XRCC6 UFC1 NDUFV2 BST2 POLD4
    UBE2N GIMAP7 TERF2IP TBCB ANXA5 SBDS PARP8 CD164
""".split()

# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------

TIMEPOINTS_LATER: tuple[tuple[str, int], ...] = (("D14", 14), ("M3", 90))


@dataclass(frozen=True)
class SimParams:
    """All knobs of the simulator (scale, rates, planted effects).

    Parameters
    ----------
    seed
        Master seed; everything random derives from it.
    n_patients
        Number of patients (half responders, rounded down).
    min_cells, max_cells
        Cells per library, drawn uniformly in ``[min_cells, max_cells]``.
    frac_longitudinal
        Fraction of patients (per response group) with ``D14`` and ``M3`` blood samples.
    n_batches
        Number of processing batches ``b1..bN`` (balanced across response groups).
    n_filler_genes
        Number of filler genes (real symbols of T-cell-expressed genes) in the panel.
    median_umis
        Median UMIs per good cell.
    car_dropout
        Fraction of CAR+ cells whose CAR count is set to 0 (detection dropout).
    car_mean_umis, car_ambient_umis
        Mean CAR UMIs in CAR+ cells, and ambient mean in CAR- cells (scaled by library size).
    doublet_rate, low_quality_rate, no_tcr_rate
        Fractions of cells that are doublets, low quality, without any TCR contig.
    tcr_only_barcode_rate
        Extra TCR barcodes (fraction of cells) that have no GEX cell.
    clone_pool_size
        Clones per (patient, state, source) pool; clone sizes are Zipf-like.
    batch_gene_fraction, batch_sd
        Fraction of genes with a batch effect and the SD of the log factor.
    stray_rate
        Probability that a cell's state differs from its clone's dominant state.
    new_clone_rate
        Fraction of cells of CD3+ sorted blood samples from clones absent from the product.
    persistent_share
        Fraction of blood cells drawn from the persistent (expanded in vivo) CAR+ clones.
    airr_every
        Every ``airr_every``-th library (index ``i % airr_every == 3``) writes AIRR TSV.
    gex_format
        ``mixed`` (even library index: Cell Ranger HDF5, odd: mtx folder), ``h5`` or ``mtx``.
    """

    seed: int
    n_patients: int = 20
    min_cells: int = 300
    max_cells: int = 1500
    frac_longitudinal: float = 0.5
    n_batches: int = 3
    n_filler_genes: int = 330
    median_umis: float = 3500.0
    car_dropout: float = 0.0
    car_mean_umis: float = 6.0
    car_ambient_umis: float = 0.05
    doublet_rate: float = 0.05
    low_quality_rate: float = 0.05
    no_tcr_rate: float = 0.03
    tcr_only_barcode_rate: float = 0.02
    clone_pool_size: int = 2000
    batch_gene_fraction: float = 0.2
    batch_sd: float = 0.5
    stray_rate: float = 0.15
    new_clone_rate: float = 0.4
    persistent_share: float = 0.25
    airr_every: int = 20
    gex_format: str = "mixed"

    def validate(self) -> None:
        """Raise :class:`CartCohortError` on impossible settings."""
        problems = []
        if self.n_patients < 2:
            problems.append("n_patients must be >= 2 (one responder, one non-responder)")
        if not 20 <= self.min_cells <= self.max_cells:
            problems.append(
                f"need 20 <= min_cells <= max_cells, got {self.min_cells}, {self.max_cells}"
            )
        for name in (
            "frac_longitudinal", "car_dropout", "doublet_rate", "low_quality_rate",
            "no_tcr_rate", "tcr_only_barcode_rate", "batch_gene_fraction", "stray_rate",
            "new_clone_rate", "persistent_share",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {v}")
        if self.doublet_rate + self.low_quality_rate + self.no_tcr_rate > 0.5:
            problems.append("doublet_rate + low_quality_rate + no_tcr_rate must be <= 0.5")
        if self.n_batches < 1:
            problems.append(f"n_batches must be >= 1, got {self.n_batches}")
        if self.clone_pool_size < 50:
            problems.append(f"clone_pool_size must be >= 50, got {self.clone_pool_size}")
        if self.airr_every < 1:
            problems.append(f"airr_every must be >= 1, got {self.airr_every}")
        if self.gex_format not in ("mixed", "h5", "mtx"):
            problems.append(f"gex_format must be mixed, h5 or mtx, got {self.gex_format!r}")
        if self.median_umis < 200:
            problems.append(f"median_umis must be >= 200, got {self.median_umis}")
        n_pool = len(_filler_pool())
        if not 0 <= self.n_filler_genes <= n_pool:
            problems.append(f"n_filler_genes must be in [0, {n_pool}], got {self.n_filler_genes}")
        if problems:
            raise CartCohortError(
                "Invalid simulator settings: " + "; ".join(problems) + ". Fix the arguments."
            )


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------

_BASES = "TCAG"
_CODON_AA = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
_CODONS = [a + b + c for a in _BASES for b in _BASES for c in _BASES]
CODON_TABLE: dict[str, str] = dict(zip(_CODONS, _CODON_AA, strict=True))
_AA_CODONS: dict[str, list[str]] = {}
for _c, _a in CODON_TABLE.items():
    _AA_CODONS.setdefault(_a, []).append(_c)
_SENSE_AA = "ACDEFGHIKLMNPQRSTVWY"
# rough CDR3 middle amino-acid usage
_CDR3_AA = "GSATRLDEPQNYVKFHW"
_CDR3_W = np.array([14, 12, 7, 8, 9, 8, 6, 5, 6, 6, 5, 5, 4, 3, 3, 2, 1], dtype=float)
_CDR3_CUM = np.cumsum(_CDR3_W / _CDR3_W.sum())
_CDR3_CUM[-1] = 1.0


def translate(nt: str) -> str:
    """Translate a nucleotide sequence (length multiple of 3 is not required)."""
    return "".join(CODON_TABLE[nt[i : i + 3]] for i in range(0, len(nt) - len(nt) % 3, 3))


def _back_translate(aa: str, rng: np.random.Generator) -> str:
    choice = rng.integers(0, 6, size=len(aa))
    return "".join(_AA_CODONS[a][c % len(_AA_CODONS[a])] for a, c in zip(aa, choice, strict=True))


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "little")


def _fixed_rng(text: str) -> np.random.Generator:
    """RNG that depends only on ``text`` (germline sequences, gene parameters)."""
    return np.random.default_rng(_stable_int(text))


def _random_aa(n: int, rng: np.random.Generator, alphabet: str = _SENSE_AA) -> str:
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=n))


def gene_id(symbol: str) -> str:
    """Fake but stable Ensembl-like id of a gene symbol (``ENSG`` + 11 digits)."""
    return f"ENSG{_stable_int('gene:' + symbol) % 10**11:011d}"


def gex_symbol(vdj_gene: str) -> str:
    """GEX-reference spelling of a V(D)J gene (``TRAV29/DV5`` -> ``TRAV29DV5``)."""
    return vdj_gene.replace("/", "")


# --------------------------------------------------------------------------------------
# Gene panel
# --------------------------------------------------------------------------------------



def _filler_pool() -> list[str]:
    taken = set(_core_symbols())
    return [g for g in _FILLER_POOL if g not in taken]


def _core_symbols() -> list[str]:
    out: list[str] = []
    for genes in STATE_UP.values():
        out.extend(genes)
    for genes in STATE_DOWN.values():
        out.extend(genes)
    out.extend(LINEAGE_GENES)
    out.extend(T_CELL_GENES)
    out.extend(HOUSEKEEPING)
    out.extend(OTHER_GENES)
    out.extend(TCR_CONSTANT)
    out.extend(gex_symbol(g) for g in PANEL_TRAV + PANEL_TRAJ + PANEL_TRBV + PANEL_TRBJ)
    out.extend(RIBO_GENES)
    out.extend(MITO_GENES)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class GenePanel:
    """The simulated GEX feature set and its fixed expression parameters.

    Attributes
    ----------
    features
        One row per feature in file order: ``id``, ``name``, ``feature_type``, ``genome``;
        the CAR transgene is the last row.
    base
        Baseline expected UMIs (relative weight) per gene (CAR excluded).
    logfold
        ``(n_states, n_genes)`` log fold changes of the state programs.
    theta
        NB size parameter per gene.
    lineage_cd4, lineage_cd8
        Log factors applied to CD4 / CD8 cells.
    mito, batchable
        Boolean masks over genes.
    """

    features: pd.DataFrame
    base: np.ndarray
    logfold: np.ndarray
    theta: np.ndarray
    lineage_cd4: np.ndarray
    lineage_cd8: np.ndarray
    mito: np.ndarray
    batchable: np.ndarray
    index: dict[str, int]

    @property
    def n_genes(self) -> int:
        """Number of endogenous genes (CAR excluded)."""
        return len(self.base)


_PANEL_CACHE: dict[int, GenePanel] = {}


def gene_panel(n_filler_genes: int = 330) -> GenePanel:
    """Build the gene panel (fixed: independent of the cohort seed).

    Parameters
    ----------
    n_filler_genes
        Number of filler genes appended after the core genes.
    """
    if n_filler_genes in _PANEL_CACHE:
        return _PANEL_CACHE[n_filler_genes]
    core = _core_symbols()
    pool = _filler_pool()
    if n_filler_genes > len(pool):
        raise CartCohortError(
            f"n_filler_genes={n_filler_genes} exceeds the {len(pool)} filler genes available. "
            "Fix: ask for fewer filler genes."
        )
    filler = pool[:n_filler_genes]
    symbols = core + filler
    idx = {g: i for i, g in enumerate(symbols)}
    g_n = len(symbols)
    rng = _fixed_rng("cartcohort-gene-panel-v1")
    base = np.full(g_n, np.nan)
    theta = np.exp(rng.normal(np.log(4.0), 0.5, size=g_n))
    markers = {g for genes in STATE_UP.values() for g in genes} | {
        g for genes in STATE_DOWN.values() for g in genes
    }
    for g in sorted(markers):
        if g in SPECIFIC_MARKERS:
            base[idx[g]] = rng.uniform(0.02, 0.08)
        else:
            base[idx[g]] = float(np.exp(rng.uniform(np.log(0.1), np.log(1.2))))
    for g, v in LINEAGE_GENES.items():
        base[idx[g]] = v
    for g, v in T_CELL_GENES.items():
        base[idx[g]] = v
    for g, v in HOUSEKEEPING.items():
        base[idx[g]] = v
        theta[idx[g]] = 12.0
    for g in OTHER_GENES:
        base[idx[g]] = rng.uniform(0.2, 3.0)
    for g, v in TCR_CONSTANT.items():
        base[idx[g]] = v
    for g in PANEL_TRAV + PANEL_TRAJ + PANEL_TRBV + PANEL_TRBJ:
        base[idx[gex_symbol(g)]] = 0.02
    for g in RIBO_GENES:
        base[idx[g]] = rng.uniform(8.0, 25.0)
        theta[idx[g]] = 15.0
    mito_w = rng.uniform(0.3, 1.0, size=len(MITO_GENES))
    for g, v in zip(MITO_GENES, mito_w, strict=True):
        base[idx[g]] = v
        theta[idx[g]] = 10.0
    for rank, g in enumerate(filler):
        base[idx[g]] = 25.0 * (rank + 1) ** -0.75 * np.exp(rng.normal(0, 0.3))
    if np.isnan(base).any():  # pragma: no cover - guards the tables above
        raise CartCohortError("internal: gene panel has genes without baseline")
    logfold = np.zeros((len(STATES), g_n))
    for s, state in enumerate(STATES):
        for g in STATE_UP[state]:
            fold = max(rng.uniform(3.0, 8.0), 2.0 / base[idx[g]])
            logfold[s, idx[g]] += np.log(fold)
            theta[idx[g]] = max(theta[idx[g]], 3.0)
        for g in STATE_DOWN[state]:
            logfold[s, idx[g]] += np.log(rng.uniform(0.12, 0.3))
    lineage_cd4 = np.zeros(g_n)
    lineage_cd8 = np.zeros(g_n)
    lineage_cd4[[idx["CD8A"], idx["CD8B"]]] = np.log(0.01)
    lineage_cd8[idx["CD4"]] = np.log(0.01)
    mito = np.zeros(g_n, dtype=bool)
    mito[[idx[g] for g in MITO_GENES]] = True
    batchable = np.zeros(g_n, dtype=bool)
    batchable[[idx[g] for g in list(HOUSEKEEPING) + list(RIBO_GENES) + filler]] = True
    ids = [gene_id(g) for g in symbols]
    if len(set(ids)) != len(ids):  # pragma: no cover - md5 collision
        raise CartCohortError("internal: fake gene ids collide")
    features = pd.DataFrame(
        {
            "id": ids + [CAR_FEATURE],
            "name": symbols + [CAR_FEATURE],
            "feature_type": ["Gene Expression"] * (g_n + 1),
            "genome": ["GRCh38"] * g_n + [CAR_FEATURE],
        }
    )
    panel = GenePanel(
        features=features,
        base=base,
        logfold=logfold,
        theta=theta,
        lineage_cd4=lineage_cd4,
        lineage_cd8=lineage_cd8,
        mito=mito,
        batchable=batchable,
        index=idx,
    )
    _PANEL_CACHE[n_filler_genes] = panel
    return panel


# --------------------------------------------------------------------------------------
# Germline segments and chains
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    aa: str
    nt: str


def _seg(aa: str, rng: np.random.Generator) -> _Segment:
    return _Segment(aa, _back_translate(aa, rng))


_V_CACHE: dict[str, dict[str, _Segment | str]] = {}


def _v_germline(v: str) -> dict[str, _Segment | str]:
    if v not in _V_CACHE:
        rng = _fixed_rng("V:" + v)
        nonc = _SENSE_AA.replace("C", "")
        prefixes = ("CASS", "CASS", "CASS", "CASR", "CAWS", "CSAR", "CASG", "CSVE")
        if v.startswith("TRA"):
            prefixes = ("CAV", "CAVR", "CALS", "CAAS", "CAMR", "CVV", "CAE", "CAYR", "CILR")
        _V_CACHE[v] = {
            "utr": "".join(_BASES[i] for i in rng.integers(0, 4, size=60)),
            "fwr1": _seg(_random_aa(25, rng, nonc), rng),
            "cdr1": _seg(_random_aa(int(rng.integers(5, 7)), rng, nonc), rng),
            "fwr2": _seg(_random_aa(17, rng, nonc), rng),
            "cdr2": _seg(_random_aa(int(rng.integers(5, 7)), rng, nonc), rng),
            "fwr3": _seg(_random_aa(36, rng, nonc), rng),
            "prefix": prefixes[int(rng.integers(0, len(prefixes)))],
        }
    return _V_CACHE[v]


_J_CACHE: dict[str, dict[str, _Segment | str]] = {}


def _j_germline(j: str) -> dict[str, _Segment | str]:
    if j not in _J_CACHE:
        rng = _fixed_rng("J:" + j)
        if j in TRBJ_MOTIF:
            motif = TRBJ_MOTIF[j]
        else:
            ends = ("KLTF", "KLIF", "QLIF", "TLIF", "KVIF", "NLVF", "RLTF", "QFYF")
            motif = _random_aa(int(rng.integers(2, 4)), rng, "GSNTDYAKQ") + ends[
                int(rng.integers(0, len(ends)))
            ]
        fwr4 = "G" + _random_aa(2, rng, "QKEP") + "GT" + _random_aa(4, rng, "RLKVTS")
        _J_CACHE[j] = {"motif": motif, "fwr4": _seg(fwr4, rng)}
    return _J_CACHE[j]


_C_CACHE: dict[str, str] = {}


def _c_germline(c: str) -> str:
    if c not in _C_CACHE:
        rng = _fixed_rng("C:" + c)
        _C_CACHE[c] = _back_translate(_random_aa(80, rng), rng)
    return _C_CACHE[c]


_C_AA_CACHE: dict[str, str] = {}


def _c_translation(c: str) -> str:
    if c not in _C_AA_CACHE:
        _C_AA_CACHE[c] = translate(_c_germline(c))
    return _C_AA_CACHE[c]


@dataclass(frozen=True)
class Chain:
    """One TCR chain of a clone."""

    locus: str
    v: str
    d: str
    j: str
    c: str
    cdr3: str
    cdr3_nt: str


@dataclass
class Clone:
    """A planted clone; lineage, CAR status and chains are shared by all its cells."""

    gid: str
    patient: str
    state: str
    is_cd4: bool
    car: bool
    source: str
    alphas: tuple[Chain, ...]
    beta: Chain
    persistent: bool = False


def _usage_weights(n: int) -> np.ndarray:
    """Cumulative usage distribution over a gene list ordered by frequency."""
    w = (np.arange(n) + 1.0) ** -0.5
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    return cum


def _draw(cum: np.ndarray, rng: np.random.Generator, size: int | None = None):
    return np.searchsorted(cum, rng.random(size), side="right")


_TRAV_W = _usage_weights(len(TRAV))
_TRBV_W = _usage_weights(len(TRBV))
_TRAJ_W = _usage_weights(len(TRAJ))
_TRBJ_W = _usage_weights(len(TRBJ))


def _make_chain(locus: str, rng: np.random.Generator, used: set[str]) -> Chain:
    for _ in range(1000):
        if locus == "TRA":
            v = TRAV[_draw(_TRAV_W, rng)]
            j = TRAJ[_draw(_TRAJ_W, rng)]
            d, c = "", "TRAC"
            middle = int(rng.integers(1, 6))
        else:
            v = TRBV[_draw(_TRBV_W, rng)]
            j = TRBJ[_draw(_TRBJ_W, rng)]
            if j.startswith("TRBJ1"):
                d, c = "TRBD1", "TRBC1"
            else:
                d, c = ("TRBD1", "TRBD2")[int(rng.integers(0, 2))], "TRBC2"
            if rng.random() < 0.25:
                d = ""
            middle = int(rng.integers(2, 7))
        prefix = str(_v_germline(v)["prefix"])
        motif = str(_j_germline(j)["motif"])
        motif = motif[int(rng.integers(0, 3)) :] if len(motif) > 5 else motif
        mid = "".join(_CDR3_AA[i] for i in _draw(_CDR3_CUM, rng, middle))
        aa = prefix + mid + motif
        nt = _back_translate(aa, rng)
        if nt not in used:
            used.add(nt)
            return Chain(locus, v, d, j, c, aa, nt)
    raise CartCohortError("internal: could not draw a unique CDR3 after 1000 tries")


def _contig_parts(chain: Chain, rng: np.random.Generator) -> dict[str, object]:
    """Full contig of a chain: segments, sequence and alignment coordinates (1-based)."""
    vg = _v_germline(chain.v)
    jg = _j_germline(chain.j)
    utr = str(vg["utr"])[int(rng.integers(0, 40)) :]
    segs = [vg["fwr1"], vg["cdr1"], vg["fwr2"], vg["cdr2"], vg["fwr3"]]
    vregion = "".join(s.nt for s in segs)  # type: ignore[union-attr]
    fwr4 = jg["fwr4"]
    cstub = _c_germline(chain.c)[: int(rng.integers(60, 220))]
    seq = utr + vregion + chain.cdr3_nt + fwr4.nt + cstub  # type: ignore[union-attr]
    v_start = len(utr) + 1
    v_end = len(utr) + len(vregion) + 9
    j_len = 3 * len(str(jg["motif"])) + len(fwr4.nt)  # type: ignore[union-attr]
    junc_end = len(utr) + len(vregion) + len(chain.cdr3_nt)
    j_end = junc_end + len(fwr4.nt)  # type: ignore[union-attr]
    j_start = max(v_end + 1, j_end - j_len + 1)
    v_aa = "".join(s.aa for s in segs)  # type: ignore[union-attr]
    c_aa = _c_translation(chain.c)[: len(cstub) // 3]
    return {
        "segs": segs,
        "fwr4": fwr4,
        "sequence": seq,
        "sequence_aa": v_aa + chain.cdr3 + fwr4.aa + c_aa,  # type: ignore[union-attr]
        "v_start": v_start,
        "v_end": v_end,
        "j_start": j_start,
        "j_end": j_end,
        "c_start": j_end + 1,
        "c_end": len(seq),
        "junc_start": len(utr) + len(vregion) + 1,
        "junc_end": junc_end,
    }


# --------------------------------------------------------------------------------------
# Cohort plan (patients, libraries, clinical)
# --------------------------------------------------------------------------------------


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


def _clip(x: float, lo: float, hi: float) -> float:
    return float(min(max(x, lo), hi))


def _plan_patients(params: SimParams) -> list[PatientPlan]:
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
        mem = _clip(rng.normal(0.45 if r else 0.25, 0.06), 0.08, 0.7)
        exh = _clip(rng.normal(0.10 if r else 0.30, 0.04 if r else 0.06), 0.02, 0.5)
        treg = _clip(rng.normal(0.05, 0.015), 0.01, 0.1)
        prolif = _clip(rng.normal(0.06, 0.02), 0.01, 0.12)
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
        alpha = _clip(rng.normal(0.7 if r else 1.15, 0.08), 0.3, 1.6)
        cd4 = _clip(rng.normal(0.55, 0.1), 0.25, 0.8)  # null control: same in both groups
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


def _plan_libraries(params: SimParams, patients: list[PatientPlan]) -> list[LibraryPlan]:
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


def _clinical(params: SimParams, patients: list[PatientPlan]) -> pd.DataFrame:
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
                "age": int(_clip(round(rng.normal(58, 10)), 22, 80)),
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


# --------------------------------------------------------------------------------------
# Patients: clone pools
# --------------------------------------------------------------------------------------

_POOL_STATES: tuple[str, ...] = tuple(s for s in STATES if s != "proliferating")


@dataclass
class _Pool:
    cum: np.ndarray
    is_cd4: np.ndarray
    car: np.ndarray
    dual: np.ndarray
    clone: np.ndarray  # index into _PatientSim.clones, -1 = not drawn yet
    car_idx: np.ndarray
    car_cum: np.ndarray


class _PatientSim:
    def __init__(self, plan: PatientPlan, params: SimParams, used_cdr3: set[str]):
        self.plan = plan
        self.params = params
        self.rng = np.random.default_rng([params.seed, 3, plan.index])
        self.used = used_cdr3
        self.clones: list[Clone] = []
        self.pools: dict[tuple[str, str], _Pool] = {}
        cd4_other = _clip(
            (plan.cd4_fraction - plan.props_ip["treg"]) / (1 - plan.props_ip["treg"]), 0.05, 0.95
        )
        for source in ("ip", "pb"):
            for state in _POOL_STATES:
                self.pools[(source, state)] = self._new_pool(source, state, cd4_other)
        # persistent clones: the CAR+ product clones with the largest expected share
        cands = []
        for state in _POOL_STATES:
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
        pool = self.pools[key]
        if pool.clone[k] < 0:
            n_alpha = 2 if pool.dual[k] else 1
            alphas = tuple(_make_chain("TRA", self.rng, self.used) for _ in range(n_alpha))
            beta = _make_chain("TRB", self.rng, self.used)
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


def _timepoint_props(plan: PatientPlan, timepoint: str) -> np.ndarray:
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


# --------------------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------------------

TENX_VDJ_COLUMNS: tuple[str, ...] = (
    "barcode", "is_cell", "contig_id", "high_confidence", "length", "chain", "v_gene",
    "d_gene", "j_gene", "c_gene", "full_length", "productive", "fwr1", "fwr1_nt", "cdr1",
    "cdr1_nt", "fwr2", "fwr2_nt", "cdr2", "cdr2_nt", "fwr3", "fwr3_nt", "cdr3", "cdr3_nt",
    "fwr4", "fwr4_nt", "reads", "umis", "raw_clonotype_id", "raw_consensus_id",
    "exact_subclonotype_id",
)
AIRR_COLUMNS: tuple[str, ...] = (
    "cell_id", "clone_id", "sequence_id", "sequence", "sequence_aa", "productive",
    "rev_comp", "v_call", "v_cigar", "d_call", "d_cigar", "j_call", "j_cigar", "c_call",
    "c_cigar", "sequence_alignment", "germline_alignment", "junction", "junction_aa",
    "junction_length", "junction_aa_length", "v_sequence_start", "v_sequence_end",
    "d_sequence_start", "d_sequence_end", "j_sequence_start", "j_sequence_end",
    "c_sequence_start", "c_sequence_end", "consensus_count", "umi_count", "duplicate_count",
    "is_cell", "locus",
)
TRUTH_CELL_COLUMNS: tuple[str, ...] = (
    "cell", "sample", "patient", "timepoint", "barcode", "state", "cd4_cd8", "car_positive",
    "clone", "is_doublet", "is_low_quality", "has_tcr", "car_umis", "n_contigs",
    "planted_persistent",
)


@dataclass
class Library:
    """One simulated library, in memory.

    Attributes
    ----------
    plan
        Sheet row (sample, patient, timepoint, ...) and file formats.
    barcodes
        Cell barcodes (sorted), one per row of ``counts``.
    counts
        ``scipy.sparse.csr_matrix`` (cells x features, int32) of UMI counts.
    features
        Feature table (``id``, ``name``, ``feature_type``, ``genome``); CAR last.
    vdj
        TCR table exactly as written: 10x contig CSV columns or AIRR columns.
    truth
        Per-cell truth (columns ``TRUTH_CELL_COLUMNS``).
    """

    plan: LibraryPlan
    barcodes: np.ndarray
    counts: sp.csr_matrix
    features: pd.DataFrame
    vdj: pd.DataFrame
    truth: pd.DataFrame

    def to_anndata(self):  # noqa: ANN201 - anndata import is deferred
        """The counts as an AnnData (obs = truth, var = features, X float32)."""
        import anndata as ad

        obs = self.truth.set_index("cell")
        var = pd.DataFrame(
            {
                "gene_ids": self.features["id"].to_numpy(),
                "feature_types": self.features["feature_type"].to_numpy(),
                "genome": self.features["genome"].to_numpy(),
            },
            index=pd.Index(self.features["name"].to_numpy(), name=None),
        )
        return ad.AnnData(X=self.counts.astype(np.float32), obs=obs, var=var)


def _random_barcodes(n: int, rng: np.random.Generator, taken: set[str] | None = None) -> list[str]:
    letters = np.array(list("ACGT"))
    out: list[str] = []
    seen = set(taken or ())
    while len(out) < n:
        m = n - len(out)
        arr = letters[rng.integers(0, 4, size=(m, 16))]
        for row in arr:
            bc = "".join(row) + "-1"
            if bc not in seen:
                seen.add(bc)
                out.append(bc)
    return out


def _chain_records(
    barcode: str, chains: list[Chain], rng: np.random.Generator
) -> list[dict[str, object]]:
    recs = []
    for i, ch in enumerate(chains, start=1):
        parts = _contig_parts(ch, rng)
        umis = 1 + int(rng.poisson(5.0 if ch.locus == "TRB" else 3.0))
        reads = int(umis * rng.lognormal(np.log(350.0), 0.4)) + umis
        recs.append(
            {"barcode": barcode, "contig_id": f"{barcode}_contig_{i}", "chain": ch,
             "parts": parts, "umis": umis, "reads": reads}
        )
    return recs


def _tenx_rows(recs: list[dict[str, object]], clonotype: dict[str, tuple[str, list[str]]]):
    rows = []
    for r in recs:
        ch: Chain = r["chain"]  # type: ignore[assignment]
        parts = r["parts"]
        segs = parts["segs"]  # type: ignore[index]
        ct, keys = clonotype[r["barcode"]]  # type: ignore[index]
        row = {
            "barcode": r["barcode"], "is_cell": "true", "contig_id": r["contig_id"],
            "high_confidence": "true", "length": len(parts["sequence"]),  # type: ignore[index]
            "chain": ch.locus, "v_gene": ch.v, "d_gene": ch.d, "j_gene": ch.j, "c_gene": ch.c,
            "full_length": "true", "productive": "true",
        }
        for name, s in zip(("fwr1", "cdr1", "fwr2", "cdr2", "fwr3"), segs, strict=True):
            row[name] = s.aa
            row[name + "_nt"] = s.nt
        row["cdr3"] = ch.cdr3
        row["cdr3_nt"] = ch.cdr3_nt
        row["fwr4"] = parts["fwr4"].aa  # type: ignore[index,union-attr]
        row["fwr4_nt"] = parts["fwr4"].nt  # type: ignore[index,union-attr]
        row["reads"] = r["reads"]
        row["umis"] = r["umis"]
        row["raw_clonotype_id"] = ct
        row["raw_consensus_id"] = f"{ct}_consensus_{keys.index(ch.cdr3_nt) + 1}"
        row["exact_subclonotype_id"] = 1
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TENX_VDJ_COLUMNS))


def _airr_rows(recs: list[dict[str, object]], clonotype: dict[str, tuple[str, list[str]]]):
    rows = []
    for r in recs:
        ch: Chain = r["chain"]  # type: ignore[assignment]
        p: dict = r["parts"]  # type: ignore[assignment]
        seq = p["sequence"]
        n = len(seq)
        vs, ve, js, je, cs, ce = (
            p["v_start"], p["v_end"], p["j_start"], p["j_end"], p["c_start"], p["c_end"]
        )
        if ch.d:
            mid = (p["junc_start"] + p["junc_end"]) // 2
            ds, de = mid - 4, mid + 4
            d_cigar = f"{ds - 1}S{de - ds + 1}M{n - de}S"
        else:
            ds = de = None
            d_cigar = ""
        aln = seq[vs - 1 : je]
        rows.append(
            {
                "cell_id": r["barcode"],
                "clone_id": clonotype[r["barcode"]][0],  # type: ignore[index]
                "sequence_id": r["contig_id"],
                "sequence": seq,
                "sequence_aa": p["sequence_aa"],
                "productive": "T",
                "rev_comp": "F",
                "v_call": ch.v,
                "v_cigar": f"{vs - 1}S{ve - vs + 1}M{n - ve}S",
                "d_call": ch.d,
                "d_cigar": d_cigar,
                "j_call": ch.j,
                "j_cigar": f"{js - 1}S{je - js + 1}M{n - je}S",
                "c_call": ch.c,
                "c_cigar": f"{cs - 1}S{ce - cs + 1}M",
                "sequence_alignment": aln,
                "germline_alignment": aln,
                "junction": ch.cdr3_nt,
                "junction_aa": ch.cdr3,
                "junction_length": len(ch.cdr3_nt),
                "junction_aa_length": len(ch.cdr3),
                "v_sequence_start": vs,
                "v_sequence_end": ve,
                "d_sequence_start": ds,
                "d_sequence_end": de,
                "j_sequence_start": js,
                "j_sequence_end": je,
                "c_sequence_start": cs,
                "c_sequence_end": ce,
                "consensus_count": r["reads"],
                "umi_count": r["umis"],
                "duplicate_count": r["umis"],
                "is_cell": "T",
                "locus": ch.locus,
            }
        )
    df = pd.DataFrame(rows, columns=list(AIRR_COLUMNS))
    for col in ("d_sequence_start", "d_sequence_end"):
        df[col] = df[col].astype("Int64")
    return df


def _panel_index(panel: GenePanel, gene: str) -> int:
    return panel.index.get(gex_symbol(gene), -1)


def _nb(mu: np.ndarray, theta: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    lam = rng.gamma(theta, mu / theta)
    return rng.poisson(lam)


def _simulate_library(
    lib: LibraryPlan,
    psim: _PatientSim,
    panel: GenePanel,
    batch_logfactor: dict[str, np.ndarray],
    params: SimParams,
) -> Library:
    rng = np.random.default_rng([params.seed, 4, lib.index])
    pp = psim.plan
    n = lib.n_cells
    n_doub = int(round(params.doublet_rate * n))
    n_tot = n + n_doub
    props = _timepoint_props(pp, lib.timepoint)
    i_treg, i_prolif = STATES.index("treg"), STATES.index("proliferating")

    # ---- states and clones
    state = rng.choice(len(STATES), size=n_tot, p=props)
    alt_states = np.array([STATES.index(s) for s in _POOL_STATES if s != "treg"])
    alt_w = props[alt_states] / props[alt_states].sum()
    alt = alt_states[rng.choice(len(alt_states), size=n_tot, p=alt_w)]
    stray = rng.random(n_tot) < params.stray_rate
    cstate = np.where((state == i_prolif) | (stray & (state != i_treg)), alt, state)
    u_src = rng.random(n_tot)
    u_pb = rng.random(n_tot)
    u_rank = rng.random(n_tot)
    if lib.timepoint == "IP":
        car_req = np.zeros(n_tot, bool)
        from_pb = np.zeros(n_tot, bool)
    elif lib.sort == "CAR+":
        car_req = u_src < 0.95
        from_pb = ~car_req & (u_pb < 0.5)
    else:
        car_req = np.zeros(n_tot, bool)
        from_pb = u_src < params.new_clone_rate
    n_pers = len(psim.persistent)
    if lib.timepoint != "IP" and n_pers:
        # in vivo expansion: a share of blood cells from the persistent CAR+ clones
        in_vivo = (rng.random(n_tot) < params.persistent_share) & (state != i_treg)
        pers_w = (np.arange(n_pers) + 1.0) ** -0.7
        pers_pick = rng.choice(n_pers, size=n_tot, p=pers_w / pers_w.sum())
    else:
        in_vivo = np.zeros(n_tot, bool)
        pers_pick = np.zeros(n_tot, dtype=np.int64)
    clone = np.empty(n_tot, dtype=np.int64)
    for i in range(n_tot):
        if in_vivo[i]:
            clone[i] = psim.persistent[pers_pick[i]]
            continue
        key = ("pb" if from_pb[i] else "ip", STATES[cstate[i]])
        pool = psim.pools[key]
        if car_req[i] and len(pool.car_idx):
            k = int(pool.car_idx[np.searchsorted(pool.car_cum, u_rank[i], side="right")])
        else:
            k = int(np.searchsorted(pool.cum, u_rank[i], side="right"))
        clone[i] = psim.clone_of(key, k)

    # ---- planted persistence: >= 2 clean cells of every persistent clone
    protected = np.zeros(n_tot, bool)
    pers = np.array(psim.persistent, dtype=np.int64)
    for ci in psim.persistent:
        cl = psim.clones[ci]
        have = np.flatnonzero(clone[:n] == ci)[:2]
        protected[have] = True
        need = 2 - len(have)
        if need > 0:
            s_idx = STATES.index(cl.state)
            free = ~protected[:n] & ~np.isin(clone[:n], pers)
            cand = np.flatnonzero(free & (state[:n] == s_idx))
            if len(cand) < need:
                cand = np.flatnonzero(free & (state[:n] != i_treg))
            if len(cand) < need:
                raise CartCohortError(
                    f"library {lib.sample} has too few cells ({n}) to plant its persistent "
                    "clones. Fix: raise min_cells."
                )
            pick = rng.choice(cand, size=need, replace=False)
            clone[pick] = ci
            state[pick] = s_idx
            protected[pick] = True

    is_cd4 = np.array([psim.clones[c].is_cd4 for c in clone])
    car = np.array([psim.clones[c].car for c in clone])

    # ---- QC truth
    free = np.flatnonzero(~protected[:n])
    n_d = min(n_doub, len(free))
    is_doublet = np.zeros(n_tot, bool)
    prim = np.sort(rng.choice(free, size=n_d, replace=False))
    is_doublet[prim] = True
    partner = n + np.arange(n_d)
    free2 = free[~is_doublet[free]]
    n_lq = min(int(round(params.low_quality_rate * n)), len(free2))
    is_lq = np.zeros(n_tot, bool)
    is_lq[rng.choice(free2, size=n_lq, replace=False)] = True
    no_tcr = (rng.random(n_tot) < params.no_tcr_rate) & ~protected
    pattern = rng.choice(3, size=n_tot, p=[0.82, 0.10, 0.08])  # pair, TRB only, TRA only
    pattern[protected] = 0
    show_dual = rng.random(n_tot) < 0.8

    # ---- expression
    lib_size = params.median_umis * np.exp(rng.normal(0.0, 0.35, size=n_tot))
    mito_frac = np.clip(0.05 * np.exp(rng.normal(0.0, 0.25, size=n_tot)), 0.02, 0.1)
    lib_size[is_lq] *= rng.uniform(0.08, 0.25, size=int(is_lq.sum()))
    mito_frac[is_lq] = rng.uniform(0.25, 0.6, size=int(is_lq.sum()))
    strength = np.clip(np.exp(rng.normal(0.0, 0.25, size=n_tot)), 0.5, 1.6)
    tcr_idx = np.full((n_tot, 5), -1, dtype=np.int64)  # TRAV, TRAJ, TRBV, TRBJ, TRBC
    cache: dict[int, tuple[int, int, int, int, int]] = {}
    for i, c in enumerate(clone):
        if c not in cache:
            cl = psim.clones[c]
            cache[c] = (
                _panel_index(panel, cl.alphas[0].v),
                _panel_index(panel, cl.alphas[0].j),
                _panel_index(panel, cl.beta.v),
                _panel_index(panel, cl.beta.j),
                panel.index[cl.beta.c],
            )
        tcr_idx[i] = cache[c]
    g_n = panel.n_genes
    counts = np.empty((n_tot, g_n + 1), dtype=np.int32)
    log_base = np.log(panel.base) + batch_logfactor[lib.batch]
    trac = panel.index["TRAC"]
    chunk = 2048
    for a in range(0, n_tot, chunk):
        b = min(a + chunk, n_tot)
        rows = np.arange(b - a)
        logw = log_base[None, :] + strength[a:b, None] * panel.logfold[state[a:b]]
        logw += np.where(is_cd4[a:b, None], panel.lineage_cd4[None, :], panel.lineage_cd8[None, :])
        w = np.exp(logw)
        for col, val in ((0, 5.0), (1, 1.5), (2, 5.0), (3, 1.5), (4, 6.0)):
            idx = tcr_idx[a:b, col]
            ok = idx >= 0
            w[rows[ok], idx[ok]] = val
        w[:, trac] = 6.0
        mito = panel.mito
        w[:, ~mito] *= ((1.0 - mito_frac[a:b]) / w[:, ~mito].sum(axis=1))[:, None]
        w[:, mito] *= (mito_frac[a:b] / w[:, mito].sum(axis=1))[:, None]
        mu = w * lib_size[a:b, None]
        counts[a:b, :g_n] = _nb(mu, panel.theta[None, :], rng)
    sf = np.clip(lib_size / params.median_umis, 0.05, 4.0)
    car_mu = np.where(car, params.car_mean_umis * sf, params.car_ambient_umis * sf)
    car_counts = np.where(car, _nb(car_mu, 3.0, rng), rng.poisson(car_mu))
    car_counts[car & (rng.random(n_tot) < params.car_dropout)] = 0
    counts[:, g_n] = car_counts
    counts[prim] += counts[partner]

    # ---- barcodes and TCR contigs
    n_extra = int(round(params.tcr_only_barcode_rate * n))
    bcs = _random_barcodes(n + n_extra, rng)
    cell_bc = sorted(bcs[:n])
    extra_bc = bcs[n:]

    def chains_of(i: int) -> list[Chain]:
        if no_tcr[i]:
            return []
        cl = psim.clones[clone[i]]
        out: list[Chain] = []
        if pattern[i] in (0, 1):
            out.append(cl.beta)
        if pattern[i] in (0, 2):
            out.extend(cl.alphas if show_dual[i] else cl.alphas[:1])
        return out

    cell_chains: dict[str, list[Chain]] = {}
    partner_of = dict(zip(prim.tolist(), partner.tolist(), strict=True))
    for i in range(n):
        chs = chains_of(i)
        if i in partner_of:
            chs = chs + [c for c in chains_of(partner_of[i]) if c not in chs]
        if chs:
            cell_chains[cell_bc[i]] = chs
    with_tcr = np.array([i for i in range(n) if not no_tcr[i]])
    for bc in extra_bc:
        j = int(with_tcr[rng.integers(0, len(with_tcr))]) if len(with_tcr) else 0
        cl = psim.clones[clone[j]]
        cell_chains[bc] = [cl.beta, cl.alphas[0]]
    # raw clonotypes: identical chain sets, numbered by decreasing frequency
    keys = {bc: sorted(c.cdr3_nt for c in chs) for bc, chs in cell_chains.items()}
    freq: dict[tuple[str, ...], int] = {}
    for k in keys.values():
        freq[tuple(k)] = freq.get(tuple(k), 0) + 1
    ranked = sorted(freq, key=lambda k: (-freq[k], k))
    ct_name = {k: f"clonotype{r + 1}" for r, k in enumerate(ranked)}
    clonotype = {bc: (ct_name[tuple(k)], k) for bc, k in keys.items()}
    recs: list[dict[str, object]] = []
    for bc in sorted(cell_chains):
        recs.extend(_chain_records(bc, cell_chains[bc], rng))
    vdj = _airr_rows(recs, clonotype) if lib.vdj_format == "airr" else _tenx_rows(recs, clonotype)

    # ---- truth
    sel = np.arange(n)
    has_tcr = np.array([bc in cell_chains for bc in cell_bc])
    own_tcr = ~no_tcr[:n]
    car_pos = car[:n].copy()
    car_pos[prim] |= car[partner]
    truth = pd.DataFrame(
        {
            "cell": [f"{lib.sample}_{bc}" for bc in cell_bc],
            "sample": lib.sample,
            "patient": lib.patient,
            "timepoint": lib.timepoint,
            "barcode": cell_bc,
            "state": [STATES[s] for s in state[sel]],
            "cd4_cd8": np.where(is_cd4[sel], "CD4", "CD8"),
            "car_positive": car_pos,
            "clone": [
                psim.clones[c].gid if t else "" for c, t in zip(clone[sel], own_tcr, strict=True)
            ],
            "is_doublet": is_doublet[sel],
            "is_low_quality": is_lq[sel],
            "has_tcr": has_tcr,
            "car_umis": counts[sel, g_n].astype(np.int64),
            "n_contigs": [len(cell_chains.get(bc, ())) for bc in cell_bc],
            "planted_persistent": protected[sel],
        },
        columns=list(TRUTH_CELL_COLUMNS),
    )
    mat = sp.csr_matrix(counts[:n])
    mat.sort_indices()
    return Library(
        plan=lib,
        barcodes=np.array(cell_bc, dtype=object),
        counts=mat,
        features=panel.features.copy(),
        vdj=vdj,
        truth=truth,
    )


# --------------------------------------------------------------------------------------
# Cohort generation
# --------------------------------------------------------------------------------------


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


class _Generator:
    """Plans a cohort and yields its libraries one at a time."""

    def __init__(self, params: SimParams):
        params.validate()
        self.params = params
        self.panel = gene_panel(params.n_filler_genes)
        self.patients = _plan_patients(params)
        self.library_plans = _plan_libraries(params, self.patients)
        self.clinical = _clinical(params, self.patients)
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
        self.clones: list[Clone] = []
        self.persistent_counts: dict[str, int] = {}

    def samples(self) -> pd.DataFrame:
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
        used: set[str] = set()
        by_patient: dict[str, list[LibraryPlan]] = {}
        for lp in self.library_plans:
            by_patient.setdefault(lp.patient, []).append(lp)
        for pplan in self.patients:
            psim = _PatientSim(pplan, self.params, used)
            self.persistent_counts[pplan.patient] = len(psim.persistent)
            for lp in by_patient[pplan.patient]:
                lib = _simulate_library(lp, psim, self.panel, self.batch_logfactor, self.params)
                log.info(
                    "simulated %s: %d cells, %d contigs", lp.sample, lib.counts.shape[0],
                    len(lib.vdj),
                )
                yield lib
            self.clones.extend(psim.clones)

    def truth_patients(self, truth_cells: pd.DataFrame) -> pd.DataFrame:
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


def _make_params(seed: int, kwargs: dict[str, object]) -> SimParams:
    names = {f.name for f in fields(SimParams)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise CartCohortError(
            f"Unknown simulator setting(s) {unknown}. Fix: use one of {sorted(names - {'seed'})}."
        )
    return SimParams(seed=seed, **kwargs)  # type: ignore[arg-type]


def simulate_cohort(
    *,
    seed: int,
    n_patients: int = 20,
    min_cells: int = 300,
    max_cells: int = 1500,
    frac_longitudinal: float = 0.5,
    car_dropout: float = 0.0,
    **kwargs: object,
) -> Cohort:
    """Simulate a demo cohort in memory.

    Parameters
    ----------
    seed
        Master seed (same seed and settings give the same cohort).
    n_patients, min_cells, max_cells, frac_longitudinal, car_dropout
        See :class:`SimParams`.
    **kwargs
        Any other :class:`SimParams` field (``n_filler_genes``, ``doublet_rate``,
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
        car_dropout=car_dropout,
    )
    gen = _Generator(_make_params(seed, kwargs))
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


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


def _gz_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6
    ) as gz:
        gz.write(data)


def write_10x_h5(
    counts: sp.csr_matrix,
    path: str | os.PathLike,
    *,
    barcodes: np.ndarray,
    features: pd.DataFrame,
    library_id: str,
) -> None:
    """Write a Cell Ranger v3 ``filtered_feature_bc_matrix.h5`` (byte-stable).

    Parameters
    ----------
    counts
        Cells x features CSR matrix of integer counts (stored as Cell Ranger's
        features x barcodes CSC, which has the same arrays).
    path
        Output file.
    barcodes
        One barcode per row of ``counts``.
    features
        ``id``, ``name``, ``feature_type``, ``genome`` per column of ``counts``.
    library_id
        Library name recorded in the file attributes.
    """
    import h5py

    csr = sp.csr_matrix(counts)
    csr.sort_indices()

    def ds(group, name: str, data: np.ndarray) -> None:
        kw: dict[str, object] = {"track_times": False}
        if data.ndim == 1 and len(data) > 1000:
            kw.update(compression="gzip", compression_opts=4, chunks=(min(len(data), 80000),))
        group.create_dataset(name, data=data, **kw)

    def strings(values) -> np.ndarray:
        vals = [str(v).encode() for v in values]
        width = max([len(v) for v in vals] + [1])
        return np.array(vals, dtype=f"S{width}")

    with h5py.File(path, "w", track_order=False) as f:
        f.attrs["chemistry_description"] = np.bytes_("Single Cell 5' PE v2")
        f.attrs["filetype"] = np.bytes_("matrix")
        f.attrs["library_ids"] = strings([library_id])
        f.attrs["original_gem_groups"] = np.array([1], dtype=np.int64)
        f.attrs["software_version"] = np.bytes_("cellranger-7.1.0 (cartcohort simulator)")
        f.attrs["version"] = np.int64(2)
        m = f.create_group("matrix", track_order=False)
        ds(m, "barcodes", strings(barcodes))
        ds(m, "data", csr.data.astype(np.int32))
        ds(m, "indices", csr.indices.astype(np.int64))
        ds(m, "indptr", csr.indptr.astype(np.int64))
        ds(m, "shape", np.array([csr.shape[1], csr.shape[0]], dtype=np.int32))
        fg = m.create_group("features", track_order=False)
        ds(fg, "_all_tag_keys", strings(["genome"]))
        ds(fg, "feature_type", strings(features["feature_type"]))
        ds(fg, "genome", strings(features["genome"]))
        ds(fg, "id", strings(features["id"]))
        ds(fg, "name", strings(features["name"]))


def write_10x_mtx(
    counts: sp.csr_matrix,
    folder: str | os.PathLike,
    *,
    barcodes: np.ndarray,
    features: pd.DataFrame,
) -> None:
    """Write a Cell Ranger v3 ``filtered_feature_bc_matrix/`` folder (byte-stable gz).

    Parameters
    ----------
    counts
        Cells x features CSR matrix of integer counts.
    folder
        Output folder (created).
    barcodes
        One barcode per row of ``counts``.
    features
        ``id``, ``name``, ``feature_type`` per column of ``counts``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csr = sp.csr_matrix(counts)
    csr.sort_indices()
    n_cells, n_feat = csr.shape
    cols = np.repeat(np.arange(1, n_cells + 1), np.diff(csr.indptr))
    triples = np.column_stack([csr.indices.astype(np.int64) + 1, cols, csr.data]).astype(np.int64)
    header = (
        "%%MatrixMarket matrix coordinate integer general\n"
        '%metadata_json: {"software_version": "cellranger-7.1.0", "format_version": 2}\n'
        f"{n_feat} {n_cells} {csr.nnz}\n"
    )
    with open(folder / "matrix.mtx.gz", "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6
    ) as gz:
        gz.write(header.encode())
        step = 200_000
        for a in range(0, len(triples), step):
            part = triples[a : a + step]
            gz.write((("%d %d %d\n" * len(part)) % tuple(part.ravel().tolist())).encode())
    feat = features[["id", "name", "feature_type"]].to_csv(
        sep="\t", header=False, index=False, lineterminator="\n"
    )
    _gz_bytes(folder / "features.tsv.gz", feat.encode())
    _gz_bytes(folder / "barcodes.tsv.gz", ("\n".join(barcodes) + "\n").encode())


def _write_library(lib: Library, outdir: Path) -> None:
    lp = lib.plan
    folder = outdir / lp.sample
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if lp.gex_format == "h5":
        write_10x_h5(
            lib.counts, outdir / lp.gex_relpath, barcodes=lib.barcodes, features=lib.features,
            library_id=lp.sample,
        )
    else:
        write_10x_mtx(lib.counts, outdir / lp.gex_relpath, barcodes=lib.barcodes,
                      features=lib.features)
    sep = "\t" if lp.vdj_format == "airr" else ","
    lib.vdj.to_csv(outdir / lp.vdj_relpath, sep=sep, index=False, lineterminator="\n")


def _remove_stale(outdir: Path, samples: list[str]) -> None:
    keep = set(samples)
    if not outdir.is_dir():
        return
    for child in sorted(outdir.iterdir()):
        is_lib = child.is_dir() and (
            (child / "filtered_feature_bc_matrix.h5").exists()
            or (child / "filtered_feature_bc_matrix").is_dir()
        )
        if is_lib and child.name not in keep:
            log.info("removing stale demo library %s", child)
            shutil.rmtree(child)


def _write_tables(
    outdir: Path,
    *,
    samples: pd.DataFrame,
    clinical: pd.DataFrame,
    truth_cells: pd.DataFrame,
    truth_patients: pd.DataFrame,
    truth_clones: pd.DataFrame,
    config_dir: str | os.PathLike | None,
) -> None:
    write_table(samples, outdir / "samples.tsv")
    write_table(clinical, outdir / "clinical.tsv")
    write_table(truth_cells, outdir / "truth_cells.tsv")
    write_table(truth_patients, outdir / "truth_patients.tsv")
    write_table(truth_clones, outdir / "truth_clones.tsv.gz")
    if config_dir is not None:
        cdir = Path(config_dir)
        cdir.mkdir(parents=True, exist_ok=True)
        rel = Path(os.path.relpath(outdir.resolve(), cdir.resolve()))
        sheet = samples.copy()
        for col in ("gex", "vdj"):
            sheet[col] = [(rel / p).as_posix() if p else "" for p in sheet[col]]
        write_table(sheet, cdir / "samples.tsv")
        write_table(clinical, cdir / "clinical.tsv")


def write_cohort(
    cohort: Cohort, outdir: str | os.PathLike, *, config_dir: str | os.PathLike | None = None
) -> None:
    """Write a simulated cohort to disk.

    Parameters
    ----------
    cohort
        Output of :func:`simulate_cohort`.
    outdir
        Cohort folder (e.g. ``resources/demo``); per-library folders ``<sample>/``,
        ``samples.tsv``, ``clinical.tsv``, ``truth_*.tsv`` are written into it.
        Library folders of samples not in this cohort are removed.
    config_dir
        If given, also write ``samples.tsv`` and ``clinical.tsv`` there with paths
        relative to it.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out, list(cohort.samples["sample"]))
    for lib in cohort.libraries:
        _write_library(lib, out)
    _write_tables(
        out,
        samples=cohort.samples,
        clinical=cohort.clinical,
        truth_cells=cohort.truth_cells,
        truth_patients=cohort.truth_patients,
        truth_clones=cohort.truth_clones,
        config_dir=config_dir,
    )


def write_demo_cohort(
    outdir: str | os.PathLike,
    *,
    seed: int,
    config_dir: str | os.PathLike | None = None,
    **kwargs: object,
) -> dict[str, int]:
    """Simulate and write a cohort one library at a time (constant memory).

    Same files as ``write_cohort(simulate_cohort(seed=seed, **kwargs), outdir)``.

    Parameters
    ----------
    outdir
        Cohort folder.
    seed
        Master seed.
    config_dir
        If given, also write sheets with paths relative to it.
    **kwargs
        Any :class:`SimParams` field.

    Returns
    -------
    dict
        ``n_libraries``, ``n_cells``, ``n_contigs``.
    """
    gen = _Generator(_make_params(seed, kwargs))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    samples = gen.samples()
    _remove_stale(out, list(samples["sample"]))
    truths = []
    n_contigs = 0
    for lib in gen.libraries():
        _write_library(lib, out)
        truths.append(lib.truth)
        n_contigs += len(lib.vdj)
    truth_cells = pd.concat(truths, ignore_index=True)
    _write_tables(
        out,
        samples=samples,
        clinical=gen.clinical,
        truth_cells=truth_cells,
        truth_patients=gen.truth_patients(truth_cells),
        truth_clones=gen.truth_clones(),
        config_dir=config_dir,
    )
    return {"n_libraries": len(samples), "n_cells": len(truth_cells), "n_contigs": n_contigs}
