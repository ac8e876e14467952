"""Tests of the per-sample feature table (cartcohort.tl.features)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartcohort.errors import InputError
from cartcohort.tables import read_table, write_table
from cartcohort.tl import features as F
from _truth_cells import truth_feature_cells


def _cells() -> pd.DataFrame:
    """Two samples of one patient, hand-countable.

    S1 (IP, 8 cells): CD4 x5, CD8 x3; states tcm x2, naive_tscm x1, exhausted x3, tem x2;
    S2 (D14, 4 cells): CD8 x4; states exhausted x4.
    """
    rows = [
        # cell, sample, cd4_cd8, state, car, pd1, tim3, lag3, clone
        ("c1", "S1", "CD4", "tcm", True, False, False, False, "P1_1"),
        ("c2", "S1", "CD4", "tcm", False, False, False, False, "P1_1"),
        ("c3", "S1", "CD4", "naive_tscm", True, False, False, False, "P1_1"),
        ("c4", "S1", "CD4", "exhausted", True, True, True, True, "P1_2"),
        ("c5", "S1", "CD4", "tem", None, True, False, False, "P1_2"),
        ("c6", "S1", "CD8", "exhausted", False, True, True, False, "P1_3"),
        ("c7", "S1", "CD8", "exhausted", True, True, True, True, None),
        ("c8", "S1", "CD8", "tem", False, False, False, False, "P1_4"),
        ("d1", "S2", "CD8", "exhausted", True, True, False, False, "P1_1"),
        ("d2", "S2", "CD8", "exhausted", True, True, False, False, "P1_1"),
        ("d3", "S2", "CD8", "exhausted", False, True, False, False, "P1_5"),
        ("d4", "S2", "CD8", "exhausted", False, False, False, False, "P1_6"),
    ]
    df = pd.DataFrame(
        rows,
        columns=["cell", "sample", "cd4_cd8", "state", "car_positive", "pd1_pos", "tim3_pos",
                 "lag3_pos", "clone_id"],
    )
    df["triple_pos"] = df["pd1_pos"] & df["tim3_pos"] & df["lag3_pos"]
    df["patient"] = "P1"
    df["timepoint"] = np.where(df["sample"] == "S1", "IP", "D14")
    df["timepoint_day"] = np.where(df["sample"] == "S1", 0.0, 14.0)
    df["compartment"] = np.where(df["sample"] == "S1", "product", "PB")
    df["score_tcm"] = np.arange(len(df), dtype=float)
    df["score_naive_tscm"] = 1.0
    df["score_exhausted"] = np.where(df["state"] == "exhausted", 2.0, 0.0)
    return df


def test_hand_counted_features():
    f = F.sample_features(_cells()).set_index("sample")
    s1, s2 = f.loc["S1"], f.loc["S2"]
    assert s1["patient"] == "P1" and s1["timepoint"] == "IP" and s2["timepoint_day"] == 14
    assert s1["n_cells"] == 8 and s2["n_cells"] == 4
    # CD4:CD8 = 5:3; log2 with a 0.5 pseudocount; S2 has no CD4 -> ratio 0, log finite
    assert s1["cd4_cd8_ratio"] == pytest.approx(5 / 3)
    assert s1["log2_cd4_cd8_ratio"] == pytest.approx(np.log2(5.5 / 3.5))
    assert s2["cd4_cd8_ratio"] == 0
    assert s2["log2_cd4_cd8_ratio"] == pytest.approx(np.log2(0.5 / 4.5))
    # overall fractions
    assert s1["frac_tcm"] == pytest.approx(2 / 8)
    assert s1["frac_exhausted"] == pytest.approx(3 / 8)
    assert s1["memory_like_fraction"] == pytest.approx(3 / 8)
    assert s1["exhausted_fraction"] == s1["frac_exhausted"]
    assert s2["exhausted_fraction"] == 1.0
    # within CD4 / CD8; S2 has no CD4 cells -> NA, not 0
    assert s1["memory_like_fraction_cd4"] == pytest.approx(3 / 5)
    assert s1["frac_exhausted_cd8"] == pytest.approx(2 / 3)
    assert np.isnan(s2["frac_exhausted_cd4"])
    # CAR+: S1 has 4 CAR+ of 7 with known status (c5 unknown)
    assert s1["car_positive_fraction"] == pytest.approx(4 / 7)
    assert s1["frac_exhausted_car"] == pytest.approx(2 / 4)  # c4, c7 among c1,c3,c4,c7
    assert s1["memory_like_fraction_car"] == pytest.approx(2 / 4)
    # checkpoint markers
    assert s1["pd1_pos_fraction"] == pytest.approx(4 / 8)
    assert s1["triple_pos_fraction"] == pytest.approx(2 / 8)
    assert s1["pd1_pos_fraction_cd8"] == pytest.approx(2 / 3)
    assert s2["pd1_pos_fraction"] == pytest.approx(3 / 4)
    # mean scores
    assert s1["mean_score_tcm"] == pytest.approx(np.mean(np.arange(8)))
    assert s1["mean_score_exhausted"] == pytest.approx(2 * 3 / 8)
    assert s1["mean_score_memory_like"] == pytest.approx(np.mean((np.arange(8) + 1) / 2))
    # clones in S1: P1_1 x3, P1_2 x2, P1_3 x1, P1_4 x1 (7 TCR+ cells of 8)
    n = np.array([3, 2, 1, 1])
    gs = 1 - (n * (n - 1)).sum() / (7 * 6)
    assert s1["tcr_fraction"] == pytest.approx(7 / 8)
    assert s1["clonal_diversity_gini_simpson"] == pytest.approx(gs)
    assert s1["top_clone_fraction"] == pytest.approx(3 / 7)
    assert s1["expanded_clone_fraction"] == pytest.approx(5 / 7)
    # S2: P1_1 x2, P1_5, P1_6
    assert s2["clonal_diversity_gini_simpson"] == pytest.approx(1 - 2 / 12)


def test_headline_features_come_first_and_states_vocabulary():
    f = F.sample_features(_cells())
    cols = list(f.columns)
    assert cols[:5] == ["sample", "patient", "timepoint", "timepoint_day", "compartment"]
    assert cols[5:10] == ["n_cells", "cd4_cd8_ratio", "log2_cd4_cd8_ratio",
                          "memory_like_fraction", "exhausted_fraction"]
    # every core state has a column even when absent (0, not missing)
    assert f.loc[f["sample"] == "S1", "frac_treg"].item() == 0
    assert "frac_gd" not in cols  # optional states only when observed


def test_no_car_information_gives_no_car_features():
    cells = _cells()
    cells["car_positive"] = np.nan
    f = F.sample_features(cells)
    assert not [c for c in f.columns if c.endswith("_car") or c.startswith("car_positive")]


def test_round_trip_through_tsv(tmp_path):
    path = tmp_path / "cells.tsv.gz"
    write_table(_cells(), path)
    back = read_table(path)
    a = F.sample_features(_cells())
    b = F.sample_features(back)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_numeric_looking_ids_stay_text_through_tsv(tmp_path):
    path = tmp_path / "cells.tsv.gz"
    cells = _cells().assign(sample=lambda d: d["sample"].map({"S1": "001", "S2": "002"}))
    write_table(cells, path)
    f = F.sample_features(read_table(path))
    assert f["sample"].tolist() == ["001", "002"]  # leading zeros kept


def test_repertoire_columns_are_prefixed_and_filtered():
    rep = pd.DataFrame(
        {
            "sample": ["S1", "S2", "S9"],
            "patient": ["P1", "P1", "P9"],
            "timepoint_day": [0, 14, 0],
            "rarefied_shannon": [3.1, 2.0, 1.0],
            "rarefied_shannon_ci_low": [2.9, 1.8, 0.9],
            "n_clones": [4, 3, 1],
            "is_product": [True, False, True],
            "rarefaction_note": [np.nan, np.nan, np.nan],
            "product_samples": ["S1", "S1", "S9"],
            "frac_product_clones_detected_later": [0.5, np.nan, np.nan],
        }
    )
    f = F.sample_features(_cells(), repertoire=rep).set_index("sample")
    rep_cols = [c for c in f.columns if c.startswith("rep_")]
    assert sorted(rep_cols) == sorted(
        ["rep_rarefied_shannon", "rep_rarefied_shannon_ci_low", "rep_n_clones",
         "rep_frac_product_clones_detected_later"]
    )
    assert f.loc["S2", "rep_rarefied_shannon"] == 2.0
    assert np.isnan(f.loc["S2", "rep_frac_product_clones_detected_later"])
    assert "S9" not in f.index  # repertoire-only samples are ignored
    assert F.is_descriptive("rep_n_clones") and F.is_descriptive("rep_rarefied_shannon_ci_low")
    assert F.is_descriptive("n_cells") and not F.is_descriptive("rep_rarefied_shannon")


def test_repertoire_with_duplicate_samples_is_rejected():
    rep = pd.DataFrame({"sample": ["S1", "S1"], "x": [1.0, 2.0]})
    with pytest.raises(InputError, match="several rows"):
        F.sample_features(_cells(), repertoire=rep, repertoire_source="rep.tsv")


def test_missing_column_names_file_and_column():
    cells = _cells().drop(columns=["state"])
    with pytest.raises(InputError) as err:
        F.sample_features(cells, source="results/tables/cells.tsv.gz")
    assert "cells.tsv.gz" in str(err.value) and "'state'" in str(err.value)


def test_inconsistent_sample_metadata_and_bad_values_are_rejected():
    cells = _cells()
    cells.loc[0, "patient"] = "P2"
    with pytest.raises(InputError, match="more than one value"):
        F.sample_features(cells)
    cells = _cells()
    cells["car_positive"] = cells["car_positive"].astype(object)
    cells.loc[1, "car_positive"] = "maybe"
    with pytest.raises(InputError, match="car_positive"):
        F.sample_features(cells)
    cells = _cells()
    cells.loc[2, "cd4_cd8"] = "CD3"
    with pytest.raises(InputError, match="lineage"):
        F.sample_features(cells)


def test_features_track_planted_truth_of_the_simulator():
    from cartcohort.datasets import simulate_cohort

    c = simulate_cohort(seed=3, n_patients=8, min_cells=200, max_cells=250,
                        frac_longitudinal=0.0, n_background_genes=10)
    cells = truth_feature_cells(c)
    f = F.sample_features(cells).set_index("patient")
    truth = c.truth_patients.set_index("patient").loc[f.index]
    for feat, planted in (("memory_like_fraction", "memory_like_fraction"),
                          ("exhausted_fraction", "exhausted_fraction")):
        r = np.corrcoef(f[feat], truth[planted])[0, 1]
        assert r > 0.9, (feat, r)
    # larger Zipf exponent alpha = more expanded = less diverse
    rho = pd.Series(f["clonal_diversity_gini_simpson"]).corr(
        truth["clonal_diversity_param"], method="spearman")
    assert rho < -0.6
