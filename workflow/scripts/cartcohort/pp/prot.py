"""Surface protein (CITE-seq antibody-derived tags, ADT): panel mapping, QC, normalisation.

- **Panel mapping** (:func:`load_alias_table`, :func:`map_panel`): antibody names are
  normalised (:func:`normalise_antibody_name`: whitespace and a vendor suffix such as
  ``_PROT`` removed, case and punctuation ignored) and looked up in the versioned alias
  table ``resources/protein/adt_aliases.yaml`` plus the user's extra aliases; isotype
  controls are recognised by pattern. Unmapped antibodies are listed, never dropped.
- **QC** (:func:`adt_qc`): per cell the total ADT counts, detected antibodies and isotype
  counts; cells without usable protein signal are flagged and kept.
- **Normalisation**: dsb (:func:`dsb`; Mulè, Martins & Tsang, Nat Commun 2022) when the
  library's empty droplets (Cell Ranger ``raw_feature_bc_matrix``) are available, per-cell
  CLR (:func:`clr`, Stoeckius et al. 2017, Seurat flavour) otherwise
  (:func:`normalise_adt` records the method). :func:`dsb` follows muon's
  ``prot.pp.dsb`` (same steps and defaults) with a deterministic, vectorised EM for the
  per-cell two-component mixture, so it is reproducible and fast; the test suite
  compares it with muon on real data.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import CartCohortError
from ..yaml_file import read_yaml_file

logger = logging.getLogger(__name__)

NormMethod = Literal["dsb", "clr"]

#: Columns of :func:`map_panel`.
PANEL_COLUMNS = ("antibody", "key", "marker", "isotype")


@dataclass(frozen=True)
class AliasTable:
    """Antibody-name aliases (``resources/protein/adt_aliases.yaml``).

    Attributes
    ----------
    version, source
        Table version and file.
    aliases
        Normalised name -> marker.
    isotype_patterns
        Regular expressions (on normalised names) of isotype controls.
    strip_suffixes
        Upper-case suffixes removed from names before lookup.
    """

    version: str
    source: str
    aliases: Mapping[str, str]
    isotype_patterns: tuple[str, ...]
    strip_suffixes: tuple[str, ...]


def _squash(name: str) -> str:
    return re.sub(r"[\s\-_.]", "", name).upper()


def normalise_antibody_name(name: str, *, strip_suffixes: Sequence[str] = ()) -> str:
    """The lookup key of an antibody name.

    Whitespace anywhere is removed, then a trailing ``_SUFFIX`` / ``-SUFFIX`` /
    ``.SUFFIX`` in ``strip_suffixes`` (case-insensitive, repeatedly), then the name is
    upper-cased without ``-``, ``_`` and ``.``: ``"CD278 _PROT"`` -> ``"CD278"``,
    ``"PD-1"`` -> ``"PD1"``.
    """
    out = re.sub(r"\s+", "", str(name))
    suffixes = [s.upper() for s in strip_suffixes]
    changed = True
    while changed and suffixes:
        changed = False
        for suffix in suffixes:
            m = re.match(rf"^(.+)[_\-.]{re.escape(suffix)}$", out, flags=re.IGNORECASE)
            if m:
                out, changed = m.group(1), True
    return _squash(out)


def _alias_problem(src: str, where: str, what: str) -> CartCohortError:
    return CartCohortError(f"{src}: {where}: {what}. Fix: give 'markers' as a mapping "
                           "marker -> list of antibody names (strings)")


def _add_aliases(out: dict[str, str], markers: object, *, src: str,
                 strip_suffixes: Sequence[str], override: bool) -> None:
    if not isinstance(markers, Mapping):
        raise _alias_problem(src, "markers", "not a mapping")
    for marker, names in markers.items():
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise _alias_problem(src, f"marker '{marker}'", "names are not a list")
        for name in [marker, *names]:
            key = normalise_antibody_name(str(name), strip_suffixes=strip_suffixes)
            if not key:
                raise _alias_problem(src, f"marker '{marker}'", f"empty name {name!r}")
            if key in out and out[key] != str(marker) and not override:
                raise CartCohortError(
                    f"{src}: name {name!r} (key {key}) is an alias of both "
                    f"'{out[key]}' and '{marker}'. Fix: keep it under one marker")
            out[key] = str(marker)


def load_alias_table(path: str | Path, *,
                     extra_aliases: Mapping[str, Sequence[str]] | None = None) -> AliasTable:
    """Read the alias table and add the user's aliases (which win over the table's).

    Parameters
    ----------
    path
        ``resources/protein/adt_aliases.yaml`` (``version``, ``strip_suffixes``,
        ``isotype_patterns``, ``markers``: marker -> list of names).
    extra_aliases
        ``config['protein']['extra_aliases']``: marker -> list of antibody names.

    Raises
    ------
    CartCohortError
        Missing keys, a name listed under two markers, an invalid pattern.
    """
    data, src = read_yaml_file(path, setting="protein.alias_table")
    if not isinstance(data, Mapping) or "markers" not in data or "version" not in data:
        raise CartCohortError(f"{src}: needs keys 'version' and 'markers'. Fix: start from "
                              "resources/protein/adt_aliases.yaml")
    suffixes = tuple(str(s).upper() for s in data.get("strip_suffixes") or ())
    patterns = tuple(str(p) for p in data.get("isotype_patterns") or ())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise CartCohortError(f"{src}: isotype_patterns: {pattern!r} is not a regular "
                                  f"expression ({err}). Fix the pattern") from None
    aliases: dict[str, str] = {}
    _add_aliases(aliases, data["markers"], src=src, strip_suffixes=suffixes, override=False)
    if extra_aliases:
        _add_aliases(aliases, extra_aliases, src="config protein.extra_aliases",
                     strip_suffixes=suffixes, override=True)
    return AliasTable(version=str(data["version"]), source=src, aliases=aliases,
                      isotype_patterns=patterns, strip_suffixes=suffixes)


def map_panel(antibodies: Sequence[str], *, table: AliasTable) -> pd.DataFrame:
    """Map a panel's antibody names to markers.

    Returns
    -------
    pandas.DataFrame
        One row per antibody: ``antibody`` (as named in the panel), ``key`` (normalised),
        ``marker`` (empty when unmapped or an isotype control), ``isotype``.

    Raises
    ------
    CartCohortError
        Two antibodies of the panel map to one marker.
    """
    rows = []
    for ab in antibodies:
        key = normalise_antibody_name(ab, strip_suffixes=table.strip_suffixes)
        iso = any(re.search(p, key, flags=re.IGNORECASE) for p in table.isotype_patterns)
        marker = "" if iso else table.aliases.get(key, "")
        rows.append((str(ab), key, marker, bool(iso)))
    panel = pd.DataFrame(rows, columns=list(PANEL_COLUMNS))
    mapped = panel[panel["marker"] != ""]
    dup = mapped[mapped["marker"].duplicated(keep=False)]
    if len(dup):
        raise CartCohortError(
            "the ADT panel has several antibodies for one marker: "
            + "; ".join(f"{m}: {', '.join(g['antibody'])}" for m, g in dup.groupby("marker"))
            + ". Fix: keep one antibody per marker (or rename one in protein.extra_aliases)")
    return panel


def unmapped_antibodies(panel: pd.DataFrame) -> list[str]:
    """Antibodies of :func:`map_panel` that are neither a known marker nor an isotype."""
    return panel.loc[(panel["marker"] == "") & ~panel["isotype"], "antibody"].tolist()


def _dense(x: object) -> np.ndarray:
    arr = x.toarray() if sparse.issparse(x) else np.asarray(x)
    return np.asarray(arr, dtype=np.float64)


def adt_qc(counts: object, *, isotype: Sequence[bool], min_total: int = 20,
           min_detected: int = 3, max_isotype_fraction: float = 0.5) -> pd.DataFrame:
    """Per-cell ADT QC: counts, detected antibodies, isotype levels, usable signal.

    Parameters
    ----------
    counts
        Cells x antibodies raw ADT counts.
    isotype
        Per antibody: an isotype control.
    min_total, min_detected
        A cell with fewer total non-isotype ADT counts or fewer detected (count > 0)
        non-isotype antibodies has no usable protein signal.
    max_isotype_fraction
        A cell whose isotype counts exceed this fraction of its total is flagged too
        (non-specific binding, e.g. dead cells).

    Returns
    -------
    pandas.DataFrame
        ``adt_total_counts``, ``adt_n_detected``, ``adt_isotype_counts``,
        ``adt_isotype_fraction``, ``adt_usable`` (the cell is kept either way).
    """
    x = _dense(counts)
    iso = np.asarray(isotype, dtype=bool)
    if iso.size != x.shape[1]:
        raise CartCohortError(f"adt_qc: {iso.size} isotype flags for {x.shape[1]} antibodies")
    total_all = x.sum(axis=1)
    specific = x[:, ~iso]
    total = specific.sum(axis=1)
    iso_counts = x[:, iso].sum(axis=1)
    frac = np.divide(iso_counts, total_all, out=np.zeros_like(iso_counts),
                     where=total_all > 0)
    detected = (specific > 0).sum(axis=1)
    usable = (total >= min_total) & (detected >= min_detected) & (frac <= max_isotype_fraction)
    return pd.DataFrame({"adt_total_counts": total_all.astype(np.int64),
                         "adt_n_detected": detected.astype(np.int64),
                         "adt_isotype_counts": iso_counts.astype(np.int64),
                         "adt_isotype_fraction": frac, "adt_usable": usable})


@dataclass(frozen=True)
class TwoGaussians:
    """Two-component 1-D Gaussian mixtures fitted row by row (:func:`fit_two_gaussians`).

    Arrays have one entry per row (``means``/``variances``/``weights``: rows x 2,
    component 0 the lower mean).
    """

    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray
    loglik: np.ndarray
    n: int
    tied: bool

    def bic(self) -> np.ndarray:
        """Bayesian information criterion per row (sklearn's parameter count)."""
        k = 4 if self.tied else 5
        return -2.0 * self.loglik + k * np.log(self.n)

    def separation(self) -> np.ndarray:
        """Ashman's D: ``sqrt(2)|mu1 - mu0| / sqrt(s0^2 + s1^2)`` (> 2: clean bimodality)."""
        return (np.sqrt(2.0) * np.abs(self.means[:, 1] - self.means[:, 0])
                / np.sqrt(self.variances.sum(axis=1)))


def _log_normal(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def _component_logp(x: np.ndarray, mu: np.ndarray, var: np.ndarray,
                    w: np.ndarray) -> np.ndarray:
    return np.stack([np.log(w[:, k:k + 1]) + _log_normal(x, mu[:, k:k + 1], var[:, k:k + 1])
                     for k in (0, 1)], axis=-1)


def fit_two_gaussians(x: np.ndarray, *, tied: bool, max_iter: int = 100, tol: float = 1e-4,
                      reg: float = 1e-6) -> TwoGaussians:
    """Fit a two-component Gaussian mixture to every row of ``x`` by EM (vectorised).

    Deterministic start: the components at the 25th and 75th percentile of the row, the
    row's variance halved (no random numbers). ``tied`` shares one variance. ``reg`` is
    added to variances (as sklearn's ``reg_covar``). Stops when no row's mean
    log-likelihood changes by more than ``tol``.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n_rows, n = x.shape
    mu = np.quantile(x, [0.25, 0.75], axis=1).T.copy()
    var = np.repeat(x.var(axis=1, keepdims=True) / 2 + reg, 2, axis=1)
    w = np.full((n_rows, 2), 0.5)
    prev = np.full(n_rows, -np.inf)
    for _ in range(max_iter):
        logp = _component_logp(x, mu, var, w)
        ll = np.logaddexp(logp[..., 0], logp[..., 1])
        resp = np.exp(logp - ll[..., None])
        nk = resp.sum(axis=1) + 10 * np.finfo(float).eps
        w = nk / n
        mu = np.einsum("rn,rnk->rk", x, resp) / nk
        sq = np.einsum("rnk,rnk->rk", resp, (x[..., None] - mu[:, None, :]) ** 2)
        var = (np.repeat(sq.sum(axis=1, keepdims=True) / n, 2, axis=1) if tied
               else sq / nk) + reg
        mean_ll = ll.mean(axis=1)
        if np.all(np.abs(mean_ll - prev) < tol):
            break
        prev = mean_ll
    ll = np.logaddexp(*np.moveaxis(_component_logp(x, mu, var, w), -1, 0)).sum(axis=1)
    order = np.argsort(mu, axis=1)
    take = np.take_along_axis
    return TwoGaussians(means=take(mu, order, 1), variances=take(var, order, 1),
                        weights=take(w, order, 1), loglik=ll, n=n, tied=tied)


def _background_means(scaled: np.ndarray) -> np.ndarray:
    """dsb step II: per cell, the lower mean of the two-component mixture (tied or free
    variance, whichever has the lower BIC) over its antibodies."""
    shared = fit_two_gaussians(scaled, tied=True)
    free = fit_two_gaussians(scaled, tied=False)
    use_shared = shared.bic() < free.bic()
    return np.where(use_shared, shared.means[:, 0], free.means[:, 0])


def dsb(counts: object, *, empty_counts: object, isotype: Sequence[bool],
        pseudocount: float = 10.0, denoise: bool = True) -> np.ndarray:
    """dsb normalisation (Mulè et al. 2022), as muon's ``prot.pp.dsb`` (standardize).

    Step I: ``log(x + pseudocount)`` of cells, centred and scaled by the mean and SD
    (ddof 1) of each antibody in the empty droplets. Step II (``denoise``): per cell the
    background mean ``mu`` of a two-component mixture over its antibodies; the first
    principal component (whitened) of ``mu`` and the isotype controls is the technical
    covariate, regressed out of every antibody (the intercept kept).

    Parameters
    ----------
    counts, empty_counts
        Raw ADT counts of cells and of empty droplets (same antibodies, same order).
    isotype
        Per antibody: an isotype control (none: ``mu`` alone is the covariate).

    Returns
    -------
    numpy.ndarray
        Cells x antibodies dsb values.
    """
    cells, empty = _dense(counts), _dense(empty_counts)
    if cells.shape[1] != empty.shape[1]:
        raise CartCohortError(f"dsb: {cells.shape[1]} antibodies in the cells but "
                              f"{empty.shape[1]} in the empty droplets. Fix: use the raw "
                              "matrix of the same library")
    if empty.shape[0] < 2:
        raise CartCohortError("dsb: fewer than 2 empty droplets")
    log_empty = np.log(empty + pseudocount)
    sd = log_empty.std(axis=0, ddof=1)
    sd[sd == 0] = 1.0
    scaled = (np.log(cells + pseudocount) - log_empty.mean(axis=0)) / sd
    if not denoise:
        return scaled
    mu = _background_means(scaled)
    iso = np.asarray(isotype, dtype=bool)
    if iso.any():
        block = np.column_stack([scaled[:, iso], mu])
        block = block - block.mean(axis=0)
        u = np.linalg.svd(block, full_matrices=False)[0]
        covar = u[:, 0] * np.sqrt(block.shape[0] - 1)
    else:
        covar = mu
    centred = covar - covar.mean()
    beta = centred @ (scaled - scaled.mean(axis=0)) / (centred @ centred)
    return scaled - np.outer(covar, beta)


def clr(counts: object) -> np.ndarray:
    """Per-cell centred log-ratio (Seurat flavour, muon ``clr(axis=1)``):
    ``log1p(x / exp(mean_j log1p(x_j)))`` over the antibodies of each cell."""
    x = _dense(counts)
    return np.log1p(x / np.exp(np.log1p(x).mean(axis=1, keepdims=True)))


@dataclass(frozen=True)
class NormalisedAdt:
    """Output of :func:`normalise_adt`: ``values`` (cells x antibodies), the ``method``
    used and a ``note`` (why CLR, how many empty droplets)."""

    values: np.ndarray
    method: NormMethod
    note: str


def normalise_adt(counts: object, *, empty_counts: object | None, isotype: Sequence[bool],
                  library: str, pseudocount: float = 10.0,
                  min_empty_droplets: int = 100) -> NormalisedAdt:
    """dsb when the library's empty droplets are available (at least
    ``min_empty_droplets``), per-cell CLR otherwise; the method and why are recorded."""
    n_empty = 0 if empty_counts is None else int(np.shape(empty_counts)[0])
    if n_empty >= min_empty_droplets:
        values = dsb(counts, empty_counts=empty_counts, isotype=isotype,
                     pseudocount=pseudocount)
        note = f"dsb with {n_empty} empty droplets and {int(np.sum(isotype))} isotype controls"
        return NormalisedAdt(values, "dsb", note)
    why = ("no raw matrix (raw_feature_bc_matrix) found" if empty_counts is None
           else f"only {n_empty} empty droplets (< {min_empty_droplets})")
    note = f"{library}: {why}; per-cell CLR instead of dsb"
    logger.warning(note)
    return NormalisedAdt(clr(counts), "clr", note)


def check_car_adt(car_adt: str, *, antibodies: Sequence[str], setting: str,
                  where: str = "") -> None:
    """Refuse an anti-CAR antibody name absent from the panel, naming the closest names
    (``where``: the library and file, for the message)."""
    if not car_adt or car_adt in antibodies:
        return
    close = difflib.get_close_matches(car_adt, list(antibodies), n=3, cutoff=0.3)
    hint = f"closest antibody names: {', '.join(close)}" if close else "no similar name"
    raise CartCohortError(f"{setting}: antibody '{car_adt}' is not in the ADT panel"
                          f"{f' of {where}' if where else ''} ({hint}). Fix: set {setting} "
                          "to one of the panel's antibody names, or to '' when the panel "
                          "has no anti-CAR reagent")


@dataclass
class ProteinLibrary:
    """Output of :func:`protein_library`.

    Attributes
    ----------
    qc
        Per cell :func:`adt_qc`.
    values
        Cells x markers normalised values of the mapped antibodies (columns: marker
        names; the anti-CAR antibody as ``CAR``).
    panel
        :func:`map_panel` of the library's antibodies.
    method
        ``dsb`` or ``clr``.
    notes
        Why CLR, unmapped antibodies.
    """

    qc: pd.DataFrame
    values: pd.DataFrame
    panel: pd.DataFrame
    method: NormMethod
    notes: list[str]


def protein_library(counts: object, *, cells: Sequence[str], antibodies: Sequence[str],
                    empty_counts: object | None, table: AliasTable, library: str,
                    car_adt: str = "", min_total: int = 20, min_detected: int = 3,
                    max_isotype_fraction: float = 0.5, pseudocount: float = 10.0,
                    min_empty_droplets: int = 100) -> ProteinLibrary:
    """Panel mapping, QC and normalisation of one library's ADT counts.

    Parameters
    ----------
    counts, cells, antibodies
        Cells x antibodies raw counts, cell ids, antibody names (panel order).
    empty_counts
        Empty droplets x the same antibodies (from the raw matrix,
        :func:`cartcohort.io.adt.read_empty_droplets`), or None: CLR.
    table
        :func:`load_alias_table`.
    library
        Library id (notes).
    car_adt
        The anti-CAR antibody's name in the panel (``''``: none); refused when absent.
    min_total, min_detected, max_isotype_fraction
        :func:`adt_qc`.
    pseudocount, min_empty_droplets
        :func:`normalise_adt`.
    """
    names = [str(a) for a in antibodies]
    check_car_adt(car_adt, antibodies=names, setting="protein.car_adt")
    panel = map_panel(names, table=table)
    if car_adt:
        panel.loc[panel["antibody"] == car_adt, ["marker", "isotype"]] = ["CAR", False]
    iso = panel["isotype"].to_numpy()
    qc = adt_qc(counts, isotype=iso, min_total=min_total, min_detected=min_detected,
                max_isotype_fraction=max_isotype_fraction)
    qc.index = pd.Index(cells, dtype=object)
    norm = normalise_adt(counts, empty_counts=empty_counts, isotype=iso, library=library,
                         pseudocount=pseudocount, min_empty_droplets=min_empty_droplets)
    notes = [] if norm.method == "dsb" else [norm.note]
    unmapped = unmapped_antibodies(panel)
    if unmapped:
        notes.append(f"{library}: {len(unmapped)} antibodies not in the alias table (kept "
                     f"in the counts, not used for calls): {', '.join(unmapped)}. Fix: add "
                     "them to protein.extra_aliases if they name a marker")
    mapped = (panel["marker"] != "").to_numpy()
    values = pd.DataFrame(norm.values[:, mapped], index=qc.index,
                          columns=panel.loc[mapped, "marker"].tolist())
    logger.info("%s: %d cells x %d antibodies (%d mapped, %d isotype), %s; %d cells "
                "without usable protein signal", library, len(qc), len(names),
                int(mapped.sum()), int(iso.sum()), norm.method, int((~qc["adt_usable"]).sum()))
    return ProteinLibrary(qc=qc, values=values, panel=panel, method=norm.method, notes=notes)
