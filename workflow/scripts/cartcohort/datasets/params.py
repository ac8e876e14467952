"""The simulator's settings: :class:`SimParams` and the check of unknown keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from ..errors import CartCohortError

GexFormat = Literal["mixed", "h5", "mtx"]
Chemistry = Literal["5prime", "3prime"]

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
    n_background_genes
        ``None`` (default): the full real gene space (about 30,800 features). A number keeps
        only that many of the most abundant background genes: for fast tests of the
        mechanics, never for figures.
    median_umis
        Median UMIs per good cell (real 10x v3/5' v2 T cells: about 4,000-5,000, which
        gives about 1,600 detected genes).
    chemistry
        ``5prime`` or ``3prime``: sets the CAR detection rate (0.65 or 0.35 of CAR+ cells
        with >= 1 CAR UMI at the median library size). The NB size of the per-cell CAR
        UMIs is fitted to real sorted CAR+ cells (``data/fit.json``, ``car``).
    car_detection
        Overrides the chemistry's CAR detection rate (``None``: use the chemistry's).
        ``background.car_fitted_detection()`` (0.84) reproduces the real sorted day-7
        CAR+ cells the NB was fitted to.
    frac_dn
        Mean share of double-negative (CD4- CD8-) alpha-beta T cells in a product; each
        patient draws its own share (beta, concentration 40: 10-30 % for most patients).
        DN clones lean to effector-memory and effector states; blood-only clones are DN
        half as often.
    frac_gd
        Mean share of gamma-delta T cells in a product (per-patient beta, concentration 25:
        1-20 %); they lean to effector and effector-memory states.
    gd_contigs
        Whether gamma-delta cells have TRG and TRD contigs in the contig tables. Off by
        default, as Cell Ranger's default (alpha-beta) V(D)J mode does not report them:
        gamma-delta cells then have no contig at all.
    ambient_fraction
        Mean share of a cell's UMIs from the library's ambient RNA (beta-distributed).
    patient_gene_fraction, patient_sd
        Fraction of background genes with a per-patient expression shift, and its log SD.
    state_mixing
        Mean weight of the neighbouring state in a cell's program (states form a continuum;
        a weight near 0.5 is a truly ambiguous cell).
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
        Largest share of a blood library's non-Treg cells drawn from the planted
        (expanded and null) product clones (:mod:`~cartcohort.datasets.kinetics`).
    airr_every
        Every ``airr_every``-th library (index ``i % airr_every == 3``) writes AIRR TSV.
    gex_format
        ``mixed`` (even library index: Cell Ranger HDF5, odd: mtx folder), ``h5`` or ``mtx``.
    """

    seed: int
    n_patients: int = 20
    min_cells: int = 150
    max_cells: int = 450
    frac_longitudinal: float = 0.1
    n_batches: int = 3
    n_background_genes: int | None = None
    median_umis: float = 4500.0
    chemistry: Chemistry = "5prime"
    car_detection: float | None = None
    ambient_fraction: float = 0.03
    patient_gene_fraction: float = 0.05
    patient_sd: float = 0.25
    state_mixing: float = 0.15
    doublet_rate: float = 0.05
    low_quality_rate: float = 0.05
    no_tcr_rate: float = 0.03
    tcr_only_barcode_rate: float = 0.02
    clone_pool_size: int = 2000
    batch_gene_fraction: float = 0.2
    batch_sd: float = 0.5
    stray_rate: float = 0.15
    new_clone_rate: float = 0.4
    persistent_share: float = 0.7
    airr_every: int = 20
    gex_format: GexFormat = "mixed"
    frac_dn: float = 0.15
    frac_gd: float = 0.06
    gd_contigs: bool = False

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
            "frac_longitudinal", "doublet_rate", "patient_gene_fraction", "low_quality_rate",
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
        if self.n_background_genes is not None and self.n_background_genes < 0:
            problems.append(f"n_background_genes must be >= 0, got {self.n_background_genes}")
        if self.chemistry not in ("5prime", "3prime"):
            problems.append(f"chemistry must be 5prime or 3prime, got {self.chemistry!r}")
        if self.car_detection is not None and not 0.0 < self.car_detection < 1.0:
            problems.append(f"car_detection must be in (0, 1), got {self.car_detection}")
        if not 0.0 < self.ambient_fraction < 0.5:
            problems.append(f"ambient_fraction must be in (0, 0.5), got {self.ambient_fraction}")
        if not 0.0 <= self.state_mixing < 0.5:
            problems.append(f"state_mixing must be in [0, 0.5), got {self.state_mixing}")
        problems.extend(self._lineage_problems())
        if problems:
            raise CartCohortError(
                "Invalid simulator settings: " + "; ".join(problems) + ". Fix the arguments."
            )

    def _lineage_problems(self) -> list[str]:
        """What is wrong with ``frac_dn``, ``frac_gd`` and ``gd_contigs``."""
        problems = []
        for name in ("frac_dn", "frac_gd"):
            v = getattr(self, name)
            if not 0.0 <= v <= 0.5:
                problems.append(f"{name} must be in [0, 0.5], got {v}")
        if self.frac_dn + self.frac_gd > 0.6:
            problems.append("frac_dn + frac_gd must be <= 0.6")
        if not isinstance(self.gd_contigs, bool):
            problems.append(f"gd_contigs must be True or False, got {self.gd_contigs!r}")
        return problems


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
