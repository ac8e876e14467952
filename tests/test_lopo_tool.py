"""tools/lopo.py (issue #20): the products it leaves out and its comparison of a
product scored as new with its in-cohort results, on small tables with known answers
(the demo run itself is `tools/lopo.py`, not a test)."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("lopo", REPO / "tools" / "lopo.py")
lopo = importlib.util.module_from_spec(spec)
sys.modules.setdefault("lopo", lopo)
spec.loader.exec_module(lopo)


def test_products_are_spread_over_the_sheet():
    sheet = pd.DataFrame({"sample": [f"P{i:02d}_IP" for i in range(20)] + ["P05_D14"],
                          "compartment": ["product"] * 20 + ["PB"]})
    assert lopo.pick_products(sheet, 5) == ["P00_IP", "P05_IP", "P10_IP", "P14_IP", "P19_IP"]


def _results(tmp_path):
    """An in-cohort run: features, the product's card, cell calls."""
    res = tmp_path / "results"
    (res / "tables").mkdir(parents=True)
    (res / "scorecards").mkdir()
    feats = pd.DataFrame({"sample": ["A_IP"], "memory_like_fraction": [0.30],
                          "frac_tcm": [0.10], "frac_mait": [0.02],
                          lopo.DIVERSITY: [0.95]})
    feats.to_csv(res / "tables" / "sample_features.tsv", sep="\t", index=False)
    pd.DataFrame({"feature": ["memory_like_fraction", "frac_tcm"], "primary": [True, True],
                  "cohort_percentile": [50.0, 40.0]}).to_csv(
        res / "scorecards" / "A_IP.tsv", sep="\t", index=False)
    pd.DataFrame({"cell": ["c1", "c2", "c3", "c4"], "state": ["tcm", "tem", "tcm", "naive"]}
                 ).to_csv(res / "tables" / "cells.tsv.gz", sep="\t", index=False)
    return res


def test_comparison_measures_fractions_diversity_percentiles_and_states(tmp_path):
    res = _results(tmp_path)
    new = pd.DataFrame({"memory_like_fraction": [0.32], "frac_tcm": [0.14],
                        lopo.DIVERSITY: [0.94], f"{lopo.DIVERSITY}_ci_low": [0.93],
                        f"{lopo.DIVERSITY}_ci_high": [0.96]})  # no mait cell: frac_mait 0
    card = pd.DataFrame({"feature": ["memory_like_fraction", "frac_tcm"],
                         "cohort_percentile": [55.0, 60.0]})
    cells = pd.DataFrame({"cell": ["c1", "c2", "c3", "c4"],
                          "state": ["tcm", "tem", "tem", "naive"],
                          "state_transfer": ["tcm", "tcm", "tcm", "tcm"]})
    row = lopo.compare("A_IP", results=res,
                       scored=SimpleNamespace(features=new, card=card, cells=cells))
    assert row["max_abs_fraction_diff"] == pytest.approx(0.04)
    assert row["worst_fraction"] == "frac_tcm"
    assert row["max_abs_fraction_diff_scorecard"] == pytest.approx(0.02)
    assert row["diversity_in_ci"]
    assert row["max_abs_percentile_diff"] == pytest.approx(20.0)
    assert row["max_abs_percentile_diff_scorecard"] == pytest.approx(5.0)
    assert row["state_agreement"] == pytest.approx(0.75)
    assert row["state_agreement_transfer"] == pytest.approx(0.5)
    assert not row["pass"]  # 0.04 > 0.03, 20 > 10, 0.75 < 0.9
