"""Protein-backed calls from normalised ADT values (:mod:`cartcohort.pp.prot`).

Every marker is called positive or negative per library by a two-component Gaussian
mixture on its normalised (dsb or CLR) values (:func:`marker_calls`; deterministic EM of
:func:`~cartcohort.pp.prot.fit_two_gaussians`). A marker's mixture is *separated* when
Ashman's D >= 2 and its means lie at least two component SDs apart; a marker that is not
separated in a library gets no calls there (NaN) and a note, never a guessed threshold;
with dsb values the negative component must also sit at background level (mean <= 3
empty-droplet SDs), so a marker every cell carries (CD3 in a T-cell product) is not split.
When CD3 is not separated, every usable cell is taken as a T cell (with the note).

- **Lineage** (:func:`protein_lineage`): among T cells (CD3+ by protein when the panel
  has CD3), CD4 and CD8 mixtures fitted on the T cells give P(CD4+), P(CD8+) and the
  classes CD4 / CD8 / DP / DN; :func:`combine_lineage` multiplies these with the RNA call's
  evidence where both exist. A panel without CD4 or CD8 gets no protein lineage (a note).
- **Memory** (:func:`gate_memory`): flow-style gates of
  ``resources/signatures/protein_gates.yaml`` (Sallusto 1999, Gattinoni 2011) on the
  marker calls.
- **Checkpoints**: PD-1, TIM-3, LAG-3 positivity (their marker calls).
- **CAR** (:func:`combine_car`): the anti-CAR antibody named by ``car_adt`` (checked
  against the panel by :func:`~cartcohort.pp.prot.check_car_adt`) combined with the
  transcript CAR posterior.
No random numbers are drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import CartCohortError
from ...pp.prot import fit_two_gaussians
from ...yaml_file import read_yaml_file

logger = logging.getLogger(__name__)

#: Protein lineage classes.
PROTEIN_LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "DP")
#: Checkpoint markers called by protein.
CHECKPOINTS: tuple[str, ...] = ("PD-1", "TIM-3", "LAG-3")
#: Columns of the mixture fits (:func:`marker_calls`).
FIT_COLUMNS: tuple[str, ...] = ("library", "marker", "n_fit", "mean_neg", "mean_pos", "sd_neg",
                                "sd_pos", "fraction_pos", "separation", "bimodal", "separated")
#: dsb values are in units of the empty-droplet SD: a negative population whose mean lies
#: above this is not background (a unimodal positive marker split in two, e.g. CD3 in a
#: pure T-cell product), so the mixture is not separated.
DSB_NEGATIVE_CEILING = 3.0
#: Ashman's D below which a marker's mixture is noted as not bimodal.
MIN_SEPARATION = 2.0


@dataclass(frozen=True)
class Gate:
    """One flow-style gate: ``signs`` marker -> ``"+"``/``"-"``; used when the panel has
    every marker of ``needs`` and none of ``only_without``."""

    id: str
    signs: Mapping[str, str]
    needs: tuple[str, ...] = ()
    only_without: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gates:
    """The memory gates (``resources/signatures/protein_gates.yaml``)."""

    version: str
    source: str
    gates: tuple[Gate, ...]
    inverse_markers: Mapping[str, str] = field(default_factory=dict)


def _gate(item: object, *, src: str, i: int) -> Gate:
    fix = "Fix: give each gate 'id', 'needs' (list) and 'signs' (marker: '+' or '-')"
    if not isinstance(item, Mapping) or "id" not in item or "signs" not in item:
        raise CartCohortError(f"{src}: gates[{i}] lacks 'id' or 'signs'. {fix}")
    signs = item["signs"]
    if not isinstance(signs, Mapping) or any(v not in ("+", "-") for v in signs.values()):
        raise CartCohortError(f"{src}: gate '{item['id']}': signs must be '+' or '-'. {fix}")
    return Gate(id=str(item["id"]), signs={str(k): str(v) for k, v in signs.items()},
                needs=tuple(map(str, item.get("needs") or ())),
                only_without=tuple(map(str, item.get("only_without") or ())))


def load_gates(path: str | Path) -> Gates:
    """Read and validate the memory gates (see the file's header for the definitions)."""
    data, src = read_yaml_file(path, setting="protein.gates")
    if not isinstance(data, Mapping) or not isinstance(data.get("gates"), list):
        raise CartCohortError(f"{src}: needs a list 'gates'. Fix: start from "
                              "resources/signatures/protein_gates.yaml")
    gates = tuple(_gate(g, src=src, i=i) for i, g in enumerate(data["gates"]))
    ids = [g.id for g in gates]
    if len(set(ids)) != len(ids):
        raise CartCohortError(f"{src}: gate ids repeat ({ids}). Fix: give unique ids")
    inverse = {str(k): str(v) for k, v in (data.get("inverse_markers") or {}).items()}
    return Gates(version=str(data.get("version", "")), source=src, gates=gates,
                 inverse_markers=inverse)


def _fit_rows(values: np.ndarray, fit_mask: np.ndarray) -> tuple[np.ndarray, dict]:
    """Posterior of the upper component for every value, fitted on ``values[fit_mask]``."""
    fit = fit_two_gaussians(values[fit_mask][None, :], tied=False)
    mu, var, w = fit.means[0], fit.variances[0], fit.weights[0]
    logp = np.stack([np.log(w[k]) - 0.5 * (np.log(2 * np.pi * var[k])
                                            + (values - mu[k]) ** 2 / var[k]) for k in (0, 1)])
    post = np.exp(logp[1] - np.logaddexp(logp[0], logp[1]))
    # Beyond the upper mean a cell is positive, below the lower mean negative (the
    # Gaussian tails can otherwise flip far outliers when the variances differ).
    post = np.where(values >= mu[1], np.maximum(post, 0.5 + 1e-9), post)
    post = np.where(values <= mu[0], np.minimum(post, 0.5 - 1e-9), post)
    stats = {"n_fit": int(fit_mask.sum()), "mean_neg": float(mu[0]), "mean_pos": float(mu[1]),
             "sd_neg": float(np.sqrt(var[0])), "sd_pos": float(np.sqrt(var[1])),
             "fraction_pos": float(w[1]), "separation": float(fit.separation()[0])}
    return post, stats


def marker_calls(values: pd.DataFrame, *, library: Sequence[str],
                 fit_mask: Sequence[bool] | None = None, min_cells: int = 20,
                 negative_ceiling: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per library and marker, the posterior of the positive component of a two-Gaussian
    mixture on the normalised values.

    Parameters
    ----------
    values
        Cells x markers normalised ADT values (columns are marker names).
    library
        Library of each cell.
    fit_mask
        Cells the mixtures are fitted on (default all); every cell gets a posterior.
    min_cells
        Libraries with fewer fit cells get NaN posteriors (and a fit row saying so).
    negative_ceiling
        With dsb values (:data:`DSB_NEGATIVE_CEILING`): the negative component's mean
        must lie at or below it (background) for the mixture to count as separated.

    Returns
    -------
    posterior, fits
        ``posterior``: cells x markers P(positive); ``fits``: one row per library and
        marker with the mixture (means, SDs, positive fraction, ``separation`` = Ashman's
        D, ``bimodal`` = D >= 2, ``separated`` = bimodal and means two SDs apart; markers
        not separated get NaN posteriors in that library).
    """
    lib = np.asarray(library).astype(str)
    mask = np.ones(len(values), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    post = pd.DataFrame(np.nan, index=values.index, columns=values.columns)
    rows = []
    for name in pd.unique(lib):
        in_lib = lib == name
        for marker in values.columns:
            v = values[marker].to_numpy(dtype=float)[in_lib]
            m = mask[in_lib] & ~np.isnan(v)
            if m.sum() < min_cells:
                rows.append({"library": name, "marker": marker, "n_fit": int(m.sum())})
                continue
            p, stats = _fit_rows(v, m)
            post.loc[in_lib, marker] = p
            rows.append({"library": name, "marker": marker, **stats})
    fits = pd.DataFrame(rows, columns=list(FIT_COLUMNS[:-2]))
    fits["bimodal"] = fits["separation"] >= MIN_SEPARATION
    gap = fits.get("mean_pos", np.nan) - fits.get("mean_neg", np.nan)
    widest = np.fmax(fits.get("sd_neg", np.nan), fits.get("sd_pos", np.nan))
    fits["separated"] = fits["bimodal"] & (gap >= MIN_SEPARATION * widest)
    if negative_ceiling is not None:
        fits["separated"] &= fits["mean_neg"] <= negative_ceiling
    for _, row in fits[~fits["separated"]].iterrows():
        post.loc[lib == row["library"], row["marker"]] = np.nan
    return post, fits


def fit_notes(fits: pd.DataFrame) -> list[str]:
    """One note per library and marker whose mixture is not separated (no calls)."""
    return [f"{r.library}: protein marker {r.marker} is not separated into a negative and a "
            f"positive population (Ashman's D {r.separation:.2f}, n = {r.n_fit}); no "
            "protein calls of it in this library" for r in fits[~fits["separated"]].itertuples()]


def lineage_probabilities(p_cd4: np.ndarray, p_cd8: np.ndarray) -> np.ndarray:
    """Cells x :data:`PROTEIN_LINEAGES` probabilities from independent P(CD4+), P(CD8+)."""
    p4, p8 = np.asarray(p_cd4, float), np.asarray(p_cd8, float)
    return np.column_stack([p4 * (1 - p8), (1 - p4) * p8, (1 - p4) * (1 - p8), p4 * p8])


def protein_lineage(p_cd4: np.ndarray, p_cd8: np.ndarray) -> pd.Categorical:
    """The most probable protein lineage class (NaN posteriors: no call)."""
    prob = lineage_probabilities(p_cd4, p_cd8)
    ok = ~np.isnan(prob).any(axis=1)
    calls = np.full(len(prob), None, dtype=object)
    calls[ok] = np.asarray(PROTEIN_LINEAGES)[np.argmax(prob[ok], axis=1)]
    return pd.Categorical(calls, categories=PROTEIN_LINEAGES)


def combine_lineage(p_cd4: np.ndarray, p_cd8: np.ndarray, *, rna_call: Sequence[object],
                    rna_confidence: Sequence[float]) -> pd.Categorical:
    """Protein and RNA lineage evidence multiplied.

    The RNA call ``c`` with confidence ``q`` counts as probability ``q`` for ``c`` and
    ``(1 - q) / 3`` for each other class; the product with the protein class
    probabilities (:func:`lineage_probabilities`) is normalised. A cell without protein
    keeps its RNA call, one without an RNA call (or called ``gd``) its protein call.
    """
    prot = lineage_probabilities(p_cd4, p_cd8)
    rna = np.asarray(pd.Series(rna_call, dtype=object).astype(object), dtype=object)
    q = np.clip(np.nan_to_num(np.asarray(rna_confidence, float), nan=0.25), 0.25, 1 - 1e-6)
    classes = np.asarray(PROTEIN_LINEAGES, dtype=object)
    rna_known = np.isin(rna, classes)
    rna_prob = np.where(classes[None, :] == rna[:, None], q[:, None], ((1 - q) / 3)[:, None])
    rna_prob[~rna_known] = 0.25
    has_prot = ~np.isnan(prot).any(axis=1)
    joint = np.where(has_prot[:, None], prot, 1.0) * rna_prob
    out = classes[np.argmax(joint, axis=1)].astype(object)
    out[~has_prot & ~rna_known] = None
    keep_rna = ~has_prot & (rna == "gd")
    out[keep_rna] = None
    return pd.Categorical(out, categories=PROTEIN_LINEAGES)


def _marker_sign(positive: pd.DataFrame, marker: str,
                 inverse: Mapping[str, str]) -> pd.Series | None:
    if marker in positive:
        return positive[marker]
    alt = inverse.get(marker)
    if alt is not None and alt in positive:
        return positive[alt].map({True: False, False: True}).astype("boolean")
    return None


def usable_gates(markers: Sequence[str], *, gates: Gates) -> list[Gate]:
    """The gates the panel's ``markers`` allow (``needs`` met, ``only_without`` absent;
    a marker counts as present through its ``inverse_markers`` partner too)."""
    have = set(markers) | {k for k, v in gates.inverse_markers.items() if v in markers}
    return [g for g in gates.gates
            if set(g.needs) <= have and not set(g.only_without) & have]


def gate_memory(positive: pd.DataFrame, *, gates: Gates) -> pd.Categorical:
    """Flow-style memory subset of each cell: the first usable gate whose signs it
    matches ("ungated" if none; no call where a needed marker has no call).

    A marker without any call (not in the panel, or not separated in this library)
    counts as absent, so e.g. a library whose CD95 is not separated is gated Tn/Tscm.

    Parameters
    ----------
    positive
        Cells x markers, nullable boolean marker calls (one library).
    gates
        :func:`load_gates`.
    """
    present = [c for c in positive.columns if positive[c].notna().any()]
    used = usable_gates(present, gates=gates)
    n = len(positive)
    call = np.full(n, "ungated", dtype=object)
    done = np.zeros(n, bool)
    missing = np.zeros(n, bool)
    for gate in used:
        match = np.ones(n, bool)
        for marker, sign in gate.signs.items():
            s = _marker_sign(positive[present], marker, gates.inverse_markers)
            if s is None:
                continue
            arr = s.astype("boolean")
            missing |= arr.isna().to_numpy() & (marker in gate.needs)
            match &= (arr.fillna(False).to_numpy() if sign == "+"
                      else (~arr).fillna(False).to_numpy())
        new = match & ~done
        call[new] = gate.id
        done |= match
    call[missing] = None
    if not used:
        call[:] = None
    return pd.Categorical(call, categories=[g.id for g in gates.gates] + ["ungated"])


def combine_car(p_protein: np.ndarray, *, transcript_posterior: Sequence[float],
                prior: float) -> np.ndarray:
    """P(CAR+) from the anti-CAR antibody and the transcript model, as independent
    evidence on one prior: odds = prior odds x protein LR x transcript LR, where each
    LR is that posterior's odds over ``prior``'s odds. Missing evidence counts as none."""
    prior = float(np.clip(prior, 1e-6, 1 - 1e-6))
    prior_logit = np.log(prior / (1 - prior))

    def _logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, float), 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p))

    lp = np.nan_to_num(_logit(p_protein) - prior_logit, nan=0.0)
    lt = np.nan_to_num(_logit(np.asarray(transcript_posterior, float)) - prior_logit, nan=0.0)
    z = prior_logit + lp + lt
    return 1.0 / (1.0 + np.exp(-z))


def agreement(protein_call: Sequence[object], rna_call: Sequence[object], *,
              library: Sequence[str], call: str) -> pd.DataFrame:
    """Per library: cells with both calls and the fraction on which they agree."""
    df = pd.DataFrame({"library": np.asarray(library).astype(str),
                       "protein": pd.Series(protein_call, dtype=object).to_numpy(),
                       "rna": pd.Series(rna_call, dtype=object).to_numpy()})
    both = df.dropna()
    rows = []
    for lib, g in both.groupby("library", sort=True):
        rows.append({"library": lib, "call": call, "n_both": len(g),
                     "agreement": float((g["protein"].astype(str)
                                         == g["rna"].astype(str)).mean())})
    return pd.DataFrame(rows, columns=["library", "call", "n_both", "agreement"])


def positive_calls(posterior: pd.DataFrame) -> pd.DataFrame:
    """Nullable-boolean marker calls: P(positive) > 0.5 (NaN posterior: no call)."""
    out = pd.DataFrame(index=posterior.index)
    for marker in posterior.columns:
        p = posterior[marker].to_numpy(dtype=float)
        out[marker] = pd.array(np.where(np.isnan(p), None, p > 0.5), dtype="boolean")
    return out


@dataclass
class ProteinCalls:
    """Output of :func:`protein_calls`.

    Attributes
    ----------
    obs
        Per cell: ``prot_t_cell``, ``prot_cd4_cd8``, ``prot_memory``, ``prot_<marker>_pos``
        for the checkpoints and gated markers, ``prot_car_posterior`` (with ``car_adt``);
        with RNA calls also ``cd4_cd8_combined`` and ``car_positive_combined``.
    fits
        Per library and marker: the mixture (:func:`marker_calls`).
    notes
        Skipped calls and markers without separated populations.
    agreement
        Per library and call: cells with a protein and an RNA call, fraction agreeing.
    """

    obs: pd.DataFrame
    fits: pd.DataFrame
    notes: list[str]
    agreement: pd.DataFrame


def _t_cells(values: pd.DataFrame, lib: np.ndarray, notes: list[str],
             ceiling: float | None) -> tuple[np.ndarray, pd.DataFrame]:
    if "CD3" not in values:
        notes.append("the ADT panel has no CD3: every cell is taken as a T cell")
        return np.ones(len(values), bool), pd.DataFrame()
    post, fits = marker_calls(values[["CD3"]], library=lib, negative_ceiling=ceiling,
                              fit_mask=values["CD3"].notna().to_numpy())
    return np.nan_to_num(post["CD3"].to_numpy(), nan=1.0) > 0.5, fits


def _lineage(post: pd.DataFrame, obs: pd.DataFrame, rna: pd.DataFrame | None,
             notes: list[str]) -> None:
    if not {"CD4", "CD8"} <= set(post.columns):
        notes.append("the ADT panel lacks CD4 or CD8: protein lineage skipped "
                     "(the RNA lineage call stands)")
        return
    p4, p8 = post["CD4"].to_numpy(), post["CD8"].to_numpy()
    p4 = np.where(obs["prot_t_cell"], p4, np.nan)
    obs["prot_cd4_cd8"] = protein_lineage(p4, p8)
    if rna is not None and "cd4_cd8_cell" in rna:
        obs["cd4_cd8_combined"] = combine_lineage(
            p4, p8, rna_call=rna["cd4_cd8_cell"].astype(object).to_numpy(),
            rna_confidence=rna.get("cd4_cd8_confidence", pd.Series(0.5, index=rna.index)))


def protein_calls(values: pd.DataFrame, *, library: Sequence[str], gates: Gates,
                  car_marker: str = "", rna: pd.DataFrame | None = None,
                  car_prior: float = 0.5, usable: Sequence[bool] | None = None,
                  dsb: bool = False) -> ProteinCalls:
    """Every protein-backed call of one or more libraries.

    Parameters
    ----------
    values
        Cells x markers normalised ADT values, columns named by marker
        (:func:`~cartcohort.pp.prot.map_panel`; the anti-CAR antibody under its name).
    library
        Library of each cell (mixtures are fitted per library).
    gates
        Memory gates (:func:`load_gates`).
    car_marker
        Column of ``values`` holding the anti-CAR antibody (``''``: none).
    rna
        Optional RNA calls of the same cells (``cd4_cd8_cell``, ``cd4_cd8_confidence``,
        ``car_posterior``): combined calls and agreement are added.
    car_prior
        Prior P(CAR+) of :func:`combine_car`.
    usable
        Cells with usable protein signal (:func:`~cartcohort.pp.prot.adt_qc`; default
        all): mixtures are fitted on these, the others get no protein calls.
    dsb
        The values are dsb (background units): a mixture whose negative component lies
        above :data:`DSB_NEGATIVE_CEILING` is not separated.
    """
    lib = np.asarray(library).astype(str)
    notes: list[str] = []
    obs = pd.DataFrame(index=values.index)
    ok = np.ones(len(values), bool) if usable is None else np.asarray(usable, bool)
    values = values.where(np.repeat(ok[:, None], values.shape[1], axis=1))
    ceiling = DSB_NEGATIVE_CEILING if dsb else None
    t_cell, t_fits = _t_cells(values, lib, notes, ceiling)
    t_cell &= ok
    obs["prot_t_cell"] = t_cell
    wanted = {"CD4", "CD8", *CHECKPOINTS, *gates.inverse_markers.values(),
              *(m for g in gates.gates for m in (*g.signs, *g.needs))}
    cols = [c for c in values.columns if c in wanted and c != car_marker]
    post, fits = marker_calls(values[cols], library=lib, fit_mask=t_cell,
                              negative_ceiling=ceiling)
    _lineage(post, obs, rna, notes)
    pos = positive_calls(post)
    memory = pd.Series(pd.Categorical([None] * len(pos), categories=[
        g.id for g in gates.gates] + ["ungated"]), index=pos.index)
    for name in pd.unique(lib):
        in_lib = lib == name
        memory[in_lib] = np.asarray(gate_memory(pos[in_lib], gates=gates), dtype=object)
    obs["prot_memory"] = memory.to_numpy()
    if not usable_gates(list(pos.columns), gates=gates):
        notes.append("the ADT panel lacks the markers of every memory gate: no protein "
                     "memory calls")
    for marker in [m for m in CHECKPOINTS if m in pos]:
        obs[f"prot_{marker.replace('-', '').lower()}_pos"] = pos[marker].to_numpy()
    all_fits = [t_fits, fits]
    if car_marker:
        car_post, car_fits = marker_calls(values[[car_marker]], library=lib,
                                          negative_ceiling=ceiling,
                                          fit_mask=values[car_marker].notna().to_numpy())
        obs["prot_car_posterior"] = car_post[car_marker].to_numpy()
        all_fits.append(car_fits)
        if rna is not None and "car_posterior" in rna:
            obs["car_positive_combined"] = combine_car(
                obs["prot_car_posterior"].to_numpy(), prior=car_prior,
                transcript_posterior=rna["car_posterior"].to_numpy(dtype=float)) > 0.5
    fits = pd.concat([f for f in all_fits if len(f)], ignore_index=True)[list(FIT_COLUMNS)]
    notes += fit_notes(fits)
    for note in notes:
        logger.warning(note)
    return ProteinCalls(obs=obs, fits=fits, notes=notes,
                        agreement=_agreements(obs, rna, lib))


def _agreements(obs: pd.DataFrame, rna: pd.DataFrame | None, lib: np.ndarray) -> pd.DataFrame:
    """Per library, protein vs RNA agreement of lineage and CAR (where both exist)."""
    agree = []
    if rna is not None and "prot_cd4_cd8" in obs and "cd4_cd8_cell" in rna:
        agree.append(agreement(obs["prot_cd4_cd8"], rna["cd4_cd8_cell"].astype(object),
                               library=lib, call="cd4_cd8"))
    if rna is not None and "prot_car_posterior" in obs and "car_positive_cell" in rna:
        prot_car = pd.Series(obs["prot_car_posterior"] > 0.5, dtype=object)
        prot_car[obs["prot_car_posterior"].isna()] = None
        agree.append(agreement(prot_car, rna["car_positive_cell"].astype(object),
                               library=lib, call="car_positive"))
    return (pd.concat(agree, ignore_index=True) if agree
            else pd.DataFrame(columns=["library", "call", "n_both", "agreement"]))
