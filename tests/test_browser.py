"""The cells to explore (cartcohort.browser): results/cohort.h5ad for cellxgene, and the
static UCSC Cell Browser, driven in a real browser.

A small synthetic cohort (240 cells, 4 states, CD4 and CD8 cells: CD8A is expressed in the
CD8 cells only) is written as an h5mu like rule cohort's; the h5ad and the site are built
from it with the library functions (no workflow run). The Selenium test serves the site
from 127.0.0.1 and drives Debian's headless chromium with every other host unresolvable
(the site must work offline): the canvas draws, colouring by state lists the states of
the cells table, and a gene search for CD8A changes the colouring.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from cartcohort import browser
from cartcohort.errors import CartCohortError
from cartcohort.pl.annotate import STATE_COLORS
from scipy import sparse

STATES = ["naive_tscm", "tem", "exhausted", "treg"]
N_PER_STATE = 60


def _cohort(seed: int = 0) -> tuple[ad.AnnData, pd.DataFrame]:
    """A synthetic gex modality (float64 log-normalised X, calls, a UMAP with one blob per
    state, CD8A in the CD8 cells only) and its clinical table (P3 has no row)."""
    rng = np.random.default_rng(seed)
    n = N_PER_STATE * len(STATES)
    state = np.repeat(STATES, N_PER_STATE)
    lineage = np.where(np.isin(state, ["tem", "exhausted"]), "CD8", "CD4")
    genes = ["CD8A", "CD4", "GZMB", "FOXP3", *[f"G{i}" for i in range(56)]]
    x = rng.poisson(0.3, size=(n, len(genes))).astype(float)
    x[:, 0] = np.where(lineage == "CD8", rng.poisson(4, n) + 1, 0)
    x[:, 1] = np.where(lineage == "CD4", rng.poisson(4, n) + 1, 0)
    x[:, 2] += 3 * (state == "exhausted")
    x[:, 3] += 3 * (state == "treg")
    x[:, 10] = 0  # a gene detected in no cell
    centres = {s: (8 * (i % 2), 8 * (i // 2)) for i, s in enumerate(STATES)}
    umap = np.array([centres[s] for s in state]) + rng.normal(0, 1, (n, 2))
    patient = np.array(["P1", "P2", "P3"])[np.arange(n) % 3]
    timepoint = np.array(["IP", "D7"])[(np.arange(n) // 3) % 2]
    obs = pd.DataFrame({
        "state": pd.Categorical(state), "cd4_cd8": pd.Categorical(lineage),
        "car_positive": rng.random(n) < 0.5, "clone_size": rng.integers(1, 5, n).astype(float),
        "patient": pd.Categorical(patient), "timepoint": pd.Categorical(timepoint),
        "lineage_state": pd.Categorical([f"{a} {b}" for a, b in zip(lineage, state)]),
        "sample": pd.Categorical([f"{p}_{t}" for p, t in zip(patient, timepoint)]),
        "compartment": pd.Categorical(np.where(timepoint == "IP", "product", "blood")),
        "qc_reason": [""] * n,
    }, index=[f"c{i:03d}" for i in range(n)])
    gex = ad.AnnData(sparse.csr_matrix(np.log1p(x)), obs=obs,
                     var=pd.DataFrame({"gene_ids": [f"ENSG{i:05d}" for i in range(len(genes))]},
                                      index=genes), obsm={"X_umap": umap})
    clinical = pd.DataFrame({"patient": ["P1", "P2"], "response": ["CR", "PD"]})
    return gex, clinical


def _write_h5mu(gex: ad.AnnData, path: Path) -> None:
    import mudata as md

    md.MuData({"gex": gex}).write(path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    """The synthetic cohort as h5mu, its h5ad and the site built from it."""
    tmp = tmp_path_factory.mktemp("browser")
    gex, clinical = _cohort()
    _write_h5mu(gex, tmp / "cohort.h5mu")
    browser.write_cohort_h5ad(h5mu_path=tmp / "cohort.h5mu", clinical=clinical,
                              out_path=tmp / "cohort.h5ad", chunk=1000)
    browser.build_cell_browser(h5ad_path=tmp / "cohort.h5ad", out_dir=tmp / "site",
                               n_markers=5)
    return {"gex": gex, "clinical": clinical, "h5ad": tmp / "cohort.h5ad",
            "site": tmp / "site", "tmp": tmp}


def test_cohort_h5ad_is_what_cellxgene_needs(cohort):
    gex, h5ad = cohort["gex"], ad.read_h5ad(cohort["h5ad"])
    assert browser.cellxgene_problems(h5ad) == []
    assert h5ad.X.dtype == np.float32 and sparse.issparse(h5ad.X)
    np.testing.assert_allclose(h5ad.X.toarray(), gex.X.toarray(), rtol=1e-6)
    assert list(h5ad.obs_names) == list(gex.obs_names)
    assert h5ad.var_names.is_unique and list(h5ad.var_names) == list(gex.var_names)
    np.testing.assert_allclose(h5ad.obsm["X_umap"], gex.obsm["X_umap"], rtol=1e-6)
    for col in (*browser.CATEGORICAL_CALLS, "lineage_state", "qc_reason"):
        assert isinstance(h5ad.obs[col].dtype, pd.CategoricalDtype), col
    # the patient's response; P3 has no clinical row
    expected = gex.obs["patient"].astype(str).map({"P1": "CR", "P2": "PD", "P3": "NA"})
    assert (h5ad.obs["response"].astype(str) == expected).all()
    assert set(h5ad.obs["car_positive"].astype(str)) == {"True", "False"}
    assert np.issubdtype(h5ad.obs["clone_size"].dtype, np.number)
    # the report figures' state colours, in category order
    cats = list(h5ad.obs["state"].cat.categories)
    assert list(h5ad.uns["state_colors"]) == [STATE_COLORS[s] for s in cats]


def test_cellxgene_problems_are_named(cohort):
    h5ad = ad.read_h5ad(cohort["h5ad"])
    bad = h5ad.copy()
    bad.X = bad.X.astype(np.float64)
    bad.obs["state"] = bad.obs["state"].astype(str)
    bad.var_names = ["CD8A"] * bad.n_vars
    del bad.obsm["X_umap"]
    problems = " | ".join(browser.cellxgene_problems(bad))
    for what in ("X_umap", "gene ids", "float64", "obs 'state'"):
        assert what in problems


def test_h5mu_without_umap_is_refused(tmp_path):
    gex, clinical = _cohort()
    del gex.obsm["X_umap"]
    _write_h5mu(gex, tmp_path / "c.h5mu")
    with pytest.raises(CartCohortError, match=r"c\.h5mu.*X_umap.*Fix"):
        browser.write_cohort_h5ad(h5mu_path=tmp_path / "c.h5mu", clinical=clinical,
                                  out_path=tmp_path / "c.h5ad")
    assert not (tmp_path / "c.h5ad").exists()


def test_site_is_static_and_offline(cohort):
    site = cohort["site"]
    assert browser.remote_urls(site) == []
    assert "function phoneHome() { return;" in (site / "js" / "cellBrowser.js").read_text()
    ds = site / browser.DATASET
    assert (ds / "exprMatrix.bin").is_file() and not (ds / "matrix.mtx.gz").exists()
    meta = pd.read_csv(ds / "meta.tsv", sep="\t")  # (a field of one value is left out)
    assert set(browser.BROWSER_FIELDS.values()) <= set(meta.columns)
    # the marker genes of each state (one file per state), led by its own genes
    files = {f.name.split(".")[0]: f for f in (ds / "markers").rglob("*.tsv.gz")}
    assert set(files) == set(STATES)
    top = {s: pd.read_csv(f, sep="\t")["symbol"].iloc[0] for s, f in files.items()}
    assert top["treg"] == "FOXP3" and top["exhausted"] == "GZMB"


def test_strip_remote_scripts():
    page = ('<script src="js/a.js"></script>\n'
            '<script async defer src="https://example.org/t.js"></script>\n<body>')
    assert browser.strip_remote_scripts(page) == '<script src="js/a.js"></script>\n<body>'


def test_server_answers_byte_ranges(tmp_path):
    (tmp_path / "index.html").write_text("<html></html>")
    (tmp_path / "m.bin").write_bytes(bytes(range(100)))
    server = browser.serve_site(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.bin"
        req = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == bytes(range(10, 20))
            assert resp.headers["Content-Range"] == "bytes 10-19/100"
        with urllib.request.urlopen(url) as resp:
            assert resp.status == 200 and resp.read() == bytes(range(100))
    finally:
        server.shutdown()
    with pytest.raises(CartCohortError, match="index.html"):
        browser.serve_site(tmp_path / "nothing", port=0)


# ------------------------------------------------------------------ in a real browser

def _chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver: installed with apt-get as root where missing
    (tools/install_chromium.sh), else the test skips with the reason."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found and os.geteuid() == 0 and shutil.which("apt-get"):
        script = Path(__file__).resolve().parents[1] / "tools" / "install_chromium.sh"
        subprocess.run(["bash", str(script)], check=False, capture_output=True)
        found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        pytest.skip("Debian's chromium and chromium-driver are not installed and cannot be "
                    "(not root, or no apt-get): run tools/install_chromium.sh as root")
    return found


@pytest.fixture(scope="module")
def page(cohort):
    """Headless chromium on the site served from 127.0.0.1, every other host
    unresolvable; yields the driver."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _chromium()
    server = browser.serve_site(cohort["site"], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    offline = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", offline):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    url = f"http://127.0.0.1:{server.server_address[1]}/?ds={browser.DATASET}"
    try:
        driver.get(url)
        driver.execute_script("localStorage.setItem('introShown', 'true')")  # no tutorial
        driver.get(url)
        yield driver
    finally:
        driver.quit()
        server.shutdown()


def _wait(driver, css: str, timeout: float = 20.0):
    from selenium.webdriver.common.by import By

    end = time.time() + timeout
    while time.time() < end:
        found = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.text.strip()]
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"nothing matched {css} within {timeout} s")


def _canvas_pixels(driver) -> np.ndarray:
    """The plot canvas's pixels (RGB) from a screenshot of it."""
    import io

    from matplotlib.image import imread
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.ID, "mpCanvas").screenshot_as_png
    return imread(io.BytesIO(png), format="png")[..., :3]


def _search_gene(driver, gene: str) -> None:
    """Type ``gene`` into the gene search box and pick it (the box is a select2 widget in
    a small dataset, a selectize one in a large one)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    selectize = driver.find_elements(By.ID, "tpGeneCombo-selectized")
    if selectize:
        box = selectize[0]
        box.click()
    else:
        driver.find_element(By.ID, "select2-tpGeneCombo-container").click()
        box = driver.find_element(By.CSS_SELECTOR, ".select2-search__field")
    box.send_keys(gene)
    time.sleep(1)
    box.send_keys(Keys.ENTER)


def test_browser_draws_states_and_gene(page, cohort):
    from selenium.webdriver.common.by import By

    # colouring by state (the default) lists exactly the states of the cells table
    labels = [e.text for e in _wait(page, "#tpLegendRows .tpLegendLabel")]
    assert _wait(page, "#tpLegendTitle")[0].text == "state"
    cells_states = set(cohort["gex"].obs["state"].astype(str))
    assert {t.replace(" ", "_") for t in labels} == cells_states and len(labels) == 4
    time.sleep(1)
    by_state = _canvas_pixels(page)
    # the canvas draws: coloured points on a plain background
    background = np.all(np.abs(by_state - by_state[2, 2]) < 0.02, axis=-1)
    assert (~background).sum() > 2000 and by_state.std() > 0.02
    # a gene search for CD8A recolours the cells
    page.find_element(By.CSS_SELECTOR, "a[href='#tpGeneTab']").click()
    _search_gene(page, "CD8A")
    end = time.time() + 20
    while time.time() < end and "CD8A" not in page.find_element(By.ID, "tpLegendTitle").text:
        time.sleep(0.25)
    assert page.find_element(By.ID, "tpLegendTitle").text == "Gene: CD8A"
    time.sleep(1)
    by_gene = _canvas_pixels(page)
    changed = np.any(np.abs(by_gene - by_state) > 0.1, axis=-1)
    assert changed.sum() > 1000
    # nothing was asked of any other host (those requests would fail and be logged)
    remote = [e["message"] for e in page.get_log("browser")
              if "ERR_NAME_NOT_RESOLVED" in e["message"] or "http" in e["message"]
              and "127.0.0.1" not in e["message"]]
    assert remote == []
