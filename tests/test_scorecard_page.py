"""The one-page scorecard of a new product (issue #20): readable feature names from
resources/features.yaml, the attribute rows against a known card, the self-contained
HTML, one PDF page per product, and the page rendered in headless Chromium with the
figure showing (skipped where /usr/bin/chromium is absent)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from html import escape

import numpy as np
import pandas as pd
import pytest
from cartcohort.errors import CartCohortError
from cartcohort.pl.scorecard import write_pdf_pages
from cartcohort.scorecards.catalogue import read_catalogue
from cartcohort.scorecards.product import FITNESS_FEATURES, STATEMENT, fitness_rows, product_page
from conftest import REPO

spec = importlib.util.spec_from_file_location("check_report", REPO / "tools" / "check_report.py")
check_report = importlib.util.module_from_spec(spec)
sys.modules.setdefault("check_report", check_report)
spec.loader.exec_module(check_report)

CATALOGUE = REPO / "resources" / "features.yaml"


def _inputs(n: int = 12, seed: int = 0):
    """A product's features, its card and a cohort (half responders) with known values."""
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({"patient": [f"P{i}" for i in range(n)],
                        "responder": [i % 2 == 0 for i in range(n)]})
    for f in FITNESS_FEATURES:
        ref[f] = rng.uniform(0.1, 0.6, n)
    feats = pd.Series({f: 0.3 for f in FITNESS_FEATURES})
    feats["rep_rarefied_gini_simpson_ci_low"] = 0.25
    feats["rep_rarefied_gini_simpson_ci_high"] = 0.35
    feats["exhausted_fraction"] = 0.9
    card = pd.DataFrame({
        "feature": list(FITNESS_FEATURES),
        "cohort_percentile": [50.0] * len(FITNESS_FEATURES),
        "interval_low": 0.1, "interval_high": 0.5, "responder_min": 0.1,
        "responder_max": 0.6,
        "flag": ["within_responder_interval"] * len(FITNESS_FEATURES)})
    card.loc[card["feature"] == "exhausted_fraction", "flag"] = "above_responder_interval"
    card.loc[card["feature"] == "top_clone_fraction", "flag"] = "exploratory_not_flagged"
    return feats, card, ref


def test_bundled_catalogue_names_every_scorecard_attribute_and_bad_files_are_refused(tmp_path):
    cat = read_catalogue(CATALOGUE)
    assert set(FITNESS_FEATURES) <= set(cat)
    assert cat["car_positive_fraction"].format(0.468) == "46.8 %"
    assert cat["log2_cd4_cd8_ratio"].format(1.0) == "+1.00 (ratio 2.00)"
    bad = tmp_path / "f.yaml"
    bad.write_text("version: 3\nfeatures: {}\n")
    with pytest.raises(CartCohortError, match="'version' must be one of"):
        read_catalogue(bad)
    bad.write_text("version: 1\nfeatures:\n  x: {label: X, unit: '%'}\n")
    with pytest.raises(CartCohortError, match=r"feature 'x' lacks \['family'"):
        read_catalogue(bad)


def test_attribute_rows_carry_values_units_cis_and_flags():
    feats, card, _ = _inputs()
    rows = fitness_rows(feats, card=card, catalogue=read_catalogue(CATALOGUE)).set_index(
        "feature")
    assert list(rows.index) == list(FITNESS_FEATURES)
    assert rows.loc["memory_like_fraction", "shown"] == "30.0 %"
    assert rows.loc["rep_rarefied_gini_simpson", "shown"] == "0.300 (CI 0.250 to 0.350)"
    assert rows.loc["exhausted_fraction", "flag_text"].startswith("FLAG: outside")
    assert rows.loc["top_clone_fraction", "flag_text"].startswith("exploratory")
    with pytest.raises(CartCohortError, match="no entry for"):
        fitness_rows(feats, card=card, catalogue={})


def _page(tmp_path, *, figure: bool = True):
    feats, card, ref = _inputs()
    rows = fitness_rows(feats, card=card, catalogue=read_catalogue(CATALOGUE))
    html, page = product_page("N01_IP", rows=rows, reference=ref,
                              qc=[("Cells passing QC", "4,900 of 5,000")], notes=["a note"])
    if not figure:
        html = re.sub(r"<img [^>]*>", "", html)
    path = tmp_path / ("card.html" if figure else "bare.html")
    path.write_text(html)
    return path, html, page


def test_page_is_self_contained_and_the_pdf_has_one_page_per_product(tmp_path):
    _, html, page = _page(tmp_path)
    assert "data:image/png;base64," in html and escape(STATEMENT) in html
    assert not re.search(r"(src|href)=['\"]https?:", html)  # nothing fetched (no CDN)
    assert "Cells passing QC" in html and "a note" in html and "class='out'" in html
    _, _, page2 = _page(tmp_path)
    pdf = tmp_path / "cards.pdf"
    write_pdf_pages([page, page2], pdf)
    assert len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes())) == 2


@pytest.mark.skipif(not os.access(check_report.CHROMIUM, os.X_OK),
                    reason=f"{check_report.CHROMIUM} is not installed")
def test_page_renders_in_headless_chromium_with_the_figure_showing(tmp_path):
    shots = {}
    for figure in (True, False):
        path, _, _ = _page(tmp_path, figure=figure)
        dump = check_report.run_chromium(check_report.CHROMIUM, path.resolve().as_uri(),
                                         ["--dump-dom"], timeout=120)
        assert dump.returncode == 0 and "N01_IP" in dump.stdout
        shot = tmp_path / f"{path.stem}.png"
        check_report.run_chromium(check_report.CHROMIUM, path.resolve().as_uri(),
                                  [f"--screenshot={shot}", "--window-size=1400,1000"],
                                  timeout=120)
        shots[figure] = shot
    assert check_report.screenshot_problems(shots[True]) == []
    # the figure shows within the 1400x1000 window: the product's red marks and the
    # responders' blue points are on screen, and neither is without the figure
    from PIL import Image

    def marks(path):
        px = np.asarray(Image.open(path).convert("RGB"), dtype=int)
        red = (px[..., 0] - px[..., 2] > 120) & (px[..., 1] < 90)
        blue = px[..., 2] - px[..., 0] > 80  # the responders' points, blended
        return int(red.sum()), int(blue.sum())

    red, blue = marks(shots[True])
    assert red > 300 and blue > 300, (red, blue)
    assert max(marks(shots[False])) < 50
