"""Rule ``score_product``: one new infusion product scored against a frozen reference.

The library has been loaded and QC'd by rules ``load_sample`` and ``qc_sample`` with
the settings the reference was built with (checked here). Its QC-passing cells are
projected and mapped onto the cohort cells (:func:`~.project.map_to_reference`: the
kNN-transferred ``state_transfer``/``cd4_cd8_transfer`` with their confidences), and
annotated with the frozen annotation settings on the graph of their mapped embedding:
CAR by the library's own model (per library, as in the cohort) with the cohort's clone
CAR dropout (:func:`frozen_clone_dropout`: one library's few clones estimated 0.60
where the demo cohort's estimate is 0.07, and turned CAR- clones CAR+), lineage and checkpoint
receptors by the cohort's count models (:mod:`.lineage`, :mod:`.markers`) and states
by the cohort's scale (:func:`~.states.frozen_state_calls`); the library-only calls are
kept as ``state_own``, ``cd4_cd8_own``, ``pd1_pos_own`` etc. Why the state is not the kNN vote: the
cohort's calls smooth each cell's expression over its integrated-space neighbours, which
the cohort-scale call reproduces over the joint graph of :func:`~.project.joint_graph`
on the batch-corrected coordinates (0.97-0.99 of cells on the demo with the reference
fixed, the vote 0.73-0.78; README "Score a new product" and ``tools/lopo.py`` for the
leave-one-product-out numbers with the reference re-built).
Their clonotypes are defined with the frozen settings, summarised into the same
per-sample features as the cohort (:func:`cartcohort.tl.features.sample_features`) and
placed against the reference's cohort distributions with the primary-panel flag rule
(:func:`cartcohort.scorecards.score_product`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import anndata as ad
import pandas as pd

from ..dictionary import label_table, read_dictionary
from ..errors import CartCohortError
from ..pp import log_normalise
from .freeze import read_reference_dir
from .lineage import frozen_lineage_calls
from .markers import frozen_marker_calls
from .model import chemistry_mismatch, gene_mismatch, read_chemistry, read_model, reference_samples
from .project import align_counts, joint_graph, map_to_reference
from .states import frozen_state_calls

logger = logging.getLogger(__name__)

#: Settings that must equal the reference's (``settings.json``) for a new library.
MATCHED_SETTINGS = ("load", "qc", "car_features", "primary_timepoint")


class ScoredProduct(NamedTuple):
    """What :func:`score_new_product` returns."""

    #: The scorecard (``results/new_products/{sample}.tsv``), as the cohort's cards.
    card: pd.DataFrame
    #: Per-cell calls of the new cells (``results/new_products/{sample}/cells.tsv.gz``).
    cells: pd.DataFrame
    #: The product's per-sample features (``results/new_products/{sample}/features.tsv``:
    #: one row, the columns of ``sample_features.tsv``).
    features: pd.DataFrame
    #: The scorecard page (``results/new_products/{sample}.html``).
    html: str
    #: The same page for the PDF (``results/new_products/{sample}.pdf``; a figure).
    page: Any


def _differences(a: Any, b: Any, prefix: str) -> list[str]:
    """Dotted keys where two settings trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}.{k}")
        return out
    norm = (lambda v: "" if v is None else v)
    return [] if json.dumps(norm(a), default=str) == json.dumps(norm(b), default=str) else [
        f"{prefix} (reference {norm(b)!r}, this run {norm(a)!r})"]


def check_settings(settings: dict[str, Any], frozen: dict[str, Any], *, source: str) -> None:
    """Refuse settings of :data:`MATCHED_SETTINGS` that differ from the reference's."""
    diffs = []
    for key in MATCHED_SETTINGS:
        diffs += _differences(settings.get(key), frozen.get(key), key)
    if diffs:
        raise CartCohortError(
            f"{source}: the new libraries would be processed with settings other than the "
            f"reference's: {'; '.join(diffs)}. Fix: run score_products with the cohort "
            "run's config (or set these keys as in the reference's settings.json)")


def _qc_cells(qc_path: str | os.PathLike, qc_summary: pd.DataFrame, sample: str) -> ad.AnnData:
    """The QC-passing cells of the new library; refused when QC excludes it."""
    from ..pp.merge import _qc_passing

    row = qc_summary[qc_summary["sample"].astype(str) == sample]
    if len(row) and str(row["sample_excluded"].iloc[0]).lower() == "true":
        raise CartCohortError(
            f"results/qc/{sample}.tsv: QC excludes sample '{sample}' "
            f"({row['exclusion_reason'].iloc[0]}); it cannot be scored. Fix: check the "
            "library (qc_violins of a cohort run show the same metrics)")
    return _qc_passing(qc_path, sample)


def _annotate(gex: ad.AnnData, counts: Any, x_int: Any, *, qc_path: str | os.PathLike,
              sample: str, reference_dir: Path, frozen: dict[str, Any],
              qc_summary: pd.DataFrame, clone_dropout: float | None) -> tuple[pd.DataFrame, Any]:
    """Own calls of the new cells: annotation with the frozen settings on the graph of
    their mapped embedding, clone-aware with their own clonotypes and the cohort's clone
    CAR dropout (:func:`frozen_clone_dropout`); and that graph."""
    from .. import tl
    from ..tl.integrate.graph import embed_and_cluster

    ann = ad.AnnData(X=log_normalise(counts), obs=gex.obs.copy(), var=gex.var.copy())
    ann.layers["counts"] = counts
    ann.obsm["X_integrated"] = x_int
    emb = embed_and_cluster(x_int, ann.obs, n_neighbors=int(frozen["n_neighbors"]),
                            resolutions=(), seed=int(frozen["seed"]))
    ann.obsp["connectivities"], ann.obsp["distances"] = emb.connectivities, emb.distances
    clon = tl.clonotypes.cohort_clonotypes([qc_path], samples=[sample], qc_samples=qc_summary,
                                           **frozen["clonotypes"])
    signatures = tl.annotate.load_signatures(reference_dir / frozen["signatures_file"])
    result = tl.annotate.annotate(ann, airr=clon.airr, signatures=signatures,
                                  car_clone_dropout=clone_dropout,
                                  **{"n_neighbors": int(frozen["n_neighbors"]),
                                     "seed": int(frozen["seed"]), **frozen["annotate"]})
    return result.cells, ann.obsp["connectivities"]


def frozen_clone_dropout(reference_dir: Path) -> float | None:
    """The cohort's CAR dropout of the clone model (``annotation_car_models.tsv``
    ``clone_dropout``), or None when the cohort had no clone to estimate it from (the new
    library's own clones estimate it then).

    Raises
    ------
    CartCohortError
        The reference predates the column.
    """
    path = Path(reference_dir) / "annotation_car_models.tsv"
    table = pd.read_csv(path, sep="\t")
    if "clone_dropout" not in table.columns:
        raise CartCohortError(
            f"{path}: no 'clone_dropout' column: the reference was built before the cohort's "
            "clone CAR dropout was frozen with it. Fix: rebuild it (snakemake reference) "
            "with this version")
    values = table["clone_dropout"].dropna()
    return float(values.iloc[0]) if len(values) else None


def qc_items(sample: str, qc_summary: pd.DataFrame, cells: pd.DataFrame,
             chemistry: str = "") -> list[tuple[str, str]]:
    """The QC block of the scorecard: cells, doublet rate, mapping confidence, chemistry."""
    row = qc_summary[qc_summary["sample"].astype(str) == sample].iloc[0]
    n_in = float(row["n_cells_in"])
    doublet = float(row["n_removed_doublet"]) / n_in if n_in else float("nan")
    return [
        ("Cells passing QC", f"{len(cells):,} of {int(n_in):,}"),
        ("Doublet rate", f"{100 * doublet:.1f} %"),
        ("Median mapping confidence (kNN state vote)",
         f"{cells['state_transfer_confidence'].median():.2f}"),
        ("Cells mapped with confidence < 0.5",
         f"{100 * (cells['state_transfer_confidence'] < 0.5).mean():.1f} %"),
        ("State call = kNN-transferred state",
         f"{100 * (cells['state'] == cells['state_transfer']).mean():.1f} %"),
        ("Chemistry (as loaded)", chemistry or "not recorded by the input format"),
    ]


def score_new_product(
    qc_path: str | os.PathLike,
    *,
    qc_summary: pd.DataFrame,
    sample: str,
    reference_dir: str | os.PathLike,
    settings: dict[str, Any],
    features_file: str | os.PathLike,
) -> ScoredProduct:
    """Score one new product (step of rule ``score_product``).

    Parameters
    ----------
    qc_path
        ``results/qc/{sample}.h5mu`` of the new library (rule ``qc_sample``).
    qc_summary
        Its one-row QC summary (``results/qc/{sample}.tsv``).
    sample
        The new library's id (must not be a reference sample).
    reference_dir
        A ``results/reference`` folder (rule ``reference``); checksums verified.
    settings
        This run's :data:`MATCHED_SETTINGS` (they must equal the reference's).
    features_file
        Readable feature names (``scorecards.features``, ``resources/features.yaml``).

    Returns
    -------
    ScoredProduct
        Scorecard, per-cell calls, the product's features and its HTML page.
    """
    from .. import tl

    ref_dir = Path(reference_dir)
    manifest = read_reference_dir(ref_dir)
    frozen = json.loads((ref_dir / "settings.json").read_text())
    frozen["signatures_file"] = manifest["signatures"]
    check_settings(settings, frozen, source=str(ref_dir / "settings.json"))
    clone_dropout = frozen_clone_dropout(ref_dir)
    model = read_model(ref_dir / "model.h5ad")
    if sample in reference_samples(model):
        raise CartCohortError(
            f"new sample '{sample}' is a sample of the reference ({ref_dir}). Fix: give the "
            "new library an id of its own in the new_samples sheet")
    gex = _qc_cells(qc_path, qc_summary, sample)
    chemistry = read_chemistry(qc_path)
    chemistry_mismatch(chemistry, frozen.get("library_chemistry", {}), source=str(qc_path))
    gene_mismatch(model, gex.var_names, source=str(qc_path))
    counts = align_counts(gex.X, gex.var_names, model)
    gex = gex[:, model.var_names].copy()
    batch = str(gex.obs["batch"].iloc[0]) if "batch" in gex.obs and gex.n_obs else None
    mapping = map_to_reference(counts, model=model, cells=list(gex.obs_names), batch=batch,
                               n_neighbors=int(frozen["n_neighbors"]))
    if not mapping.batch_matched:
        logger.warning("%s: batch %r is not one of the reference's; its cells take the "
                       "integration's correction of their nearest cells of any batch",
                       sample, batch)
    cells, graph = _annotate(gex, counts, mapping.x_integrated, qc_path=qc_path,
                             sample=sample, reference_dir=ref_dir, frozen=frozen,
                             qc_summary=qc_summary, clone_dropout=clone_dropout)
    cells = cells.set_index(cells["cell"].astype(str)).loc[list(gex.obs_names)].reset_index(
        drop=True)
    signatures = tl.annotate.load_signatures(ref_dir / manifest["signatures"])
    cells = _frozen_calls(cells, counts, model=model, mapping=mapping, graph=graph,
                          signatures=signatures, frozen=frozen, sample=sample)
    rep = tl.repertoire.repertoire_tables(cells, **frozen["repertoire"]).samples
    features = tl.features.sample_features(cells, repertoire=rep, source=f"cells of {sample}")
    card = _place(features, ref_dir=ref_dir, frozen=frozen, features_file=features_file)
    notes = [] if mapping.batch_matched else [(
        f"Batch {batch!r} is not one of the reference's: the integration's correction was "
        "taken from the nearest cohort cells of any batch (state calls less certain).")]
    html, page = _page(sample, features=features, card=card, ref_dir=ref_dir,
                       features_file=features_file,
                       qc=qc_items(sample, qc_summary, cells, chemistry),
                       notes=notes)
    logger.info("%s: %d cells scored against %d reference cells; %d primary flag(s)",
                sample, len(cells), model.n_obs,
                int(card["flag"].isin(["below_responder_interval",
                                       "above_responder_interval"]).sum()))
    return ScoredProduct(card, cells, features, html, page)


def _frozen_calls(cells: pd.DataFrame, counts: Any, *, model: ad.AnnData, mapping: Any,
                  graph: Any, signatures: Any, frozen: dict[str, Any],
                  sample: str) -> pd.DataFrame:
    """The own calls replaced by those of the cohort's frozen models: checkpoint markers
    (:mod:`.markers`), lineage (:mod:`.lineage`), then states in the cohort's scale
    (:mod:`.states`); the own calls kept as ``*_own``."""
    genes = model.var_names
    is_car = model.var["is_car"].to_numpy(dtype=bool)
    markers = frozen_marker_calls(counts, genes=genes, is_car=is_car, graph=graph,
                                  models=json.loads(model.uns["markers"]))
    for col in markers.columns:
        cells[f"{col}_own"] = cells[col]
        cells[col] = markers[col].to_numpy()
    cells["cd4_cd8_own"] = cells["cd4_cd8"].astype(str)
    clone_aware = bool(frozen["annotate"]["clone_aware"]) and cells["clone_id"].notna().any()
    cells["cd4_cd8"] = frozen_lineage_calls(
        counts, genes=genes, is_car=is_car, signatures=signatures,
        model=json.loads(model.uns["lineage"]), sample=sample, graph=graph,
        clone_id=cells["clone_id"], clone_aware=clone_aware,
        is_gd=(cells["cd4_cd8_own"] == "gd").to_numpy())
    to_ref, to_new = joint_graph(mapping.x_integrated, model=model,
                                 n_neighbors=int(frozen["n_neighbors"]), seed=int(frozen["seed"]))
    states = frozen_state_calls(
        log_normalise(counts), model=model, graph_ref=to_ref, graph_new=to_new,
        lineage=cells["cd4_cd8"].astype(str).to_numpy(),
        signatures=signatures, settings=frozen["annotate"])
    return final_calls(cells, mapping.labels, states)


def _place(features: pd.DataFrame, *, ref_dir: Path, frozen: dict[str, Any],
           features_file: str | os.PathLike) -> pd.DataFrame:
    """The product's scorecard against the reference (primary-panel flag rule), with the
    feature dictionary's ``label`` and ``feature_family``."""
    from .. import scorecards, stats

    panel = stats.load_primary_panel(ref_dir / "primary_panel.yaml")
    reference = pd.read_csv(ref_dir / "reference_features.tsv", sep="\t")
    association = pd.read_csv(ref_dir / "association.tsv", sep="\t")
    card = scorecards.score_product(features.iloc[0], reference=reference,
                                    primary=panel.names, coverage=float(frozen["flag_coverage"]),
                                    association=association)
    return label_table(card, read_dictionary(features_file),
                       what=f"scorecard of {features['sample'].iloc[0]}")


def _page(sample: str, *, features: pd.DataFrame, card: pd.DataFrame, ref_dir: Path,
          features_file: str | os.PathLike, qc: list[tuple[str, str]],
          notes: list[str]) -> tuple[str, Any]:
    """The one-page scorecard (:func:`cartcohort.scorecards.product.product_page`)."""
    from ..scorecards.catalogue import read_catalogue
    from ..scorecards.product import fitness_rows, product_page

    rows = fitness_rows(features.iloc[0], card=card, catalogue=read_catalogue(features_file))
    reference = pd.read_csv(ref_dir / "reference_features.tsv", sep="\t")
    return product_page(sample, rows=rows, reference=reference, qc=qc, notes=notes)


def final_calls(cells: pd.DataFrame, transfer: pd.DataFrame,
                states: pd.DataFrame) -> pd.DataFrame:
    """The new cells' table: ``state``, ``state_confidence`` and ``score_<state>`` in the
    cohort's scale (:func:`.states.frozen_state_calls`; the library's own calls kept as
    ``state_own``), the kNN-transferred labels as ``state_transfer``/``cd4_cd8_transfer``
    with their ``*_confidence`` and ``mapping_distance``.

    Parameters
    ----------
    cells
        The own annotation of the new cells (rows in the order of ``transfer``).
    transfer
        :attr:`~.project.Mapping.labels`.
    states
        :func:`.states.frozen_state_calls` of the same cells (positional).
    """
    out = cells.copy()
    out["state_own"] = out["state"].astype(str)
    for col in states.columns:
        out[col] = states[col].to_numpy()
    lab = transfer.reindex(out["cell"].astype(str))
    for col in ("state", "cd4_cd8"):
        out[f"{col}_transfer"] = lab[col].to_numpy()
        out[f"{col}_transfer_confidence"] = lab[f"{col}_confidence"].to_numpy()
    out["mapping_distance"] = lab["mapping_distance"].to_numpy()
    out["lineage_state"] = out["cd4_cd8"].astype(str) + " " + out["state"].astype(str)
    return out


#: Columns of ``results/tables/new_products.tsv`` (:func:`summarise_products`).
SUMMARY_COLUMNS = ("sample", "feature", "value", "cohort_percentile", "interval_low",
                   "interval_high", "flag")


def summarise_products(cards: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The primary-panel rows of every new product's scorecard, stacked (rule
    ``score_products``, ``results/tables/new_products.tsv``).

    Parameters
    ----------
    cards
        Scorecards of :func:`score_new_product` (``results/new_products/{sample}.tsv``).

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`, one row per product and primary feature, in card order.
    """
    if not cards:
        raise CartCohortError("no new product to summarise. Fix: list the products in the "
                              "sheet given as config new_samples")
    rows = [c.loc[c["primary"].astype(str).str.lower() == "true", list(SUMMARY_COLUMNS)]
            for c in cards]
    return pd.concat(rows, ignore_index=True)
