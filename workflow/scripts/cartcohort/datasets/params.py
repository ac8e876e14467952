"""The simulator's settings: :class:`SimParams` and the check of unknown keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from ..errors import CartCohortError
from .genes import filler_pool

GexFormat = Literal["mixed", "h5", "mtx"]

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
    gex_format: GexFormat = "mixed"

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
        n_pool = len(filler_pool())
        if not 0 <= self.n_filler_genes <= n_pool:
            problems.append(f"n_filler_genes must be in [0, {n_pool}], got {self.n_filler_genes}")
        if problems:
            raise CartCohortError(
                "Invalid simulator settings: " + "; ".join(problems) + ". Fix the arguments."
            )


def make_params(seed: int, kwargs: dict[str, object]) -> SimParams:
    """:class:`SimParams` from a seed and keyword arguments; unknown keys raise.

    Raises
    ------
    CartCohortError
        When a keyword is not a :class:`SimParams` field.
    """
    names = {f.name for f in fields(SimParams)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise CartCohortError(
            f"Unknown simulator setting(s) {unknown}. Fix: use one of {sorted(names - {'seed'})}."
        )
    return SimParams(seed=seed, **kwargs)  # type: ignore[arg-type]
