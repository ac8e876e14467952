"""CAR-T cell-state annotation: lineage, memory/exhaustion states, CAR+ cells.

Input is the integrated AnnData of QC-passing cells (``layers['counts']`` raw
UMIs, ``X`` log-normalised, ``obsp['connectivities']`` kNN graph, ``obs['leiden']``)
and the scirpy AIRR AnnData with patient-scoped ``clone_id``. Every call is
added to ``gex.obs``; :func:`cells_table` gives the per-cell table of DESIGN.md.

Methods (all deterministic; no random numbers are drawn)
---------------------------------------------------------
Marker programs
    Read from a versioned YAML file (:func:`load_signatures`, schema in
    ``resources/signatures/t_cell_states.yaml``). Genes absent from the data are
    reported; a program with fewer than :data:`MIN_PRESENT_GENES` ``up`` genes in
    the data is skipped with a warning (:func:`restrict_signatures`).

Latent-class count model (lineage, checkpoint markers, CAR)
    Marker UMI counts ``c`` of cell ``i`` with library size ``L_i`` are modelled
    as a mixture of a *low* state ``Poisson(L_i a)`` (ambient RNA / background)
    and a *high* state ``NegBin(mean L_i b, size r)``, with ``r >= 1`` so the
    evidence for the high state never decreases with the count. Parameters are
    fitted by EM on the data themselves (:func:`fit_latent_classes`): a
    two-component mixture with library-size offset, generalised to
    several genes (lineage: classes CD4/CD8/DN/DP over CD4 and CD8A+CD8B).
    A zero count is therefore weak evidence (``L_i (b - a)`` nats at most), never
    proof of the other lineage.

Neighbourhood pooling
    Dropout is overcome by pooling the per-cell likelihoods over the kNN graph
    (:func:`pool_neighbour_evidence`). How much a neighbour's evidence counts is
    learned, not assumed: ``rho`` = chance-corrected agreement of confident cells
    with their confident neighbours (Cohen's kappa over graph edges). Neighbour
    ``j`` contributes ``w_ij * log(rho * P_j(k) / pi_k + 1 - rho)`` to class ``k``
    of cell ``i`` (``w`` = connectivities). With ``rho = 0`` (neighbourhoods that
    do not share the class) only the cell's own counts are used.

Clone-aware calls
    All cells of a TCR clone share lineage and CAR status. For lineage the
    clone posterior is the prior times the product of the members' (clipped)
    likelihood ratios (:func:`pool_by_clone`). For CAR, members are pooled with a
    dropout-aware model: a CAR+ cell shows zero CAR UMIs with probability
    ``delta`` (estimated by EM over clones), so a clone whose CAR+ members lost
    the transcript is still called from the members that kept it
    (:func:`clone_aware_car`); a clone needs at least one member with
    ``car_min_umis`` UMIs. Cells of samples without a CAR+ population (e.g.
    pre-manufacture apheresis) are left out of CAR pooling. Final calls
    (``cd4_cd8``, ``car_positive``) are clone-aware; the per-cell calls stay in
    ``cd4_cd8_cell`` and ``car_positive_cell``.

CAR+ calls
    Per sample (:func:`fit_car_model`): the mixture above on the summed UMIs of
    the CAR features, offset by the cell's library size (CAR UMIs excluded).
    The ambient rate ``a`` is learned from the cells that are unlikely CAR+. A
    sample has a CAR+ population only if the mixture beats a single Poisson by
    :data:`CAR_MIN_LOGLIK_GAIN` log-likelihood units and ``b >= CAR_MIN_FOLD * a``.
    Per cell (``car_method: mixture``): posterior >= 0.5 *and* at least
    ``car_min_umis`` UMIs (so a cell with no CAR UMI is never CAR+ on its own
    evidence); ``car_method: threshold``: ``car_umis >= car_min_umis``. Without
    any CAR feature all CAR columns are missing (NA), not False.

State scores and calls
    ``score_<state>``: for each program, mean over its ``up`` genes minus
    ``down_weight`` x mean over its ``down`` genes of the standardised,
    kNN-smoothed log expression (:func:`score_states`). Smoothing is one step of
    a lazy random walk on the graph (``smoothing`` = weight of the neighbours).
    Genes are centred and divided by ``sqrt(var + sd_floor**2)`` (a SAM-style
    fudge term): plain z-scores would blow genes without biological variation
    (e.g. TRDC in a cohort without gamma-delta cells) up to the scale of true
    markers and let programs of absent populations win by noise.
    The call is the best-scoring program allowed in the cell's lineage (Treg only
    in CD4 cells: FOXP3+ CD8 T cells are not Tregs in this vocabulary);
    ``state_confidence`` is the margin to the second best; a cell is
    ``unassigned`` when its best score is below ``min_state_score`` or the
    margin below ``min_confidence_margin`` (:func:`call_states`). Optionally the
    majority state of each Leiden cluster replaces the per-cell call
    (``cluster_consensus``; per-cell call kept in ``state_cell``).

Checkpoint-receptor positivity
    ``pd1_pos``, ``tim3_pos``, ``lag3_pos``: the two-state count model of the
    gene (PDCD1, HAVCR2, LAG3 from ``exhaustion_markers``) with neighbourhood
    pooling, positive when the posterior of the high state is >= 0.5;
    ``triple_pos`` = all three.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import yaml
from scipy import optimize, sparse
from scipy.special import expit, gammaln, logsumexp

from .errors import CartCohortError, InputError, Problem

logger = logging.getLogger(__name__)

#: Lineage classes (DESIGN.md vocabulary), in this order everywhere.
LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "DP")
#: Which marker set is "high" in each lineage class (columns: CD4 genes, CD8 genes).
LINEAGE_DESIGN = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
#: State ids of DESIGN.md that a signature file may define.
KNOWN_STATES: tuple[str, ...] = (
    "naive_tscm", "tcm", "tem", "teff", "exhausted", "treg", "proliferating", "gd", "mait",
)
UNASSIGNED = "unassigned"
#: Programs with fewer present ``up`` genes are skipped.
MIN_PRESENT_GENES = 2
#: Exhaustion-marker columns of the cells table.
MARKER_COLUMNS: tuple[str, ...] = ("pd1_pos", "tim3_pos", "lag3_pos")
#: A sample has a CAR+ population only if the mixture improves the log-likelihood
#: of a single Poisson (ambient only) by at least this much ...
CAR_MIN_LOGLIK_GAIN = 10.0
#: ... and the CAR+ rate is at least this multiple of the ambient rate.
CAR_MIN_FOLD = 5.0
#: Per-cell log-likelihood ratios are clipped to +-this many nats before clone pooling,
#: so that one odd cell (a doublet, a mis-assigned barcode) cannot decide a clone.
CLONE_CLIP = 10.0
#: Cells whose own posterior reaches this are "confident" when estimating rho.
CONFIDENT = 0.9
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_GENE_RE = re.compile(r"^\S+$")


# ---------------------------------------------------------------- signatures


@dataclass(frozen=True)
class StateSignature:
    """One marker program.

    Parameters
    ----------
    id
        State id used in calls and as ``score_<id>``.
    label
        Human-readable name.
    up, down
        Genes higher / lower in the state.
    lineage
        ``"CD4"`` or ``"CD8"`` when the state can only be called in that lineage.
    references
        Publications the program comes from.
    """

    id: str
    label: str
    up: tuple[str, ...]
    down: tuple[str, ...] = ()
    lineage: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Signatures:
    """A validated signature file."""

    version: str
    states: tuple[StateSignature, ...]
    lineage: Mapping[str, tuple[str, ...]]
    exhaustion_markers: Mapping[str, str]
    source: str = ""

    @property
    def state_ids(self) -> list[str]:
        """State ids in file order."""
        return [s.id for s in self.states]

    def state(self, state_id: str) -> StateSignature:
        """The program with this id."""
        for s in self.states:
            if s.id == state_id:
                return s
        raise KeyError(state_id)


def _gene_list(value: Any, *, source: str, where: str, problems: list[Problem]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        problems.append(Problem(source, where, f"must be a list of gene symbols, got {value!r}",
                                "write it as a YAML list, e.g. [CCR7, SELL]"))
        return ()
    out: list[str] = []
    for g in value:
        if not isinstance(g, str) or not _GENE_RE.match(g):
            problems.append(Problem(source, where, f"{g!r} is not a gene symbol",
                                    "use gene symbols as in the count matrix (no spaces)"))
            continue
        if g in out:
            problems.append(Problem(source, where, f"gene {g} is listed twice", "list it once"))
            continue
        out.append(g)
    return tuple(out)


def parse_signatures(spec: Any, *, source: str) -> Signatures:
    """Validate a parsed signature file.

    Parameters
    ----------
    spec
        The YAML document (a mapping with ``version``, ``lineage``,
        ``exhaustion_markers`` and ``states``).
    source
        File name used in error messages.

    Raises
    ------
    InputError
        Listing every problem found (missing keys, bad ids, duplicate states,
        genes both up and down, unknown lineage restriction, ...).
    """
    problems: list[Problem] = []
    if not isinstance(spec, Mapping):
        raise InputError([Problem(source, "", "the file is not a YAML mapping",
                                  "start from resources/signatures/t_cell_states.yaml")])
    version = spec.get("version")
    if version is None or (isinstance(version, str) and not version.strip()):
        problems.append(Problem(source, "key 'version'", "missing",
                                "add a 'version:' key (bump it whenever gene lists change)"))
    known_keys = {"version", "lineage", "exhaustion_markers", "states", "name", "description"}
    for key in spec:
        if key not in known_keys:
            problems.append(Problem(source, f"key {key!r}", "unknown top-level key",
                                    f"use only {sorted(known_keys)}"))

    lineage_spec = spec.get("lineage")
    lineage: dict[str, tuple[str, ...]] = {}
    if not isinstance(lineage_spec, Mapping) or set(lineage_spec) != {"CD4", "CD8"}:
        problems.append(Problem(source, "key 'lineage'",
                                "must map exactly CD4 and CD8 to lists of marker genes",
                                "e.g. lineage: {CD4: [CD4], CD8: [CD8A, CD8B]}"))
    else:
        for lin in ("CD4", "CD8"):
            genes = _gene_list(lineage_spec[lin], source=source, where=f"lineage.{lin}",
                               problems=problems)
            if not genes:
                problems.append(Problem(source, f"lineage.{lin}", "no genes",
                                        "list at least one gene"))
            lineage[lin] = genes

    markers_spec = spec.get("exhaustion_markers", {}) or {}
    markers: dict[str, str] = {}
    if not isinstance(markers_spec, Mapping):
        problems.append(Problem(source, "key 'exhaustion_markers'", "must be a mapping",
                                "e.g. {pd1_pos: PDCD1, tim3_pos: HAVCR2, lag3_pos: LAG3}"))
    else:
        for col, gene in markers_spec.items():
            if col not in MARKER_COLUMNS:
                problems.append(Problem(source, f"exhaustion_markers.{col}", "unknown column",
                                        f"use {list(MARKER_COLUMNS)}"))
            elif not isinstance(gene, str) or not _GENE_RE.match(gene):
                problems.append(Problem(source, f"exhaustion_markers.{col}",
                                        f"{gene!r} is not a gene symbol", "give one gene symbol"))
            else:
                markers[col] = gene

    states_spec = spec.get("states")
    states: list[StateSignature] = []
    if not isinstance(states_spec, list) or not states_spec:
        problems.append(Problem(source, "key 'states'", "must be a non-empty list of programs",
                                "see resources/signatures/t_cell_states.yaml"))
        states_spec = []
    seen: set[str] = set()
    for n, st in enumerate(states_spec, start=1):
        where = f"states entry {n}"
        if not isinstance(st, Mapping):
            problems.append(Problem(source, where, "is not a mapping", "give id, label, up, down"))
            continue
        sid = st.get("id")
        if not isinstance(sid, str) or not _ID_RE.match(sid):
            problems.append(Problem(source, f"{where}, key 'id'", f"invalid id {sid!r}",
                                    "use a lower-case identifier such as 'naive_tscm'"))
            continue
        where = f"state '{sid}'"
        if sid == UNASSIGNED:
            problems.append(Problem(source, where, "'unassigned' is reserved", "rename the state"))
        if sid in seen:
            problems.append(Problem(source, where, "duplicate state id",
                                    "give every state its own id"))
        seen.add(sid)
        for key in st:
            if key not in {"id", "label", "up", "down", "lineage", "references", "note"}:
                problems.append(Problem(source, f"{where}, key {key!r}", "unknown key",
                                        "use id, label, up, down, lineage, references"))
        up = _gene_list(st.get("up"), source=source, where=f"{where}, key 'up'", problems=problems)
        down = _gene_list(st.get("down"), source=source, where=f"{where}, key 'down'",
                          problems=problems)
        if isinstance(st.get("up"), (list, tuple)) and len(up) < MIN_PRESENT_GENES:
            problems.append(Problem(source, f"{where}, key 'up'",
                                    f"needs at least {MIN_PRESENT_GENES} genes, has {len(up)}",
                                    "list the genes that are higher in the state"))
        both = sorted(set(up) & set(down))
        if both:
            problems.append(Problem(source, where, f"genes both up and down: {both}",
                                    "keep each gene in one list"))
        lin = st.get("lineage")
        if lin is not None and lin not in ("CD4", "CD8"):
            problems.append(Problem(source, f"{where}, key 'lineage'", f"unknown lineage {lin!r}",
                                    "use CD4, CD8 or leave the key out"))
        refs = st.get("references", []) or []
        if isinstance(refs, str):
            refs = [refs]
        label = st.get("label", sid)
        states.append(StateSignature(id=sid, label=str(label), up=up, down=down, lineage=lin,
                                     references=tuple(str(r) for r in refs)))
    if problems:
        raise InputError(problems)
    unknown = [s.id for s in states if s.id not in KNOWN_STATES]
    if unknown:
        logger.warning("%s: states %s are outside the DESIGN.md vocabulary %s; they are scored "
                       "and called but downstream summaries may ignore them",
                       source, unknown, list(KNOWN_STATES))
    return Signatures(version=str(version), states=tuple(states), lineage=lineage,
                      exhaustion_markers=markers, source=source)


def load_signatures(path: str | os.PathLike) -> Signatures:
    """Read and validate a signature YAML file (see :func:`parse_signatures`).

    Raises
    ------
    InputError
        The file is missing, not YAML, or invalid.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError([Problem(src, "", "file not found",
                                  "set annotate.signatures to an existing YAML file")])
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError([Problem(src, "", f"not valid YAML ({err})",
                                  "fix the YAML syntax")]) from None
    return parse_signatures(spec, source=src)


def restrict_signatures(
    signatures: Signatures, *, genes: Sequence[str], min_genes: int = MIN_PRESENT_GENES
) -> tuple[Signatures, pd.DataFrame]:
    """Keep the genes present in the data; drop programs with too few.

    Parameters
    ----------
    signatures
        Validated programs.
    genes
        Gene symbols of the data (``var_names``).
    min_genes
        Minimum number of present ``up`` genes for a program to be used.

    Returns
    -------
    (Signatures, pandas.DataFrame)
        The programs restricted to present genes, and one row per program:
        ``state, n_up, n_up_present, n_down, n_down_present, missing, used``.
    """
    present = set(map(str, genes))
    rows = []
    kept: list[StateSignature] = []
    for s in signatures.states:
        up = tuple(g for g in s.up if g in present)
        down = tuple(g for g in s.down if g in present)
        missing = [g for g in (*s.up, *s.down) if g not in present]
        used = len(up) >= min_genes
        if missing:
            logger.info("signature %s: %d of %d genes absent from the data: %s", s.id,
                        len(missing), len(s.up) + len(s.down), ", ".join(missing))
        if not used:
            logger.warning("signature %s skipped: only %d of its up genes are in the data "
                           "(need %d)", s.id, len(up), min_genes)
        else:
            kept.append(StateSignature(id=s.id, label=s.label, up=up, down=down,
                                       lineage=s.lineage, references=s.references))
        rows.append({"state": s.id, "n_up": len(s.up), "n_up_present": len(up),
                     "n_down": len(s.down), "n_down_present": len(down),
                     "missing": ",".join(missing), "used": used})
    if not kept:
        raise CartCohortError(
            f"{signatures.source}: no marker program has {min_genes} or more genes in the data; "
            "check that var_names are gene symbols (not Ensembl ids) and that the signature "
            "file matches the organism")
    out = Signatures(version=signatures.version, states=tuple(kept), lineage=signatures.lineage,
                     exhaustion_markers=signatures.exhaustion_markers, source=signatures.source)
    return out, pd.DataFrame(rows)


# ---------------------------------------------------------------- count models


def _pois_logpmf(c: np.ndarray, mu: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, 1e-300)
    return c * np.log(mu) - mu - gammaln(c + 1.0)


def _nb_logpmf(c: np.ndarray, mu: np.ndarray, size: float) -> np.ndarray:
    mu = np.maximum(mu, 1e-300)
    return (gammaln(c + size) - gammaln(size) - gammaln(c + 1.0)
            + size * np.log(size / (size + mu)) + c * np.log(mu / (size + mu)))


@dataclass(frozen=True)
class LatentClassFit:
    """A fitted latent-class count model (see :func:`fit_latent_classes`).

    ``design[k, g]`` is True when gene (set) ``g`` is in its high state in class ``k``.
    Rates are per UMI of library size.
    """

    classes: tuple[str, ...]
    design: np.ndarray
    low_rate: np.ndarray
    high_rate: np.ndarray
    size: np.ndarray
    prior: np.ndarray
    loglik: float
    n_iter: int

    def log_likelihood(self, counts: np.ndarray, *, library_size: np.ndarray) -> np.ndarray:
        """Per-cell log-likelihood of each class, shape ``(n_cells, n_classes)``."""
        counts = _as_2d(counts)
        lo = _pois_logpmf(counts, library_size[:, None] * self.low_rate[None, :])
        hi = np.column_stack([
            _nb_logpmf(counts[:, g], library_size * self.high_rate[g], float(self.size[g]))
            for g in range(counts.shape[1])
        ])
        return lo @ (~self.design).T.astype(float) + hi @ self.design.T.astype(float)

    def posterior(self, counts: np.ndarray, *, library_size: np.ndarray) -> np.ndarray:
        """Per-cell class posterior (own counts only)."""
        return _normalise_log(self.log_likelihood(counts, library_size=library_size)
                              + np.log(self.prior)[None, :])


def _as_2d(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    return counts[:, None] if counts.ndim == 1 else counts


def _normalise_log(logp: np.ndarray) -> np.ndarray:
    return np.exp(logp - logsumexp(logp, axis=1, keepdims=True))


def _fit_size(c: np.ndarray, mu: np.ndarray, w: np.ndarray, *, min_size: float,
              max_size: float) -> float:
    """Weighted ML size (inverse dispersion) of a negative binomial with known means."""
    keep = w > 1e-8
    c, mu, w = c[keep], mu[keep], w[keep]
    if w.sum() <= 1e-6:
        return max_size

    def nll(log_size: float) -> float:
        return -float(np.sum(w * _nb_logpmf(c, mu, float(np.exp(log_size)))))

    res = optimize.minimize_scalar(nll, bounds=(np.log(min_size), np.log(max_size)),
                                   method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))


def fit_latent_classes(
    counts: np.ndarray,
    *,
    library_size: np.ndarray,
    design: np.ndarray,
    classes: Sequence[str],
    min_prior: float = 1e-4,
    min_size: float = 1.0,
    max_size: float = 1e4,
    max_low_ratio: float = 0.2,
    max_iter: int = 300,
    tol: float = 1e-7,
) -> LatentClassFit:
    """EM fit of a latent-class model of marker counts with library-size offsets.

    In class ``k`` the counts of gene (set) ``g`` are ``NegBin(L b_g, r_g)``
    when ``design[k, g]`` (high state), else ``Poisson(L a_g)`` (low/ambient).

    Parameters
    ----------
    counts
        ``(n_cells,)`` or ``(n_cells, n_genes)`` UMI counts.
    library_size
        Total UMIs per cell (the offset), > 0.
    design
        Boolean ``(n_classes, n_genes)``.
    classes
        Class names.
    min_prior
        Floor of every class prior (keeps rare classes alive).
    min_size, max_size
        Bounds of the negative-binomial size; ``min_size >= 1`` keeps the
        likelihood ratio monotone in the count.
    max_low_ratio
        The low rate is kept at or below ``max_low_ratio`` times the high rate,
        so the two states stay distinct (without it, a sample made almost only
        of high cells can end with the low state fitted to part of the high ones).
    max_iter, tol
        EM stopping rule (relative change of the log-likelihood).

    Returns
    -------
    LatentClassFit
    """
    counts = _as_2d(counts)
    lib = np.asarray(library_size, dtype=float)
    design = np.asarray(design, dtype=bool)
    n, n_genes = counts.shape
    n_classes = design.shape[0]
    if design.shape[1] != n_genes:
        raise ValueError("design must have one column per gene")
    if np.any(lib <= 0):
        raise CartCohortError("library sizes must be positive")
    # initial responsibilities from detection
    det = (counts > 0).astype(float)
    p_hi = 0.05 + 0.9 * det
    logr = np.log(p_hi) @ design.T.astype(float) + np.log(1 - p_hi) @ (~design).T.astype(float)
    resp = _normalise_log(logr)
    low = np.empty(n_genes)
    high = np.empty(n_genes)
    size = np.full(n_genes, 10.0)
    prior = np.full(n_classes, 1.0 / n_classes)
    prev = -np.inf
    loglik = -np.inf
    it = 0
    for it in range(1, max_iter + 1):
        # M-step
        prior = resp.mean(axis=0)
        prior = np.maximum(prior, min_prior)
        prior /= prior.sum()
        for g in range(n_genes):
            w_hi = resp[:, design[:, g]].sum(axis=1)
            w_lo = 1.0 - w_hi
            low[g] = max(np.sum(w_lo * counts[:, g]) / max(np.sum(w_lo * lib), 1e-12), 1e-12)
            high[g] = max(np.sum(w_hi * counts[:, g]) / max(np.sum(w_hi * lib), 1e-12), 1e-12)
            low[g] = min(low[g], max_low_ratio * high[g])
            if it % 5 == 1 or it <= 3:
                size[g] = _fit_size(counts[:, g], lib * high[g], w_hi, min_size=min_size,
                                    max_size=max_size)
        fit = LatentClassFit(tuple(classes), design, low.copy(), high.copy(), size.copy(),
                             prior.copy(), loglik, it)
        # E-step
        logp = fit.log_likelihood(counts, library_size=lib) + np.log(prior)[None, :]
        norm = logsumexp(logp, axis=1, keepdims=True)
        resp = np.exp(logp - norm)
        loglik = float(norm.sum())
        if np.isfinite(prev) and abs(loglik - prev) <= tol * abs(prev):
            break
        prev = loglik
    return LatentClassFit(tuple(classes), design, low, high, size, prior, loglik, it)


# ---------------------------------------------------------------- graph pooling


def neighbour_graph(adata: ad.AnnData, *, key: str = "connectivities") -> sparse.csr_matrix:
    """The kNN graph of the integrated object, without self loops.

    Raises
    ------
    CartCohortError
        When ``obsp[key]`` is missing or has the wrong shape.
    """
    if key not in adata.obsp:
        raise CartCohortError(
            f"the integrated AnnData has no obsp['{key}'] (kNN graph); annotation pools "
            "evidence over it. Fix: re-run rule integrate (it builds the neighbours)")
    g = sparse.csr_matrix(adata.obsp[key], dtype=np.float64)
    if g.shape != (adata.n_obs, adata.n_obs):
        raise CartCohortError(f"obsp['{key}'] has shape {g.shape}, expected {(adata.n_obs,) * 2}")
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def smoothing_operator(graph: sparse.spmatrix, *, smoothing: float) -> sparse.csr_matrix:
    """Lazy random-walk operator ``(1 - s) I + s D^-1 G`` (rows sum to 1).

    Parameters
    ----------
    graph
        Symmetric kNN weights without self loops.
    smoothing
        Weight ``s`` in [0, 1) of the neighbours; cells without neighbours keep
        their own value.
    """
    if not 0.0 <= smoothing < 1.0:
        raise CartCohortError(f"annotate.smoothing must be in [0, 1), got {smoothing}")
    g = sparse.csr_matrix(graph, dtype=np.float64)
    deg = np.asarray(g.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    s = np.where(deg > 0, smoothing, 0.0)
    walk = sparse.diags(inv * s) @ g
    return (sparse.diags(1.0 - s) + walk).tocsr()


def neighbour_agreement(posterior: np.ndarray, *, graph: sparse.spmatrix,
                        confident: float = CONFIDENT) -> float:
    """Chance-corrected agreement (kappa) of confident cells with confident neighbours.

    Returns ``rho`` in [0, 1]: the probability that a neighbour shares the
    cell's class beyond chance. 0 when fewer than 20 confident edges exist.
    """
    call = posterior.argmax(axis=1)
    conf = posterior.max(axis=1) >= confident
    g = sparse.triu(sparse.csr_matrix(graph), k=1).tocoo()
    keep = conf[g.row] & conf[g.col]
    if keep.sum() < 20:
        return 0.0
    a, b = call[g.row[keep]], call[g.col[keep]]
    observed = float(np.mean(a == b))
    freq = np.bincount(np.concatenate([a, b]), minlength=posterior.shape[1]) / (2 * keep.sum())
    expected = float(np.sum(freq**2))
    if expected >= 1.0 - 1e-9:
        return 1.0 if observed >= 1.0 - 1e-9 else 0.0
    return float(np.clip((observed - expected) / (1.0 - expected), 0.0, 1.0))


def pool_neighbour_evidence(
    log_lik: np.ndarray,
    *,
    prior: np.ndarray,
    graph: sparse.spmatrix,
    rho: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Add the kNN neighbours' evidence to each cell's own likelihood.

    Parameters
    ----------
    log_lik
        ``(n_cells, n_classes)`` own log-likelihoods.
    prior
        Class priors.
    graph
        kNN weights without self loops (``obsp['connectivities']``).
    rho
        Probability that a neighbour shares the cell's class; estimated with
        :func:`neighbour_agreement` when None.

    Returns
    -------
    (posterior, log_evidence, rho)
        Posterior with neighbours, the pooled log-evidence (own + neighbours,
        without the prior) and the rho used.
    """
    logprior = np.log(prior)[None, :]
    own = _normalise_log(log_lik + logprior)
    if rho is None:
        rho = neighbour_agreement(own, graph=graph)
    if rho <= 0:
        return own, log_lik.copy(), 0.0
    term = np.log(rho * own / np.asarray(prior)[None, :] + (1.0 - rho))
    g = sparse.csr_matrix(graph)
    evidence = log_lik + np.asarray(g @ term)
    return _normalise_log(evidence + logprior), evidence, float(rho)


def _clone_codes(clone_id: pd.Series | np.ndarray) -> np.ndarray:
    s = pd.Series(np.asarray(clone_id, dtype=object))
    codes, _ = pd.factorize(s, sort=True)
    return codes  # -1 for missing


def pool_by_clone(
    log_evidence: np.ndarray,
    *,
    clone_id: pd.Series | np.ndarray,
    prior: np.ndarray,
    clip: float = CLONE_CLIP,
    min_members: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of a class shared by all members of a clone.

    Each member contributes its log-evidence relative to its best class,
    clipped at ``-clip``; the clone posterior is the prior times the product.

    Returns
    -------
    (posterior, pooled)
        ``(n_cells, n_classes)`` clone posterior for every cell of a clone with
        at least ``min_members`` cells here (NaN elsewhere), and a boolean mask
        of those cells.
    """
    codes = _clone_codes(clone_id)
    n, k = log_evidence.shape
    post = np.full((n, k), np.nan)
    has = codes >= 0
    if not has.any():
        return post, np.zeros(n, dtype=bool)
    rel = log_evidence - log_evidence.max(axis=1, keepdims=True)
    rel = np.maximum(rel, -clip)
    n_clones = codes.max() + 1
    sums = np.zeros((n_clones, k))
    np.add.at(sums, codes[has], rel[has])
    size = np.bincount(codes[has], minlength=n_clones)
    clone_post = _normalise_log(sums + np.log(prior)[None, :])
    pooled = has & (size[np.where(has, codes, 0)] >= min_members)
    post[pooled] = clone_post[codes[pooled]]
    return post, pooled


# ---------------------------------------------------------------- lineage


@dataclass(frozen=True)
class LineageResult:
    """Lineage calls (see :func:`call_lineage`)."""

    cell_call: np.ndarray
    cell_posterior: np.ndarray
    log_evidence: np.ndarray
    final_call: np.ndarray
    final_posterior: np.ndarray
    clone_pooled: np.ndarray
    fit: LatentClassFit
    rho: float


def call_lineage(
    cd4_counts: np.ndarray,
    *,
    cd8_counts: np.ndarray,
    library_size: np.ndarray,
    graph: sparse.spmatrix,
    clone_id: pd.Series | np.ndarray | None = None,
    clone_aware: bool = True,
) -> LineageResult:
    """CD4 / CD8 / DN / DP calls robust to dropout.

    Parameters
    ----------
    cd4_counts, cd8_counts
        Per-cell UMIs of the CD4 genes and of the CD8 genes (CD8A + CD8B), summed.
    library_size
        Total UMIs per cell.
    graph
        kNN weights (no self loops).
    clone_id
        Clone of each cell (missing for cells without TCR).
    clone_aware
        Pool members of each clone (>= 2 cells) for the final call.

    Returns
    -------
    LineageResult
        ``cell_call``: own counts + neighbourhood; ``final_call``: clone-aware.
    """
    counts = np.column_stack([cd4_counts, cd8_counts]).astype(float)
    lib = np.asarray(library_size, dtype=float)
    fit = fit_latent_classes(counts, library_size=lib, design=LINEAGE_DESIGN, classes=LINEAGES)
    ll = fit.log_likelihood(counts, library_size=lib)
    post, evidence, rho = pool_neighbour_evidence(ll, prior=fit.prior, graph=graph)
    names = np.array(LINEAGES, dtype=object)
    cell_call = names[post.argmax(axis=1)]
    final_post = post.copy()
    pooled = np.zeros(len(lib), dtype=bool)
    if clone_aware and clone_id is not None:
        cpost, pooled = pool_by_clone(evidence, clone_id=clone_id, prior=fit.prior)
        final_post[pooled] = cpost[pooled]
    final_call = names[final_post.argmax(axis=1)]
    logger.info(
        "lineage model: rates per 10k UMIs CD4 low %.3g high %.3g, CD8 low %.3g high %.3g; "
        "priors %s; neighbour agreement rho=%.2f",
        fit.low_rate[0] * 1e4, fit.high_rate[0] * 1e4, fit.low_rate[1] * 1e4,
        fit.high_rate[1] * 1e4, dict(zip(LINEAGES, np.round(fit.prior, 3))), rho)
    return LineageResult(cell_call, post, evidence, final_call, final_post, pooled, fit, rho)


# ---------------------------------------------------------------- markers


def marker_positivity(
    counts: np.ndarray, *, library_size: np.ndarray, graph: sparse.spmatrix
) -> tuple[np.ndarray, np.ndarray, LatentClassFit, float]:
    """Positive / negative call of one marker gene with neighbourhood pooling.

    Returns
    -------
    (positive, posterior, fit, rho)
        Boolean calls (posterior of the high state >= 0.5), that posterior,
        the fitted two-state model and the neighbour agreement used.
    """
    lib = np.asarray(library_size, dtype=float)
    design = np.array([[False], [True]])
    fit = fit_latent_classes(np.asarray(counts, dtype=float), library_size=lib, design=design,
                             classes=("neg", "pos"))
    ll = fit.log_likelihood(counts, library_size=lib)
    post, _, rho = pool_neighbour_evidence(ll, prior=fit.prior, graph=graph)
    return post[:, 1] >= 0.5, post[:, 1], fit, rho


# ---------------------------------------------------------------- CAR


@dataclass(frozen=True)
class CarModel:
    """Per-sample CAR UMI model (see :func:`fit_car_model`)."""

    n_cells: int
    car_detected: bool
    ambient_rate: float
    positive_rate: float
    size: float
    positive_fraction: float
    loglik_gain: float
    reason: str = ""

    def log_likelihood_ratio(self, car_umis: np.ndarray, *, library_size: np.ndarray,
                             dropout: float = 0.0) -> np.ndarray:
        """``log P(c | CAR+) - log P(c | CAR-)`` per cell.

        ``dropout``: probability that a CAR+ cell shows no CAR UMI at all
        (zero inflation of the CAR+ component).
        """
        c = np.asarray(car_umis, dtype=float)
        lib = np.asarray(library_size, dtype=float)
        neg = _pois_logpmf(c, lib * self.ambient_rate)
        pos = _nb_logpmf(c, lib * self.positive_rate, self.size)
        if dropout > 0:
            pos = np.where(c == 0, np.logaddexp(np.log(dropout), np.log1p(-dropout) + pos),
                           np.log1p(-dropout) + pos)
        return pos - neg


def fit_car_model(car_umis: np.ndarray, *, library_size: np.ndarray) -> CarModel:
    """Two-component mixture (ambient Poisson vs CAR+ negative binomial) of one sample.

    Parameters
    ----------
    car_umis
        CAR UMIs per cell (summed over CAR features).
    library_size
        Library size per cell without the CAR UMIs (offset).

    Returns
    -------
    CarModel
        ``car_detected`` is False when the data show no CAR+ population (see
        :data:`CAR_MIN_LOGLIK_GAIN`, :data:`CAR_MIN_FOLD`); the ambient rate is
        then the pooled rate of all cells.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    n = len(c)
    pooled_rate = float(c.sum() / lib.sum()) if lib.sum() > 0 else 0.0
    null_ll = float(np.sum(_pois_logpmf(c, lib * max(pooled_rate, 1e-12))))
    if n == 0 or c.sum() == 0:
        return CarModel(n, False, pooled_rate, np.nan, np.nan, 0.0, 0.0, "no CAR UMIs")
    fit = fit_latent_classes(c, library_size=lib, design=np.array([[False], [True]]),
                             classes=("neg", "pos"))
    gain = fit.loglik - null_ll
    a, b = float(fit.low_rate[0]), float(fit.high_rate[0])
    fold = b / max(a, 1e-12)
    if gain < CAR_MIN_LOGLIK_GAIN or fold < CAR_MIN_FOLD:
        reason = (f"mixture gains {gain:.1f} log-likelihood units over ambient-only "
                  f"(need {CAR_MIN_LOGLIK_GAIN}) with CAR+/ambient rate ratio {fold:.1f} "
                  f"(need {CAR_MIN_FOLD})")
        return CarModel(n, False, pooled_rate, np.nan, np.nan, 0.0, float(gain), reason)
    return CarModel(n, True, a, b, float(fit.size[0]), float(fit.prior[1]), float(gain), "")


def call_car_cells(
    car_umis: np.ndarray,
    *,
    library_size: np.ndarray,
    sample: np.ndarray,
    method: str = "mixture",
    min_umis: int = 1,
) -> tuple[pd.DataFrame, dict[str, CarModel]]:
    """Per-cell CAR+ calls, one mixture per sample.

    Parameters
    ----------
    car_umis
        CAR UMIs per cell.
    library_size
        Library size per cell without CAR UMIs.
    sample
        Sample of each cell.
    method
        ``mixture`` (posterior >= 0.5 and >= ``min_umis`` UMIs) or
        ``threshold`` (``car_umis >= min_umis``).
    min_umis
        Minimum CAR UMIs of a cell called CAR+ on its own evidence (>= 1).

    Returns
    -------
    (pandas.DataFrame, dict)
        Columns ``car_posterior`` (NaN for samples without a CAR+ population) and
        ``car_positive_cell`` (bool), in input order; the model of each sample.
    """
    if method not in ("mixture", "threshold"):
        raise CartCohortError(
            f"annotate.car_method must be 'mixture' or 'threshold', got {method!r}")
    if int(min_umis) < 1:
        raise CartCohortError(f"annotate.car_min_umis must be >= 1, got {min_umis}: a cell "
                              "without any CAR UMI cannot be called CAR+ on its own evidence")
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    sample = np.asarray(sample, dtype=object)
    posterior = np.full(len(c), np.nan)
    positive = np.zeros(len(c), dtype=bool)
    models: dict[str, CarModel] = {}
    for s in sorted(pd.unique(sample)):
        idx = np.flatnonzero(sample == s)
        model = fit_car_model(c[idx], library_size=lib[idx])
        models[str(s)] = model
        if model.car_detected:
            llr = model.log_likelihood_ratio(c[idx], library_size=lib[idx])
            prior = np.clip(model.positive_fraction, 1e-6, 1 - 1e-6)
            posterior[idx] = expit(llr + np.log(prior / (1 - prior)))
        if method == "threshold":
            positive[idx] = c[idx] >= min_umis
        elif model.car_detected:
            positive[idx] = (posterior[idx] >= 0.5) & (c[idx] >= min_umis)
        if model.car_detected:
            logger.info("sample %s: CAR+ population found: ambient %.3g and CAR+ %.3g UMIs per "
                        "10k, NB size %.2f, %.1f%% CAR+ (mixture), %d cells called CAR+ (%s)",
                        s, model.ambient_rate * 1e4, model.positive_rate * 1e4, model.size,
                        100 * model.positive_fraction, positive[idx].sum(), method)
        else:
            logger.info("sample %s: no CAR+ population (%s); %d cells called CAR+ (%s)", s,
                        model.reason, positive[idx].sum(), method)
    return pd.DataFrame({"car_posterior": posterior, "car_positive_cell": positive}), models


def clone_aware_car(
    car_umis: np.ndarray,
    *,
    library_size: np.ndarray,
    sample: np.ndarray,
    clone_id: pd.Series | np.ndarray,
    models: Mapping[str, CarModel],
    cell_call: np.ndarray,
    min_umis: int = 1,
    min_members: int = 2,
    max_iter: int = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Clone-level CAR status pooled over members, with CAR transcript dropout.

    Only cells of samples with a CAR+ population take part. Under "clone CAR+"
    each member's count is 0 with probability ``delta`` (dropout) and otherwise
    follows its sample's CAR+ component; under "clone CAR-" it follows the
    ambient Poisson. ``delta`` and the fraction of CAR+ clones are estimated by
    EM over the clones with ``min_members`` or more members. A clone is CAR+
    when its posterior is >= 0.5 and some member has ``min_umis`` UMIs.

    Returns
    -------
    (final, clone_posterior, pooled, params)
        Final calls (clone call for pooled cells, ``cell_call`` elsewhere), the
        clone posterior (NaN for cells not pooled), the pooled mask and the
        fitted ``{'dropout', 'clone_prior', 'n_clones'}``.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    sample = np.asarray(sample, dtype=object)
    codes = _clone_codes(clone_id)
    eligible = np.array([models[str(s)].car_detected for s in sample], dtype=bool)
    codes = np.where(eligible, codes, -1)
    final = np.asarray(cell_call, dtype=bool).copy()
    clone_post = np.full(len(c), np.nan)
    has = codes >= 0
    params = {"dropout": np.nan, "clone_prior": np.nan, "n_clones": 0}
    if not has.any():
        return final, clone_post, np.zeros(len(c), dtype=bool), params
    n_codes = codes.max() + 1
    size = np.bincount(codes[has], minlength=n_codes)
    member = has & (size[np.where(has, codes, 0)] >= min_members)
    if not member.any():
        return final, clone_post, member, params
    idx = np.flatnonzero(member)
    cc, ll, ss = c[idx], lib[idx], sample[idx]
    _, code = np.unique(codes[idx], return_inverse=True)
    n_clones = code.max() + 1
    # per-cell log P(c | +, not dropped) and log P(c | -)
    log_pos = np.empty(len(idx))
    log_neg = np.empty(len(idx))
    for s in pd.unique(ss):
        m = ss == s
        mod = models[str(s)]
        log_pos[m] = _nb_logpmf(cc[m], ll[m] * mod.positive_rate, mod.size)
        log_neg[m] = _pois_logpmf(cc[m], ll[m] * mod.ambient_rate)
    zero = cc == 0
    delta, prior = 0.1, 0.5
    for _ in range(max_iter):
        lpos = np.where(zero, np.logaddexp(np.log(delta), np.log1p(-delta) + log_pos),
                        np.log1p(-delta) + log_pos)
        llr = np.clip(lpos - log_neg, -CLONE_CLIP, CLONE_CLIP)
        score = np.bincount(code, weights=llr, minlength=n_clones)
        post = expit(score + np.log(prior / (1 - prior)))
        # M-step: clone prior and dropout (responsibility of dropout for zeros of CAR+ clones)
        w = post[code]
        z_drop = np.where(zero, np.exp(np.log(delta) - lpos), 0.0)
        new_prior = float(np.clip(post.mean(), 1e-4, 1 - 1e-4))
        denom = float(np.sum(w))
        new_delta = float(np.clip(np.sum(w * z_drop) / denom, 1e-4, 0.999)) if denom > 0 else delta
        done = abs(new_delta - delta) < 1e-6 and abs(new_prior - prior) < 1e-6
        delta, prior = new_delta, new_prior
        if done:
            break
    any_umis = np.bincount(code, weights=(cc >= min_umis).astype(float), minlength=n_clones) > 0
    clone_call = (post >= 0.5) & any_umis
    final[idx] = clone_call[code]
    clone_post[idx] = post[code]
    params = {"dropout": delta, "clone_prior": prior, "n_clones": int(n_clones)}
    logger.info("clone-aware CAR: %d clones with >= %d cells in samples with CAR+ cells; "
                "estimated CAR dropout %.2f, CAR+ clone fraction %.2f, %d clones called CAR+",
                n_clones, min_members, delta, prior, int(clone_call.sum()))
    return final, clone_post, member, params


# ---------------------------------------------------------------- states


def _dense_columns(matrix: Any, idx: np.ndarray) -> np.ndarray:
    sub = matrix[:, idx]
    if sparse.issparse(sub):
        sub = sub.toarray()
    return np.asarray(sub, dtype=np.float64)


def score_states(
    adata: ad.AnnData,
    *,
    signatures: Signatures,
    smoother: sparse.spmatrix | None,
    down_weight: float = 0.5,
    sd_floor: float = 0.5,
    layer: str | None = None,
) -> pd.DataFrame:
    """Per-cell score of every marker program.

    Score = mean standardised smoothed expression of the ``up`` genes minus
    ``down_weight`` times that of the ``down`` genes. Expression is ``X`` (log
    normalised) or ``layers[layer]``, smoothed with ``smoother`` (see
    :func:`smoothing_operator`), centred per gene and divided by
    ``sqrt(var + sd_floor**2)`` over all cells (``sd_floor`` in log units keeps
    genes without real variation from being inflated to unit variance).

    Returns
    -------
    pandas.DataFrame
        Columns ``score_<state>`` in the signature order, index = obs_names.
    """
    genes = sorted({g for s in signatures.states for g in (*s.up, *s.down)})
    idx = adata.var_names.get_indexer(genes)
    if (idx < 0).any():
        missing = [g for g, i in zip(genes, idx) if i < 0]
        raise CartCohortError(
            f"genes {missing} are not in the data; call restrict_signatures first")
    mat = adata.X if layer is None else adata.layers[layer]
    expr = _dense_columns(mat, idx)
    if smoother is not None:
        expr = np.asarray(smoother @ expr)
    mean = expr.mean(axis=0)
    sd = np.sqrt(expr.var(axis=0) + sd_floor**2)
    z = (expr - mean) / sd
    col = {g: i for i, g in enumerate(genes)}
    out = {}
    for s in signatures.states:
        up = z[:, [col[g] for g in s.up]].mean(axis=1)
        if s.down:
            up = up - down_weight * z[:, [col[g] for g in s.down]].mean(axis=1)
        out[f"score_{s.id}"] = up
    return pd.DataFrame(out, index=adata.obs_names)


def call_states(
    scores: pd.DataFrame,
    *,
    lineage: Sequence[str] | np.ndarray,
    restrictions: Mapping[str, str | None],
    min_score: float,
    min_margin: float,
) -> pd.DataFrame:
    """Best program per cell, with margin and ``unassigned``.

    Parameters
    ----------
    scores
        ``score_<state>`` columns.
    lineage
        Lineage call per cell (``CD4``/``CD8``/``DN``/``DP``).
    restrictions
        State id -> the only lineage it can be called in (or None).
    min_score, min_margin
        A cell is ``unassigned`` when its best allowed score is below
        ``min_score`` or the margin to the second best is below ``min_margin``.

    Returns
    -------
    pandas.DataFrame
        ``state``, ``state_best`` (best allowed program even when unassigned),
        ``state_confidence`` (margin; best minus ``min_score`` when only one
        program is allowed).
    """
    ids = [c[len("score_"):] for c in scores.columns]
    vals = scores.to_numpy(dtype=float).copy()
    lineage = np.asarray(lineage, dtype=object)
    for j, sid in enumerate(ids):
        lin = restrictions.get(sid)
        if lin is not None:
            vals[lineage != lin, j] = -np.inf
    order = np.argsort(-vals, axis=1, kind="mergesort")
    rows = np.arange(len(vals))
    best = vals[rows, order[:, 0]]
    second = vals[rows, order[:, 1]] if vals.shape[1] > 1 else np.full(len(vals), -np.inf)
    margin = np.where(np.isfinite(second), best - second, best - min_score)
    best_id = np.array(ids, dtype=object)[order[:, 0]]
    state = np.where((best >= min_score) & (margin >= min_margin), best_id, UNASSIGNED)
    return pd.DataFrame({"state": state, "state_best": best_id, "state_confidence": margin},
                        index=scores.index)


def cluster_consensus_states(
    state: pd.Series,
    *,
    cluster: pd.Series,
    lineage: pd.Series,
    restrictions: Mapping[str, str | None],
) -> pd.Series:
    """Majority state of each cluster for its cells (ties and restricted states keep the cell call).

    The majority is taken over assigned cells; a cluster's state is used only
    when it covers at least half of them, and never for cells whose lineage the
    state is not allowed in.
    """
    out = state.copy()
    df = pd.DataFrame({"state": state.astype(str), "cluster": cluster.astype(str)})
    assigned = df[df["state"] != UNASSIGNED]
    for cl, grp in assigned.groupby("cluster", sort=True):
        counts = grp["state"].value_counts()
        top = counts.index[0]
        if counts.iloc[0] * 2 < len(grp) or (len(counts) > 1 and counts.iloc[1] == counts.iloc[0]):
            continue
        cells = df.index[df["cluster"] == cl]
        lin = restrictions.get(top)
        ok = cells if lin is None else cells[lineage.loc[cells].to_numpy() == lin]
        out.loc[ok] = top
    return out


# ---------------------------------------------------------------- celltypist


def run_celltypist(adata: ad.AnnData, *, model_path: str) -> pd.DataFrame:
    """Annotate with a user-provided celltypist model (``annotate.celltypist_model``).

    Returns
    -------
    pandas.DataFrame
        ``celltypist_label`` and ``celltypist_conf`` per cell.

    Raises
    ------
    CartCohortError
        celltypist is not installed or the model file is missing.
    """
    try:
        import celltypist  # type: ignore[import-not-found]
    except ImportError:
        raise CartCohortError(
            f"annotate.celltypist_model is set ({model_path}) but the celltypist package is not "
            "installed in the annotate environment. Fix: add celltypist to envs/annotate.yaml "
            "(and requirements.lock) or set annotate.celltypist_model to an empty string") from None
    if not Path(model_path).is_file():
        raise CartCohortError(f"annotate.celltypist_model: {model_path} does not exist. Fix: give "
                              "the path of a celltypist .pkl model or an empty string to skip")
    model = celltypist.models.Model.load(model_path)
    pred = celltypist.annotate(adata, model=model, majority_voting=False)
    labels = pred.predicted_labels["predicted_labels"].astype(str)
    conf = pred.probability_matrix.max(axis=1)
    return pd.DataFrame({"celltypist_label": labels.to_numpy(), "celltypist_conf": conf.to_numpy()},
                        index=adata.obs_names)


# ---------------------------------------------------------------- orchestration


@dataclass
class AnnotationResult:
    """Output of :func:`annotate`."""

    gex: ad.AnnData
    agreement: pd.DataFrame
    signature_genes: pd.DataFrame
    car_models: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _gene_counts(counts: Any, var_names: pd.Index, genes: Sequence[str]) -> np.ndarray:
    idx = var_names.get_indexer(list(genes))
    idx = idx[idx >= 0]
    if len(idx) == 0:
        return np.zeros(counts.shape[0])
    return _dense_columns(counts, idx).sum(axis=1)


def car_feature_mask(gex: ad.AnnData, *, car_features: Sequence[str]) -> np.ndarray:
    """Boolean mask of the CAR features: ``var['is_car']`` or a name in ``car_features``."""
    mask = np.zeros(gex.n_vars, dtype=bool)
    if "is_car" in gex.var:
        mask |= gex.var["is_car"].fillna(False).to_numpy(dtype=bool)
    if car_features:
        mask |= gex.var_names.isin(list(car_features))
    return mask


def _check_input(gex: ad.AnnData) -> None:
    problems = []
    if "counts" not in gex.layers:
        problems.append("layers['counts'] (raw UMI counts)")
    for col in ("sample", "patient"):
        if col not in gex.obs:
            problems.append(f"obs['{col}']")
    if problems:
        raise CartCohortError("the integrated AnnData lacks " + ", ".join(problems)
                              + ". Fix: re-run rule integrate on the QC'd libraries")


def _contingency(sample: pd.Series, cell: pd.Series, final: pd.Series, call: str) -> pd.DataFrame:
    df = pd.DataFrame({"sample": sample.astype(str).to_numpy(),
                       "cell_call": cell.astype(str).to_numpy(),
                       "final_call": final.astype(str).to_numpy()})
    out = df.groupby(["sample", "cell_call", "final_call"], sort=True).size().rename("n_cells")
    out = out.reset_index()
    out.insert(1, "call", call)
    return out


def annotate(
    gex: ad.AnnData,
    *,
    airr: ad.AnnData | None,
    signatures: Signatures,
    car_features: Sequence[str],
    min_state_score: float = 0.0,
    min_confidence_margin: float = 0.05,
    cluster_consensus: bool = False,
    car_method: str = "mixture",
    car_min_umis: int = 1,
    clone_aware: bool = True,
    smoothing: float = 0.75,
    down_weight: float = 0.5,
    sd_floor: float = 0.5,
    celltypist_model: str = "",
) -> AnnotationResult:
    """Run every annotation step and add the calls to a copy of ``gex.obs``.

    Parameters
    ----------
    gex
        Integrated AnnData (see module docstring).
    airr
        scirpy AIRR AnnData with ``obs['clone_id']`` (and ``clone_size``); None
        when the cohort has no TCR data (no clone-aware calls then).
    signatures
        Validated marker programs (:func:`load_signatures`).
    car_features
        ``config['car_features']``; with ``var['is_car']`` defines the CAR features.
    min_state_score, min_confidence_margin, cluster_consensus
        State-call thresholds (:func:`call_states`, :func:`cluster_consensus_states`).
    car_method, car_min_umis
        Per-cell CAR rule (:func:`call_car_cells`).
    clone_aware
        Pool clone members for the final lineage and CAR calls.
    smoothing
        Neighbour weight of the expression smoothing used by the state scores.
    down_weight
        Weight of the ``down`` genes in the state scores.
    sd_floor
        Floor (log units) on the per-gene SD used to standardise expression
        for the state scores (:func:`score_states`).
    celltypist_model
        Optional celltypist model path (empty: skipped).

    Returns
    -------
    AnnotationResult
    """
    _check_input(gex)
    gex = gex.copy()
    obs = gex.obs
    graph = neighbour_graph(gex)
    counts = gex.layers["counts"]
    if sparse.issparse(counts):
        counts = sparse.csr_matrix(counts)
    car_mask = car_feature_mask(gex, car_features=car_features)
    total = np.asarray(counts.sum(axis=1)).ravel().astype(float)
    car_umis = (_dense_columns(counts, np.flatnonzero(car_mask)).sum(axis=1)
                if car_mask.any() else np.zeros(gex.n_obs))
    library = np.maximum(total - car_umis, 1.0)
    sample = obs["sample"].astype(str).to_numpy()

    # clones
    clone = pd.Series(np.nan, index=obs.index, dtype=object)
    clone_size = pd.Series(np.nan, index=obs.index, dtype=float)
    if airr is not None and "clone_id" in airr.obs:
        a = airr.obs.reindex(obs.index)
        ids = a["clone_id"].astype(object)
        ids = ids.where(ids.notna() & (ids.astype(str) != "nan") & (ids.astype(str) != ""))
        clone = ids
        if "clone_size" in a:
            clone_size = pd.to_numeric(a["clone_size"], errors="coerce")
        n_tcr = int(clone.notna().sum())
        logger.info("%d of %d cells have a clone id (%d clones)", n_tcr, gex.n_obs,
                    clone.nunique())
    else:
        logger.warning("no clone ids (no AIRR data): clone-aware calls are skipped")
    clone_aware_used = bool(clone_aware) and clone.notna().any()

    # signatures
    sig, sig_genes = restrict_signatures(signatures, genes=gex.var_names)
    missing_lineage = {lin: [g for g in genes if g not in gex.var_names]
                       for lin, genes in signatures.lineage.items()}
    for lin, miss in missing_lineage.items():
        if len(miss) == len(signatures.lineage[lin]):
            raise CartCohortError(
                f"{signatures.source}: none of the {lin} lineage genes "
                f"{list(signatures.lineage[lin])} "
                "is in the data, so CD4/CD8 cannot be called. Fix: use the gene symbols of your "
                "reference in the signature file's 'lineage' section")
        if miss:
            logger.warning("lineage genes absent from the data: %s", miss)

    # lineage
    lin = call_lineage(
        _gene_counts(counts, gex.var_names, signatures.lineage["CD4"]),
        cd8_counts=_gene_counts(counts, gex.var_names, signatures.lineage["CD8"]),
        library_size=library, graph=graph, clone_id=clone, clone_aware=clone_aware_used)
    obs["cd4_cd8_cell"] = pd.Categorical(lin.cell_call, categories=LINEAGES)
    obs["cd4_cd8"] = pd.Categorical(lin.final_call, categories=LINEAGES)
    obs["cd4_cd8_confidence"] = lin.final_posterior.max(axis=1)

    # CAR
    car_models_df = pd.DataFrame(columns=["sample", "car_detected", "ambient_rate",
                                          "positive_rate", "size", "positive_fraction",
                                          "loglik_gain", "reason"])
    car_params: dict[str, float] = {}
    if not car_mask.any():
        logger.warning("no CAR feature in the data (config car_features=%s, no var['is_car']): "
                       "car_positive, car_positive_cell and car_umis are left missing (NA)",
                       list(car_features))
        obs["car_umis"] = pd.array([pd.NA] * gex.n_obs, dtype="Int64")
        obs["car_posterior"] = np.nan
        obs["car_positive_cell"] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")
        obs["car_positive"] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")
    else:
        logger.info("CAR features: %s", list(gex.var_names[car_mask]))
        cells_car, models = call_car_cells(car_umis, library_size=library, sample=sample,
                                           method=car_method, min_umis=car_min_umis)
        final = cells_car["car_positive_cell"].to_numpy()
        if clone_aware_used:
            final, clone_post, _, car_params = clone_aware_car(
                car_umis, library_size=library, sample=sample, clone_id=clone, models=models,
                cell_call=final, min_umis=car_min_umis)
            obs["car_clone_posterior"] = clone_post
        obs["car_umis"] = pd.array(car_umis.astype(np.int64), dtype="Int64")
        obs["car_posterior"] = cells_car["car_posterior"].to_numpy()
        obs["car_positive_cell"] = pd.array(cells_car["car_positive_cell"].to_numpy(),
                                            dtype="boolean")
        obs["car_positive"] = pd.array(final, dtype="boolean")
        car_models_df = pd.DataFrame([{"sample": s, **{k: getattr(m, k) for k in (
            "car_detected", "ambient_rate", "positive_rate", "size", "positive_fraction",
            "loglik_gain", "reason")}} for s, m in models.items()])

    # checkpoint markers
    marker_fits = {}
    for col in MARKER_COLUMNS:
        gene = signatures.exhaustion_markers.get(col)
        if gene is None or gene not in gex.var_names:
            logger.warning("%s: marker gene %s is not in the data; column left missing", col, gene)
            obs[col] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")
            continue
        pos, _, fit, rho = marker_positivity(_gene_counts(counts, gex.var_names, [gene]),
                                             library_size=library, graph=graph)
        obs[col] = pd.array(pos, dtype="boolean")
        marker_fits[col] = {"gene": gene, "low_rate": float(fit.low_rate[0]),
                            "high_rate": float(fit.high_rate[0]), "rho": rho,
                            "fraction_positive": float(pos.mean())}
        logger.info("%s (%s): %.1f%% positive (rho=%.2f)", col, gene, 100 * pos.mean(), rho)
    obs["triple_pos"] = (obs["pd1_pos"] & obs["tim3_pos"] & obs["lag3_pos"]).astype("boolean")

    # states
    smoother = smoothing_operator(graph, smoothing=smoothing) if smoothing > 0 else None
    scores = score_states(gex, signatures=sig, smoother=smoother, down_weight=down_weight,
                          sd_floor=sd_floor)
    restrictions = {s.id: s.lineage for s in sig.states}
    calls = call_states(scores, lineage=obs["cd4_cd8"].astype(str).to_numpy(),
                        restrictions=restrictions, min_score=min_state_score,
                        min_margin=min_confidence_margin)
    for c in scores.columns:
        obs[c] = scores[c].to_numpy()
    state = calls["state"]
    if cluster_consensus:
        if "leiden" not in obs:
            raise CartCohortError("annotate.cluster_consensus is true but obs['leiden'] is "
                                  "missing. Fix: re-run rule integrate or set it to false")
        obs["state_cell"] = pd.Categorical(state, categories=[*sig.state_ids, UNASSIGNED])
        state = cluster_consensus_states(state, cluster=obs["leiden"],
                                         lineage=obs["cd4_cd8"].astype(str),
                                         restrictions=restrictions)
    obs["state"] = pd.Categorical(state.to_numpy(), categories=[*sig.state_ids, UNASSIGNED])
    obs["state_confidence"] = calls["state_confidence"].to_numpy()
    obs["lineage_state"] = (obs["cd4_cd8"].astype(str) + " " + obs["state"].astype(str))
    obs["clone_id"] = pd.Categorical(clone.to_numpy(dtype=object))
    obs["clone_size"] = clone_size.to_numpy()

    if celltypist_model:
        ct = run_celltypist(gex, model_path=celltypist_model)
        obs["celltypist_label"] = ct["celltypist_label"].to_numpy()
        obs["celltypist_conf"] = ct["celltypist_conf"].to_numpy()
    else:
        logger.info("celltypist skipped (annotate.celltypist_model is empty)")

    # agreement of per-cell and clone-aware calls
    agreement = [_contingency(obs["sample"], obs["cd4_cd8_cell"], obs["cd4_cd8"], "cd4_cd8")]
    if car_mask.any():
        agreement.append(_contingency(obs["sample"], obs["car_positive_cell"],
                                      obs["car_positive"], "car_positive"))
    agreement_df = pd.concat(agreement, ignore_index=True)
    n_lin = int((obs["cd4_cd8_cell"].astype(str) != obs["cd4_cd8"].astype(str)).sum())
    logger.info("clone-aware lineage changed %d of %d per-cell calls", n_lin, gex.n_obs)
    if car_mask.any():
        cell_pos = obs["car_positive_cell"].astype(bool)
        final_pos = obs["car_positive"].astype(bool)
        gained = int((~cell_pos & final_pos).sum())
        lost = int((cell_pos & ~final_pos).sum())
        logger.info("clone-aware CAR: %d cells CAR- on their own evidence called CAR+, %d cells "
                    "CAR+ on their own evidence called CAR-", gained, lost)
    summary = {
        "signatures_version": sig.version,
        "signatures_file": signatures.source,
        "states": sig.state_ids,
        "lineage_rho": lin.rho,
        "lineage_prior": dict(zip(LINEAGES, map(float, lin.fit.prior))),
        "clone_aware": clone_aware_used,
        "car_clone_params": {k: float(v) for k, v in car_params.items()},
        "markers": marker_fits,
        "params": {"min_state_score": min_state_score,
                   "min_confidence_margin": min_confidence_margin,
                   "cluster_consensus": cluster_consensus, "car_method": car_method,
                   "car_min_umis": car_min_umis, "smoothing": smoothing,
                   "down_weight": down_weight, "sd_floor": sd_floor,
                   "clone_aware": clone_aware},
    }
    gex.uns["annotation"] = {
        **{k: v for k, v in summary.items() if k not in ("markers", "lineage_prior",
                                                          "car_clone_params", "params")},
        "params": summary["params"],
        "signature_genes": {s.id: list(s.up) for s in sig.states},
        "signature_down_genes": {s.id: list(s.down) for s in sig.states},
    }
    return AnnotationResult(gex=gex, agreement=agreement_df, signature_genes=sig_genes,
                            car_models=car_models_df, summary=summary)


#: Columns of ``cells.tsv.gz`` (DESIGN.md), before the ``score_<state>`` columns.
CELL_COLUMNS: tuple[str, ...] = (
    "cell", "sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort",
    "cd4_cd8", "cd4_cd8_cell", "state", "state_confidence", "lineage_state", "car_positive",
    "car_positive_cell", "car_umis", "pd1_pos", "tim3_pos", "lag3_pos", "triple_pos", "clone_id",
    "clone_size", "leiden",
)


def cells_table(gex: ad.AnnData) -> pd.DataFrame:
    """The per-cell table of DESIGN.md from an annotated AnnData.

    Metadata columns absent from ``obs`` (e.g. ``sort``) are written as missing.
    """
    obs = gex.obs
    df = pd.DataFrame({"cell": obs.index.astype(str)})
    for col in CELL_COLUMNS[1:]:
        if col in obs:
            v = obs[col]
            if isinstance(v.dtype, pd.CategoricalDtype):
                v = v.astype(object).where(v.notna(), None)
            df[col] = v.to_numpy()
        else:
            df[col] = pd.NA
    for col in [c for c in obs.columns if c.startswith("score_")]:
        df[col] = obs[col].to_numpy()
    for extra in ("car_posterior", "state_cell", "celltypist_label", "celltypist_conf"):
        if extra in obs:
            v = obs[extra]
            if isinstance(v.dtype, pd.CategoricalDtype):
                v = v.astype(object)
            df[extra] = v.to_numpy()
    return df


def attach_calls(gex: ad.AnnData, calls: ad.AnnData) -> ad.AnnData:
    """The integrated cohort with the annotation calls of rule ``annotate``.

    Parameters
    ----------
    gex
        Integrated cohort (:func:`cartcohort.integrated.read_integrated`).
    calls
        ``results/annotate/calls.h5ad``: ``obs`` with every call and score (it
        replaces ``gex.obs``), ``uns`` and ``obsm`` entries added by annotation.

    Returns
    -------
    AnnData
        ``gex`` with the calls (modified in place and returned).
    """
    if not calls.obs_names.equals(gex.obs_names):
        raise CartCohortError(
            "the annotation calls and the integrated cohort hold different cells. Fix: "
            "re-run rules annotate and cohort together"
        )
    gex.obs = calls.obs.copy()
    gex.uns.update(dict(calls.uns))
    for key in calls.obsm:
        gex.obsm[key] = calls.obsm[key]
    return gex
