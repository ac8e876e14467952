"""Gene classes that no analysis step treats as biology: V(D)J, mitochondrial, ribosomal
and CAR genes (kept out of the HVGs and of pseudobulk DE).

A module of its own, without heavy imports, so that every step's environment can use it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import pandas as pd

logger = logging.getLogger(__name__)

# Gene classes kept out of the HVGs. Matched case-insensitively on gene symbols
# (human upper case, mouse title case). Patterns are anchored and specific so that
# look-alikes (TRADD, RPS6KA1, IGLON5, IGHMBP2) are NOT excluded.
EXCLUDE_PATTERNS: dict[str, str] = {
    # TCR V/D/J segments (TRAV1-2, TRBV12-3, TRDD1, Trav13-4-dv7) and constants
    # (TRAC, TRBC1, TRBC2, TRDC, TRGC1).
    "tcr_vdj": r"^TR[ABDG][VDJ]\d|^TR[ABDG]C\d*$",
    # BCR V/D/J segments (IGHV1-69, IGKV1D-39, IGLV3-21) and constants (IGKC, IGLC2,
    # IGHM, IGHD, IGHE, IGHG1-4, IGHA1/2, mouse Ighg2b/Ighg2c/Igha).
    "bcr_vdj": r"^IG[HKL][VDJ]\d|^IG[KL]C\d*$|^IGH[MDE]$|^IGH[GA]\d*[A-Z]?$",
    "mito": r"^MT-",
    # Cytosolic and mitochondrial ribosomal proteins (RPL10A, RPS4X, RPLP0, RPSA,
    # MRPL12, MRPS18A) - not the kinases RPS6KA*/RPS6KB*.
    "ribo": r"^RP[LS]\d+[A-Z]?\d*$|^RPLP\d$|^RPSA$|^MRP[LS]\d+[A-Z]?\d*$",
}



def gene_exclusions(
    var: pd.DataFrame,
    *,
    extra: Sequence[str] = (),
    car_key: str = "is_car",
) -> pd.Series:
    """Why each gene is kept out of the HVGs (empty string: eligible).

    Parameters
    ----------
    var
        Gene table indexed by gene symbol (``var`` of the AnnData).
    extra
        Further gene symbols to exclude (``integrate.exclude_genes``), exact match.
    car_key
        Boolean ``var`` column flagging CAR transgene features (absent: none).

    Returns
    -------
    pandas.Series
        Indexed like ``var``: ``""`` or the reason (``tcr_vdj``, ``bcr_vdj``, ``mito``,
        ``ribo``, ``car``, ``config``).
    """
    symbols = pd.Series(var.index.astype(str), index=var.index)
    reason = pd.Series("", index=var.index, dtype=object)
    for name, pattern in EXCLUDE_PATTERNS.items():
        hit = symbols.str.contains(pattern, flags=re.IGNORECASE, regex=True).to_numpy()
        reason[hit & (reason == "").to_numpy()] = name
    if car_key in var:
        car = var[car_key].fillna(False).astype(bool).to_numpy()
        reason[car] = "car"
    extra = [str(g) for g in extra]
    if extra:
        in_data = symbols.isin(extra).to_numpy()
        reason[in_data & (reason == "").to_numpy()] = "config"
        absent = sorted(set(extra) - set(symbols))
        if absent:
            logger.info("integrate.exclude_genes not in the data: %s", ", ".join(absent))
    return reason
