"""The cart-cohort analysis as one plain scanpy/scirpy process (benchmark baseline).

What a competent user would write in a notebook, following the scanpy and scirpy
tutorials, without the workflow: read every library, concatenate, QC (per-sample
MAD thresholds on counts / genes / top-20 share / mito, scrublet per sample, scirpy
multichain cells), normalise + log1p, seurat_v3 HVGs per batch, PCA, harmony
(harmonypy), neighbours, UMAP, Leiden, state scores for the marker programs of
``resources/signatures/t_cell_states.yaml``, scirpy clonotypes (within patient) and
clonotype clusters, clonal expansion; writes one table of the QC-passing cells.

It uses plain ``scanpy``/``scirpy``/``harmonypy`` only (not the cartcohort library).
``tools/bench.py`` runs it on the same cohort as the workflow to measure the speed-up.

Example::

    python benchmarks/baseline_one_script.py --samples cohort/samples.tsv \
        --clinical cohort/clinical.tsv --signatures resources/signatures/t_cell_states.yaml \
        --out baseline/ --threads 2
"""

from __future__ import annotations

import argparse
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import harmonypy
import numpy as np
import pandas as pd
import scanpy as sc
import scirpy as ir
import yaml
from scipy.stats import median_abs_deviation

log = logging.getLogger("baseline")
TIMINGS: list[tuple[str, float]] = []

# QC settings as in config/config.yaml
N_MADS, N_MADS_MITO, MAX_PCT_MITO = 5, 3, 20.0
N_TOP_GENES, N_PCS, N_NEIGHBORS, UMAP_MIN_DIST = 2000, 30, 15, 0.3
LEIDEN_RESOLUTIONS = (0.5, 1.0)
SCRUBLET_THRESHOLD = 0.25
META = ["sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort"]


@contextmanager
def step(name: str):
    """Log and record how long a step took."""
    start = time.perf_counter()
    log.info("%s ...", name)
    yield
    TIMINGS.append((name, time.perf_counter() - start))
    log.info("%s done in %.1f s", name, TIMINGS[-1][1])


def mad_outlier(obs: pd.DataFrame, col: str, n_mads: float) -> pd.Series:
    """True where ``col`` is more than ``n_mads`` MADs from its sample's median."""
    grouped = obs.groupby("sample", observed=True)[col]
    med = grouped.transform("median")
    mad = grouped.transform(lambda x: median_abs_deviation(x, scale="normal"))
    return (obs[col] < med - n_mads * mad) | (obs[col] > med + n_mads * mad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", required=True, type=Path)
    parser.add_argument("--clinical", required=True, type=Path)
    parser.add_argument("--signatures", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sc.settings.n_jobs = args.threads
    args.out.mkdir(parents=True, exist_ok=True)
    seed = args.seed

    sheet = pd.read_csv(args.samples, sep="\t", dtype=str, keep_default_na=False)
    clinical = pd.read_csv(args.clinical, sep="\t", dtype=str, keep_default_na=False)
    base = args.samples.parent

    # ---- read every library ------------------------------------------------------
    with step("read"):
        gex_parts, tcr_cells = [], []
        for row in sheet.itertuples(index=False):
            gex_path = base / row.gex
            if gex_path.is_dir():
                a = sc.read_10x_mtx(gex_path)
            else:
                a = sc.read_10x_h5(gex_path)
            a.var_names_make_unique()
            a.obs_names = row.sample + "_" + a.obs_names
            for col in META:
                a.obs[col] = getattr(row, col)
            gex_parts.append(a)
            if row.vdj:
                vdj_path = base / row.vdj
                if vdj_path.suffix == ".tsv":
                    t = ir.io.read_airr(vdj_path)
                else:
                    t = ir.io.read_10x_vdj(vdj_path)
                t.obs_names = row.sample + "_" + t.obs_names
                # AnnDatas from read_10x_vdj and read_airr carry differently typed AIRR
                # fields and cannot be ad.concat-ed; scirpy's AirrCell round trip merges them.
                tcr_cells.extend(ir.io.to_airr_cells(t))
    with step("concat"):
        adata = ad.concat(gex_parts, join="inner", merge="same")
        del gex_parts
        adata.obs = adata.obs.merge(clinical, on="patient", how="left").set_index(
            adata.obs_names)
        tcr = ir.io.from_airr_cells(tcr_cells)
        del tcr_cells
    log.info("%d cells, %d genes, %d cells with TCR", adata.n_obs, adata.n_vars, tcr.n_obs)

    # ---- QC ------------------------------------------------------------------------
    with step("qc_metrics"):
        adata.var["mt"] = adata.var_names.str.startswith("MT-")
        sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=[20], log1p=True,
                                   inplace=True)
        adata.obs["outlier"] = (
            mad_outlier(adata.obs, "log1p_total_counts", N_MADS)
            | mad_outlier(adata.obs, "log1p_n_genes_by_counts", N_MADS)
            | mad_outlier(adata.obs, "pct_counts_in_top_20_genes", N_MADS)
        )
        adata.obs["mt_outlier"] = mad_outlier(adata.obs, "pct_counts_mt", N_MADS_MITO) | (
            adata.obs["pct_counts_mt"] > MAX_PCT_MITO
        )
    with step("scrublet"):
        # scanpy's automatic threshold needs scikit-image (not in the project's
        # environment); a fixed score threshold as in the Scrublet tutorial instead
        sc.pp.scrublet(adata, batch_key="sample", threshold=SCRUBLET_THRESHOLD,
                       random_state=seed)
    with step("tcr_chain_qc"):
        ir.pp.index_chains(tcr)
        ir.tl.chain_qc(tcr)
        adata.obs["chain_pairing"] = tcr.obs["chain_pairing"].astype(str).reindex(
            adata.obs_names)
    with step("filter"):
        keep = ~(
            adata.obs["outlier"]
            | adata.obs["mt_outlier"]
            | adata.obs["predicted_doublet"]
            | (adata.obs["chain_pairing"] == "multichain")
        )
        log.info("QC keeps %d of %d cells", int(keep.sum()), adata.n_obs)
        adata = adata[keep.to_numpy()].copy()

    # ---- normalisation, HVG, PCA, harmony, graph -----------------------------------
    with step("normalize"):
        adata.layers["counts"] = adata.X.copy()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    with step("hvg"):
        # seurat_v3's LOESS fails as "near singular" on some real-shaped batches with
        # scanpy's span 0.3 (measured at 200k); an analyst retries with a wider span
        for span in (0.3, 0.5, 1.0):
            try:
                sc.pp.highly_variable_genes(
                    adata, flavor="seurat_v3", layer="counts", batch_key="batch",
                    n_top_genes=min(N_TOP_GENES, adata.n_vars - 1), span=span,
                )
                break
            except ValueError as err:
                log.warning("seurat_v3 HVG with span %s failed: %s", span, err)
        else:
            raise RuntimeError("seurat_v3 HVG failed with every span")
    with step("pca"):
        sc.tl.pca(adata, n_comps=N_PCS, mask_var="highly_variable", random_state=seed)
    with step("harmony"):
        ho = harmonypy.run_harmony(adata.obsm["X_pca"], adata.obs, ["batch"],
                                   random_state=seed, ncores=args.threads, verbose=False)
        adata.obsm["X_pca_harmony"] = np.asarray(ho.Z_corr)  # harmonypy 2.x: cells x PCs
    with step("neighbors"):
        sc.pp.neighbors(adata, n_neighbors=N_NEIGHBORS, use_rep="X_pca_harmony",
                        random_state=seed)
    with step("umap"):
        sc.tl.umap(adata, min_dist=UMAP_MIN_DIST, random_state=seed)
    with step("leiden"):
        for res in LEIDEN_RESOLUTIONS:
            sc.tl.leiden(adata, resolution=res, key_added=f"leiden_{res}", flavor="igraph",
                         n_iterations=2, random_state=seed)

    # ---- cell states -----------------------------------------------------------------
    with step("score_states"):
        signatures = yaml.safe_load(args.signatures.read_text())
        score_cols = []
        for state in signatures["states"]:
            genes = [g for g in state["up"] if g in adata.var_names]
            if len(genes) < 2:
                log.info("state %s: fewer than 2 marker genes in the data, skipped", state["id"])
                continue
            sc.tl.score_genes(adata, genes, score_name=f"score_{state['id']}",
                              random_state=seed)
            score_cols.append(f"score_{state['id']}")
        adata.obs["state"] = adata.obs[score_cols].idxmax(axis=1).str.removeprefix("score_")

    # ---- clonotypes ------------------------------------------------------------------
    with step("clonotypes"):
        tcr = tcr[tcr.obs_names.isin(adata.obs_names)].copy()
        tcr.obs["patient"] = adata.obs["patient"].reindex(tcr.obs_names).to_numpy()
        ir.pp.ir_dist(tcr, metric="identity", sequence="nt", n_jobs=args.threads)
        ir.tl.define_clonotypes(tcr, receptor_arms="all", dual_ir="any",
                                within_group=["receptor_type", "patient"],
                                n_jobs=args.threads)
        ir.pp.ir_dist(tcr, metric="hamming", sequence="aa", cutoff=1, n_jobs=args.threads)
        ir.tl.define_clonotype_clusters(tcr, sequence="aa", metric="hamming",
                                        receptor_arms="all", dual_ir="any",
                                        within_group=["receptor_type", "patient"],
                                        n_jobs=args.threads)
        ir.tl.clonal_expansion(tcr)

    # ---- cells table -----------------------------------------------------------------
    with step("write"):
        cells = adata.obs[META + ["response", "leiden_0.5", "leiden_1.0", "state",
                                  *score_cols, "doublet_score", "chain_pairing"]].copy()
        clone_cols = ["clone_id", "clone_id_size", "cc_aa_hamming", "clonal_expansion"]
        cells = cells.join(tcr.obs[clone_cols])
        cells["umap_1"], cells["umap_2"] = adata.obsm["X_umap"][:, 0], adata.obsm["X_umap"][:, 1]
        cells.index.name = "cell"
        cells.to_csv(args.out / "cells.tsv.gz", sep="\t")
    pd.DataFrame(TIMINGS, columns=["step", "seconds"]).to_csv(
        args.out / "timings.tsv", sep="\t", index=False, float_format="%.2f")
    log.info("wrote %s (%d cells); total %.0f s", args.out / "cells.tsv.gz", len(cells),
             sum(t for _, t in TIMINGS))


if __name__ == "__main__":
    main()
