"""Longitudinal contrasts, Cox / landmark survival and their figures (issue 26)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartcohort import stats as S
from cartcohort.dictionary import FeatureDictionary, FeatureInfo
from cartcohort.errors import InputError
from cartcohort.tl import features as F
from _truth_cells import truth_feature_cells

ENDPOINT = dict(endpoint="PFS", time="pfs_days", event="pfs_event", min_events_per_variable=10,
                landmark_day=30)

# --------------------------------------------------------------------------- longitudinal

#: planted blood-timepoint means (non-responders) and the extra change of responders
_TP_DAYS = {"D7": 7, "D14": 14, "M3": 90}
_TP_MEAN = {"D7": 0.0, "D14": 1.0, "M3": 0.5}
_RESP_EXTRA = {"D7": 0.0, "D14": 0.8, "M3": 0.0}


def _blood_cohort(n_per_group: int = 8, *, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Product + three blood timepoints per patient; ``planted`` follows the tables above.

    The product rows carry a value far off every blood value: if they entered the
    model, every contrast would move.
    """
    rng = np.random.default_rng(seed)
    rows, clin = [], []
    for i in range(2 * n_per_group):
        resp, pid = i < n_per_group, f"P{i:02d}"
        clin.append({"patient": pid, "response": "CR" if resp else "PD"})
        b = rng.normal(0, 0.5)
        rows.append({"sample": f"{pid}_IP", "patient": pid, "timepoint": "IP",
                     "timepoint_day": 0, "compartment": "product", "sort": "CD3+",
                     "n_cells": 300, "planted": 50.0, "flat": -50.0})
        for tp, day in _TP_DAYS.items():
            mean = _TP_MEAN[tp] + (_RESP_EXTRA[tp] if resp else 0.0)
            rows.append({"sample": f"{pid}_{tp}", "patient": pid, "timepoint": tp,
                         "timepoint_day": day, "compartment": "PB", "sort": "CD3+",
                         "n_cells": 300, "planted": b + mean + rng.normal(0, 0.2),
                         "flat": b + rng.normal(0, 0.2)})
    return pd.DataFrame(rows), pd.DataFrame(clin)


def test_longitudinal_contrasts_recover_planted_timepoint_effects():
    feats, clin = _blood_cohort()
    out = S.longitudinal_models(feats, clinical=clin, primary_features=["planted"])
    assert set(out["test"]) == {"mixedlm"}
    assert (out["n_samples"] == 16 * 3).all()  # the 16 product rows never enter
    pl = out[out["feature"] == "planted"].set_index(["contrast", "timepoint"])
    truth = {
        ("change_nonresponders", "D14"): 1.0,
        ("change_responders", "D14"): 1.8,
        ("change_difference", "D14"): 0.8,
        ("change_nonresponders", "M3"): 0.5,
        ("change_difference", "M3"): 0.0,
        ("responder_difference", "D7"): 0.0,
        ("responder_difference", "D14"): 0.8,
    }
    for key, value in truth.items():
        row = pl.loc[key]
        assert row["ci_low"] < value < row["ci_high"], (key, row.to_dict())
        # within-patient changes are precise; group differences carry the patient SD 0.5
        tol = 0.6 if key[0] == "responder_difference" else 0.25
        assert row["effect"] == pytest.approx(value, abs=tol), key
    assert pl.loc[("change_difference", "D14"), "qvalue"] < 1e-3
    assert pl.loc[("change_responders", "D14"), "comparison"] == "day 14 vs day 7, responders"
    assert (pl["family"] == "primary").all()
    flat = out[out["feature"] == "flat"]
    assert (flat["family"] == "exploratory").all() and (flat["pvalue"] > 0.001).all()
    assert out["note"].str.contains(r"product \(IP\) left out").all()


def test_longitudinal_singular_fit_is_reported_not_estimated():
    feats, clin = _blood_cohort(seed=2)
    blood = feats["compartment"] == "PB"
    # every patient's blood values sum to the same total: no between-patient variance
    rng = np.random.default_rng(0)
    for pid in feats["patient"].unique():
        idx = feats.index[blood & (feats["patient"] == pid)]
        e = rng.normal(0, 1, size=len(idx))
        feats.loc[idx, "flat"] = e - e.mean() + feats.loc[idx, "timepoint"].map(_TP_MEAN)
    out = S.longitudinal_models(feats, clinical=clin)
    flat = out[out["feature"] == "flat"]
    assert flat["note"].str.startswith("singular fit").all(), flat["note"].tolist()
    assert flat[["effect", "ci_low", "ci_high", "pvalue", "qvalue"]].isna().all().all()
    assert out.loc[out["feature"] == "planted", "effect"].notna().all()


def test_longitudinal_skips_with_reasons():
    feats, clin = _blood_cohort()
    one_tp = feats[feats["timepoint"].isin(["IP", "D7"])]
    skipped = S.longitudinal_models(one_tp, clinical=clin)
    assert skipped.loc[0, "test"] == "skipped" and "single PB timepoint" in skipped.loc[0, "note"]
    # M3 sampled in 2 non-responders only: left out, the other two timepoints are modelled
    sparse = feats[~((feats["timepoint"] == "M3") & (feats["patient"] > "P09"))]
    out = S.longitudinal_models(sparse, clinical=clin)
    assert set(out["timepoint"]) == {"D7", "D14"}
    mixed = feats.assign(sort=np.where(feats["timepoint"] == "M3", "CAR+", "CD3+"))
    note = S.longitudinal_models(mixed, clinical=clin)["note"].iloc[0]
    assert "sorts differ across timepoints" in note and "M3: CAR+" in note


# --------------------------------------------------------------------------- survival


def _survival_cohort(n: int = 40, *, seed: int = 3, event_rate: float = 0.8):
    """Product rows with ``planted`` driving the hazard, one D14 blood row per patient."""
    rng = np.random.default_rng(seed)
    rows, clin = [], []
    for i in range(n):
        pid, risk = f"P{i:02d}", rng.normal()
        t = rng.exponential(300 * np.exp(-1.5 * risk))
        clin.append({"patient": pid, "response": "CR" if risk < 0 else "PD",
                     "pfs_days": round(t) + 1, "pfs_event": int(rng.random() < event_rate)})
        product = {"sample": f"{pid}_IP", "patient": pid, "timepoint": "IP", "timepoint_day": 0,
                   "compartment": "product", "n_cells": 300,
                   "planted": risk + rng.normal(0, 0.3), "noise": rng.normal()}
        product.update({c: rng.random() for c in F.IN_VIVO_REPERTOIRE})
        rows += [product, {
            "sample": f"{pid}_D14", "patient": pid, "timepoint": "D14", "timepoint_day": 14,
            "compartment": "PB", "n_cells": 300, "planted": risk + rng.normal(0, 0.3),
            "noise": rng.normal(), "rep_frac_cells_from_product_clones": -risk}]
    return pd.DataFrame(rows), pd.DataFrame(clin)


def test_cox_baseline_and_landmark_analyses():
    from lifelines import CoxPHFitter

    feats, clin = _survival_cohort()
    out = S.survival_models(feats, clinical=clin, **ENDPOINT)
    assert (out["endpoint"] == "PFS").all()
    base = out[out["analysis"] == "baseline"].set_index("feature")
    assert set(base.index) == {"planted", "noise"}  # the in vivo columns never enter
    assert base.loc["planted", "effect"] > 0 and base.loc["planted", "pvalue"] < 0.01
    assert "1 variable" in base.loc["planted", "note"]
    lm = out[out["analysis"] == "landmark day 30"].set_index("feature")
    assert (lm["scope"] == "in_vivo").all()
    assert "rep_frac_cells_from_product_clones" in lm.index
    # by hand: patients followed beyond day 30, time from day 30, D14 value
    c = clin.set_index("patient")
    at_risk = c[c["pfs_days"] > 30]
    x = feats[feats["timepoint"] == "D14"].set_index("patient").loc[at_risk.index, "planted"]
    dd = pd.DataFrame({"z": (x - x.mean()) / x.std(), "T": at_risk["pfs_days"] - 30,
                       "E": at_risk["pfs_event"]})
    ref = CoxPHFitter().fit(dd, "T", "E").summary.loc["z"]
    assert lm.loc["planted", "n_patients"] == len(at_risk)
    assert lm.loc["planted", "effect"] == pytest.approx(ref["coef"], rel=1e-6)


def test_cox_refuses_below_events_per_variable():
    feats, clin = _survival_cohort(n=24, event_rate=0.3, seed=5)
    n_events = int(clin["pfs_event"].sum())
    assert n_events < 10
    out = S.survival_models(feats, clinical=clin, **ENDPOINT)
    base = out[out["analysis"] == "baseline"]
    assert len(base) == 1 and base["effect"].isna().all() and base["pvalue"].isna().all()
    assert base["n_events"].iloc[0] == n_events
    assert base["note"].str.contains(
        f"{n_events} events for 1 variable .* < 10 \\(associate.survival.min_events_per_variable",
        regex=True).all()


def test_endpoint_config_names_the_missing_clinical_column():
    feats, clin = _survival_cohort(n=12)
    with pytest.raises(InputError, match=r"column 'os_days'.*associate\.survival\.time"):
        S.survival_models(feats, clinical=clin, **{**ENDPOINT, "time": "os_days"},
                          clinical_source="clinical.tsv")
    bad = clin.assign(pfs_event=["yes"] + [1] * 11)
    with pytest.raises(InputError, match="pfs_event"):
        S.survival_models(feats, clinical=bad, **ENDPOINT)
    off = S.survival_models(feats, clinical=clin, **{**ENDPOINT, "time": None, "event": None})
    assert off.loc[0, "test"] == "skipped"
    # a cohort without outcome columns (e.g. a published cell table): one row that says so
    none = S.survival_models(feats, clinical=clin.drop(columns=["pfs_days", "pfs_event"]),
                             **ENDPOINT)
    assert len(none) == 1 and none.loc[0, "test"] == "skipped"
    assert "neither 'pfs_days' nor 'pfs_event'" in none.loc[0, "note"]


def test_no_in_vivo_feature_in_a_baseline_cox_row():
    """Over every column sample_features can produce on a longitudinal cohort."""
    from cartcohort.datasets import simulate_cohort
    from cartcohort.tl.repertoire import repertoire_tables

    c = simulate_cohort(seed=4, n_patients=6, min_cells=120, max_cells=150,
                        frac_longitudinal=1.0, n_background_genes=10)
    cells = truth_feature_cells(c)
    rep = repertoire_tables(cells, primary_timepoint="IP", n_bootstrap=5)
    feats = F.sample_features(cells, repertoire=rep.samples)
    produced = set(S.feature_columns(feats))
    assert produced & set(F.IN_VIVO_REPERTOIRE), "the cohort must produce in vivo columns"
    pts = sorted(feats["patient"].unique())
    clin = pd.DataFrame({"patient": pts, "response": "CR", "pfs_event": 1,
                         "pfs_days": np.arange(60, 60 + 40 * len(pts), 40)})
    out = S.survival_models(feats, clinical=clin, **{**ENDPOINT, "min_events_per_variable": 1})
    base = out[out["analysis"] == "baseline"]
    assert set(base["feature"]) == {f for f in produced if F.feature_scope(f) == "product"}
    assert not set(base["feature"]) & set(F.IN_VIVO_REPERTOIRE)
    assert (out.loc[out["analysis"] != "baseline", "scope"] == "in_vivo").all()


# --------------------------------------------------------------------------- figures


def test_km_split_refuses_below_events_per_variable():
    from cartcohort.pl.outcomes import km_split

    times = pd.DataFrame({"time": np.arange(1.0, 21.0), "event": [1] * 9 + [0] * 11},
                         index=[f"P{i:02d}" for i in range(20)])
    groups = pd.Series(["a", "b"] * 10, index=times.index)
    split, problem = km_split(times, groups, min_events_per_variable=10)
    assert "9 events for 1 variable" in problem and "min_events_per_variable" in problem
    assert sorted(split) == ["a", "b"] and sum(len(d) for d in split.values()) == 20
    times.loc["P19", "event"] = 1
    assert km_split(times, groups, min_events_per_variable=10)[1] == ""
    one = km_split(times, pd.Series("a", index=times.index), min_events_per_variable=10)
    assert one[1].startswith("fewer than 2 groups")


def test_time_survival_pages_are_landscape_and_split(tmp_path):
    from PIL import Image

    from cartcohort.pl import outcomes as O
    from cartcohort.stats.panel import PanelFeature, PrimaryPanel

    feats, clin = _blood_cohort()
    names = [f"feat_{k}" for k in range(13)]
    for k, name in enumerate(names):
        feats[name] = feats["planted"] * (k + 1)
    # trajectories: 13 features -> 2 pages of at most 12 panels, blood timepoints only
    data, order = O.trajectory_data(feats, clinical=clin, panel_features=names,
                                    compartment="PB", primary_timepoint="IP",
                                    responders=["CR"], exclude_responses=["NE"])
    assert order == ["D7\n(day 7)", "D14\n(day 14)", "M3\n(day 90)"]
    assert set(data["group"]) == {"responder", "non-responder"}
    assert len(data) == 13 * 16 * 3  # the product rows are not drawn
    pages = O.trajectory_pages(data, order, compartment="PB", title="t")
    assert [len(p.axes) for p in pages] == [12, 1]
    named = O.trajectory_pages(data, order, compartment="PB", title="t",
                               names={n: f"Feature {n[5:]}" for n in names})
    assert named[0].axes[0].get_title().startswith("Feature ")  # labels, not ids
    # Kaplan-Meier: response + 8 product features = 9 panels -> 2 pages, written to disk
    rng = np.random.default_rng(1)
    clin = clin.assign(pfs_days=rng.integers(40, 700, len(clin)), pfs_event=1)
    panel = PrimaryPanel("1", tuple(PanelFeature(n, f"q{k}", "r", ()) for k, n in
                                    enumerate(names[:8])), "panel.yaml")
    endpoint = {**ENDPOINT, "endpoint": "OS"}
    readable = FeatureDictionary(exact={n: FeatureInfo(
        id=n, label=f"Feature {n[5:]}", unit="", family="QC", description="d", better=None,
        reference=None) for n in names})
    O.time_survival_figures(feats, clin, panel, dictionary=readable,
                            trajectories=tmp_path / "traj",
                            km=tmp_path / "km", primary_timepoint="IP", responders=["CR"],
                            exclude_responses=["NE"], blood_compartment="PB",
                            survival=endpoint)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert written == ["km/page_01.png", "km/page_02.png", "traj/page_01.png"]
    for path in tmp_path.rglob("*.png"):
        w, h = Image.open(path).size
        assert h / w < 0.7, (path, w, h)  # full height in a 1400 x 1000 viewer
