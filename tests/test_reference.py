"""The frozen cohort reference and new products placed in it (issue 20): projection with
the frozen PCA, kNN label transfer leaving one library out, the refusals of bad input,
checksums, settings and the frozen rarefaction depth. Synthetic data, no workflow run
(the demo numbers are measured by the score_products runs described in the README)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cartcohort import reference as R
from cartcohort.errors import CartCohortError
from cartcohort.pp import prepare_cohort
from cartcohort.reference.freeze import resolved_depth

TYPES = ("naive", "effector", "exhausted")


def _cohort(seed: int = 0, n_libraries: int = 4, n_cells: int = 150,
            n_genes: int = 300) -> ad.AnnData:
    """Raw counts of three cell types (30 marker genes each, 1.6x up) in libraries with a
    mild library effect (each library scales a random tenth of the genes by 1.5)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 0.5, size=n_genes)
    profiles = np.tile(base, (len(TYPES), 1))
    for t in range(len(TYPES)):
        profiles[t, 30 * t:30 * (t + 1)] *= 1.6
    blocks, obs = [], []
    for lib in range(n_libraries):
        effect = np.ones(n_genes)
        effect[rng.choice(n_genes, n_genes // 10, replace=False)] = 1.5
        types = rng.integers(0, len(TYPES), size=n_cells)
        depth = rng.uniform(0.6, 1.4, size=(n_cells, 1))
        blocks.append(rng.poisson(profiles[types] * effect * depth * 3.0))
        obs.append(pd.DataFrame({"sample": f"L{lib}", "batch": f"b{lib % 2}",
                                 "state": np.asarray(TYPES)[types]},
                                index=[f"L{lib}_c{i}" for i in range(n_cells)]))
    var = pd.DataFrame({"is_car": False}, index=[f"G{i}" for i in range(n_genes)])
    var.iloc[-1, 0] = True
    var.index = [*var.index[:-1], "CAR"]
    return ad.AnnData(X=sp.csr_matrix(np.vstack(blocks), dtype=np.float32),
                      obs=pd.concat(obs), var=var)


def _model(cohort: ad.AnnData) -> tuple[ad.AnnData, ad.AnnData]:
    prepared = prepare_cohort(cohort, n_top_genes=150, n_pcs=10, hvg_flavor="seurat")
    calls = prepared.obs[["sample", "state"]].assign(cd4_cd8="CD4")
    return prepared, R.projection_model(prepared, x_integrated=prepared.obsm["X_pca"][:, :5],
                                        calls=calls)


def test_projection_reproduces_the_cohort_pca():
    prepared, model = _model(_cohort())
    x = R.project_pca(sp.csr_matrix(prepared.layers["counts"]), model)
    ref = prepared.obsm["X_pca"]
    assert np.abs(x - ref).max() < 1e-3 * np.abs(ref).max()


def test_leave_one_library_out_labels_agree_with_in_cohort_labels():
    cohort = _cohort()
    for left_out in ("L0", "L3"):
        keep = (cohort.obs["sample"] != left_out).to_numpy()
        _, model = _model(cohort[keep].copy())
        new = cohort[~keep]
        counts = R.align_counts(new.X, new.var_names, model)
        mapping = R.map_to_reference(counts, model=model, cells=list(new.obs_names),
                                     labels=("state",))
        agree = (mapping.labels["state"].to_numpy() == new.obs["state"].to_numpy()).mean()
        assert agree >= 0.9, (left_out, agree)
        assert mapping.labels["state_confidence"].between(0, 1).all()
        assert mapping.x_integrated.shape == (new.n_obs, 5)
        assert mapping.neighbours.shape == (new.n_obs, 15)


def test_knn_vote_weights_and_ties():
    labels = pd.Series(["a", "b", "b", "c"])
    nn = np.array([[0, 1, 2], [0, 1, 3], [3, 0, 1]])
    w = np.array([[5.0, 1.0, 1.0], [1.0, 1.0, 1.0], [2.0, 1.0, 1.0]])
    call, share = R.knn_vote(nn, w, labels)
    assert list(call) == ["a", "a", "c"]  # weight beats count; a 1-1-1 tie -> first sorted
    assert np.allclose(share, [5 / 7, 1 / 3, 0.5])


def test_genes_or_car_feature_not_in_the_reference_are_refused():
    _, model = _model(_cohort(n_libraries=2, n_cells=60))
    genes = list(model.var_names)
    with pytest.raises(CartCohortError, match="CAR feature.*'CAR'"):
        R.gene_mismatch(model, [g for g in genes if g != "CAR"], source="new.h5mu")
    with pytest.raises(CartCohortError, match=r"2 of the reference's 300 genes are missing"
                                              r" \(first: G5, G7\)"):
        R.gene_mismatch(model, [g for g in genes if g not in ("G5", "G7")], source="new.h5mu")
    R.gene_mismatch(model, [*genes, "EXTRA"], source="new.h5mu")  # extra genes are fine


def test_settings_other_than_the_references_are_refused():
    frozen = {"load": {"gene_join": "intersect"}, "qc": {"n_mads": 5, "doublets": {"x": 1}},
              "car_features": ["CAR"], "primary_timepoint": "IP"}
    R.check_settings(json.loads(json.dumps(frozen)), frozen, source="settings.json")
    changed = json.loads(json.dumps(frozen))
    changed["qc"]["doublets"]["x"] = 2
    with pytest.raises(CartCohortError, match=r"qc\.doublets\.x \(reference 1, this run 2\)"):
        R.check_settings(changed, frozen, source="settings.json")


def test_auto_rarefaction_depth_is_frozen_at_the_cohorts():
    settings = {"repertoire": {"rarefaction_depth": "auto", "seed": 0}}
    rep = pd.DataFrame({"rarefaction_depth": [115, 115, np.nan]})
    assert resolved_depth(settings, rep, source="r.tsv")["repertoire"]["rarefaction_depth"] == 115
    fixed = {"repertoire": {"rarefaction_depth": 80}}
    assert resolved_depth(fixed, rep, source="r.tsv")["repertoire"]["rarefaction_depth"] == 80
    with pytest.raises(CartCohortError, match="several rarefaction depths"):
        resolved_depth(settings, pd.DataFrame({"rarefaction_depth": [100, 115]}), source="r")


def test_a_reference_file_changed_after_freezing_is_refused(tmp_path):
    (tmp_path / "settings.json").write_text("{}\n")
    manifest = {"files": {"settings.json": R.sha256(tmp_path / "settings.json")}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert R.read_reference_dir(tmp_path)["files"] == manifest["files"]
    (tmp_path / "settings.json").write_text('{"qc": 1}\n')
    with pytest.raises(CartCohortError, match="sha256 differs"):
        R.read_reference_dir(tmp_path)
    with pytest.raises(CartCohortError, match="not a reference folder"):
        R.read_reference_dir(tmp_path / "missing")


def test_summary_stacks_the_primary_rows():
    card = pd.DataFrame({"sample": "N1", "feature": ["a", "b"], "primary": [True, False],
                         "value": [0.1, 0.2], "cohort_percentile": [50.0, 10.0],
                         "interval_low": [0.0, np.nan], "interval_high": [0.3, np.nan],
                         "flag": ["within_responder_interval", "exploratory_not_flagged"]})
    out = R.summarise_products([card, card.assign(sample="N2")])
    assert list(out["sample"]) == ["N1", "N2"] and set(out["feature"]) == {"a"}
    assert tuple(out.columns) == R.SUMMARY_COLUMNS


def test_a_frozen_lineage_model_gives_the_calls_of_fitting_it_here():
    """call_lineage(fit=...) with the model fitted on the same cells reproduces the fitted
    run's calls; a model frozen on another cohort still calls planted CD4/CD8 cells."""
    from cartcohort.tl.annotate import call_lineage
    from cartcohort.tl.annotate.lineage import fit_lineage

    rng = np.random.default_rng(1)
    n = 400
    truth = rng.choice(["CD4", "CD8", "DN"], size=n, p=[0.5, 0.4, 0.1])
    lib = rng.uniform(2000, 6000, size=n)
    cd4 = rng.poisson(lib * np.where(truth == "CD4", 8e-4, 2e-6))
    cd8 = rng.poisson(lib * np.where(truth == "CD8", 2e-3, 1e-5))
    graph = sp.csr_matrix((n, n))
    args = dict(cd8_counts=cd8, library_size=lib, library=np.full(n, "L"), graph=graph,
                clone_aware=False)
    fitted = call_lineage(cd4, **args)
    fit = fit_lineage(np.column_stack([cd4, cd8]).astype(float), lib, None, np.ones(n, bool))
    frozen = call_lineage(cd4, **args, fit=fit)
    assert (frozen.final_call == fitted.final_call).all()
    half = slice(0, n // 2)
    other = call_lineage(cd4[half], **{**args, "cd8_counts": cd8[half],
                                        "library_size": lib[half],
                                        "library": np.full(n // 2, "N"),
                                        "graph": sp.csr_matrix((n // 2, n // 2))}, fit=fit)
    called = truth[half] != "DN"
    assert (other.final_call[called] == truth[half][called]).mean() >= 0.95


def test_new_sample_sheet_refuses_a_library_not_at_the_primary_timepoint(tmp_path):
    import yaml
    from cartcohort.errors import InputError
    from cartcohort.reference.sheet import prepare_new_samples
    from conftest import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    sheet = tmp_path / "new.tsv"
    sheet.write_text(
        "sample\tpatient\ttimepoint\ttimepoint_day\tcompartment\tbatch\tsort\tgex\tvdj\n"
        "N1_IP\tN1\tIP\t0\tproduct\tb1\tCD3+\tx.h5\t\n"
        "N1_D14\tN1\tD14\t14\tPB\tb1\tCD3+\ty.h5\t\n")
    with pytest.raises(InputError, match="sample 'N1_D14': timepoint is not the primary"):
        prepare_new_samples(config, path=sheet, check_files=False)
    sheet.write_text("\n".join(sheet.read_text().splitlines()[:2]) + "\n")
    prepared = prepare_new_samples(config, path=sheet, check_files=False)
    assert list(prepared.samples.index) == ["N1_IP"]
    assert not [w for w in prepared.warnings if w["check"] == "response_na"]


def _batch_cohort() -> ad.AnnData:
    """The cohort with a strong batch effect: batch b1 scales a fixed fifth of the genes
    by 2.5 (on top of the libraries' own effects)."""
    cohort = _cohort(seed=1, n_libraries=6)
    x = cohort.X.toarray()
    rng = np.random.default_rng(7)
    genes = rng.choice(cohort.n_vars - 1, cohort.n_vars // 5, replace=False)
    b1 = (cohort.obs["batch"] == "b1").to_numpy()
    x[np.ix_(b1, genes)] = rng.poisson(x[np.ix_(b1, genes)] * 2.5)
    cohort.X = sp.csr_matrix(x, dtype=np.float32)
    return cohort


def test_a_left_out_library_takes_its_batchs_correction_and_lands_among_its_state():
    """Leave-one-library-out with a batch effect: the integration is a perfect linear
    batch correction (each batch's PCA centred); the left-out library's corrected
    coordinates land where the integration put its cells and its neighbours in the
    joint graph share its cells' state; without the batch (unmatched) they do not."""
    prepared = prepare_cohort(_batch_cohort(), n_top_genes=150, n_pcs=10,
                              hvg_flavor="seurat")
    pca = prepared.obsm["X_pca"]
    batch = prepared.obs["batch"].to_numpy()
    integrated = pca.copy()
    for b in np.unique(batch):
        integrated[batch == b] -= pca[batch == b].mean(axis=0)
    calls = prepared.obs[["sample", "batch", "state"]].assign(cd4_cd8="CD4")
    full = R.projection_model(prepared, x_integrated=integrated, calls=calls)
    full.uns["integration"] = {"method": "harmony"}
    for left_out in ("L3",):  # batch b1, the one scaled
        new = (prepared.obs["sample"] == left_out).to_numpy()
        ref = full[~new].copy()
        b = str(batch[new][0])
        x_new = pca[new]
        fixed, matched = R.corrected_embedding(x_new, model=ref, batch=b, n_neighbors=15)
        _, unmatched = R.corrected_embedding(x_new, model=ref, batch="b9", n_neighbors=15)
        assert matched and not unmatched
        err = np.linalg.norm(fixed - integrated[new], axis=1).mean()
        raw = np.linalg.norm(x_new - integrated[new], axis=1).mean()
        assert err < 0.2 * raw, (left_out, err, raw)
        to_ref, _ = R.joint_graph(fixed, model=ref, n_neighbors=15)
        state = ref.obs["state"].to_numpy()
        truth = prepared.obs["state"].to_numpy()[new]
        vote = [pd.Series(to_ref[i].data).groupby(state[to_ref[i].indices]).sum().idxmax()
                for i in range(to_ref.shape[0])]
        assert np.mean(np.asarray(vote) == truth) >= 0.9, left_out
        to_ref_raw, _ = R.joint_graph(x_new, model=ref, n_neighbors=15)
        same_batch = (ref.obs["batch"].to_numpy()[to_ref_raw.indices] == b).mean()
        assert same_batch < 0.8  # uncorrected coordinates fall among the other batch too


def test_a_library_of_the_other_chemistry_is_refused():
    cohort = {"P1": "Single Cell 5' PE v2", "P2": "Single Cell 5' v1", "P3": ""}
    assert [R.chemistry_end(c) for c in (*cohort.values(), "Single Cell 3' v3",
                                         "SC3Pv3", "three")] == ["5'", "5'", "", "3'", "", ""]
    R.chemistry_mismatch("Single Cell 5' PE v2", cohort, source="new.h5mu")
    R.chemistry_mismatch("", cohort, source="new.h5mu")  # not recorded (mtx): not checked
    with pytest.raises(CartCohortError, match=r"new\.h5mu: chemistry .Single Cell 3' v3. "
                                              r"\(3'\) differs .*2 of 2 .*P1: .Single Cell 5"):
        R.chemistry_mismatch("Single Cell 3' v3", cohort, source="new.h5mu")


def test_the_load_step_records_the_chemistry_of_a_cell_ranger_h5(tmp_path):
    import h5py
    from cartcohort.io.gex import library_chemistry
    from cartcohort.io.locate import gex_input

    path = tmp_path / "filtered_feature_bc_matrix.h5"
    with h5py.File(path, "w") as f:
        f.attrs["chemistry_description"] = np.bytes_("Single Cell 3' v3")
    assert library_chemistry(gex_input(path)) == "Single Cell 3' v3"
    mu = tmp_path / "lib.h5mu"
    with h5py.File(mu, "w") as f:
        f["mod/gex/uns/library/chemistry"] = "Single Cell 3' v3"
    assert R.read_chemistry(mu) == "Single Cell 3' v3"
    with h5py.File(tmp_path / "none.h5mu", "w") as f:
        f.create_group("mod/gex/uns")
    assert R.read_chemistry(tmp_path / "none.h5mu") == ""


def test_frozen_clone_dropout_read_from_the_reference(tmp_path):
    """The cohort's clone CAR dropout travels in the reference's annotation_car_models.tsv;
    a reference built before the column is refused with the fix, and a cohort without
    clones to estimate it from leaves the new library's own estimate (None)."""
    from cartcohort.reference.score import frozen_clone_dropout

    table = pd.DataFrame({"sample": ["P01_IP", "P02_IP"], "clone_dropout": [0.07, 0.07]})
    table.to_csv(tmp_path / "annotation_car_models.tsv", sep="\t", index=False)
    assert frozen_clone_dropout(tmp_path) == pytest.approx(0.07)
    table.assign(clone_dropout=np.nan).to_csv(tmp_path / "annotation_car_models.tsv",
                                              sep="\t", index=False)
    assert frozen_clone_dropout(tmp_path) is None
    table.drop(columns="clone_dropout").to_csv(tmp_path / "annotation_car_models.tsv",
                                               sep="\t", index=False)
    with pytest.raises(CartCohortError, match="clone_dropout.*rebuild it"):
        frozen_clone_dropout(tmp_path)

