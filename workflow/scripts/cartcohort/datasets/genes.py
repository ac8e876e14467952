"""The simulated gene vocabulary: state programs, lineage, housekeeping and TCR genes.

Fixed tables, independent of the cohort seed; :mod:`.panel` puts them into the real gene space
(:mod:`.background`) as the genes whose expression the simulated biology drives.
"""

from __future__ import annotations

from .. import vocab
from ._utils import gex_symbol

STATES: tuple[str, ...] = vocab.STATES
MEMORY_LIKE: tuple[str, ...] = vocab.MEMORY_LIKE

STATE_UP: dict[str, tuple[str, ...]] = {
    "naive_tscm": ("CCR7", "SELL", "TCF7", "LEF1", "IL7R", "CD27", "CD28", "FAS", "CXCR3", "IL2RB"),
    "tcm": ("CCR7", "SELL", "IL7R", "CD27", "CD28", "S100A4", "ANXA1", "LTB", "AQP3"),
    # CCL5, GZMA and CST7 are high in both GZMK+ effector-memory and cytotoxic effector
    # (CTL) cells of CAR-T products (Haradhvala 2022; Good 2022)
    "tem": ("GZMK", "CCL5", "CCL4", "KLRB1", "CXCR4", "EOMES", "CD44", "GZMA", "CST7"),
    "teff": ("GZMB", "PRF1", "GNLY", "NKG7", "KLRG1", "CX3CR1", "FGFBP2", "GZMH", "CCL5",
             "GZMA", "CST7"),
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
# Gamma-delta segments (IMGT functional genes, 10x spelling), roughly by usage in blood.
TRGV: tuple[str, ...] = ("TRGV9", "TRGV8", "TRGV2", "TRGV4", "TRGV3", "TRGV5")
TRDV: tuple[str, ...] = ("TRDV2", "TRDV1", "TRDV3")
# Real J-region motifs of the human TRGJ and TRDJ genes (end of the junction, ending in F);
# TRGJP, TRGJP1 and TRGJ1 splice to TRGC1, TRGJP2 and TRGJ2 to TRGC2.
TRGJ_MOTIF: dict[str, str] = {
    "TRGJP": "QELGKKIKVF", "TRGJ1": "YYKKLF", "TRGJ2": "YYKKLF", "TRGJP1": "TTGWFKIF",
    "TRGJP2": "SSDWIKTF",
}
TRGC_OF_J: dict[str, str] = {
    "TRGJP": "TRGC1", "TRGJP1": "TRGC1", "TRGJ1": "TRGC1", "TRGJP2": "TRGC2", "TRGJ2": "TRGC2",
}
TRDJ_MOTIF: dict[str, str] = {
    "TRDJ1": "TDKLIF", "TRDJ3": "SWDTRQMFF", "TRDJ2": "LTAQLFF", "TRDJ4": "RPLIF",
}
TRDD: tuple[str, ...] = ("TRDD3", "TRDD2", "TRDD1")
# Expression profiles of the lineages (rows of ``GenePanel.lineage``): gamma-delta cells
# are CD4-; a third of gamma-delta clones carry CD8 alpha-alpha (CD8A without CD8B).
# Double-negative clones have the CD8-like transcriptional program, a quarter of them the
# CD4-like one (DN_cd4like): on a real CAR-T cohort with authors' labels (issue 25), a
# kNN rule put 70 % of the DN cells with CD8 cells and 21 % with CD4 cells.
LINEAGE_PROFILES: tuple[str, ...] = ("CD4", "CD8", "DN", "DN_cd4like", "gd", "gd_cd8aa")
#: Share of double-negative clones with the CD4-like program (see LINEAGE_PROFILES).
DN_CD4_LIKE = 0.25
TCR_CONSTANT: dict[str, float] = {
    "TRAC": 0.6, "TRBC1": 0.6, "TRBC2": 0.6, "TRDC": 0.08, "TRGC1": 0.05, "TRGC2": 0.08,
}
# Every gamma-delta V and J segment is a GEX feature (as in GRCh38 Cell Ranger references).
GD_SEGMENTS: tuple[str, ...] = TRGV + tuple(TRGJ_MOTIF) + TRDV + tuple(TRDJ_MOTIF)
CAR_FEATURE = "CAR"
OTHER_GENES: tuple[str, ...] = (
    # other immune genes worth having (MAIT, gd, NK-like, activation)
    "GZMA", "CD69", "IL32", "IFNG", "TNF", "SLC4A10", "ZBTB16", "KLRD1", "FCGR3A",
    "NCAM1", "ITGAE", "CD38", "HLA-DRA", "TBX21", "PRDM1", "BATF", "IRF4", "CD7", "CD5",
    "CD6", "LCK", "ZAP70", "ITK", "CD96", "KLRF1",
)

# Symbols that GRCh38 Cell Ranger references carry twice (two gene ids, one name).
DUPLICATED_SYMBOLS: tuple[str, ...] = (
    "TBCE", "MATR3", "GOLGA8M", "CYB561D2", "HSPA14", "PDE11A", "ARMCX5-GPRASP2",
    "TMSB15B", "POLR2J3", "LINC01505", "GGT1", "LINC01238",
)


def core_symbols() -> list[str]:
    """The panel's core genes (every table above, TCR genes in GEX spelling), first seen first."""
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
    out.extend(GD_SEGMENTS)
    out.extend(RIBO_GENES)
    out.extend(MITO_GENES)
    return list(dict.fromkeys(out))

