"""The cells to explore: ``results/cohort.h5ad`` (cellxgene) and a static UCSC Cell Browser.

- :func:`write_cohort_h5ad` - the ``gex`` modality of ``results/cohort.h5mu`` as an h5ad
  that ``cellxgene launch`` opens: the log-normalised ``X`` (float32, sparse), the UMAP in
  ``obsm['X_umap']``, every call of ``obs`` with the patient's clinical response added,
  the text and yes/no calls categorical, the state and lineage colours of the report's
  figures in ``uns['<call>_colors']``. It is written element by element: the matrix is
  copied inside HDF5 and never held in memory.
- :func:`build_cell_browser` - a UCSC Cell Browser site (``cellbrowser`` package,
  ``scanpyToCellbrowser`` + ``build``) of that h5ad: the UMAP coloured by state, lineage,
  CAR+, clone size, patient, timepoint and response, gene search, and the marker genes of
  every state (scanpy ``rank_genes_groups``, t-test, state against the rest). Neither the
  build nor the site needs the internet: the package ships its JavaScript and CSS and
  copies them into the site; genes are given by symbol (with ids the build downloads a
  mapping table) and the package's third-party marker databases (downloaded) are left
  out; the page's usage counter of the Cell Browser's authors, a remote script, is
  removed (:func:`strip_remote_scripts`, :func:`_offline`).

cellxgene's requirements for an h5ad (cellxgene-documentation ``desktop/data-reqs.md``):
the matrix in ``X``, at least one embedding in ``obsm`` named ``X_<name>``, unique cell ids
(``obs`` index) and unique gene ids (``var`` index); colours of a categorical ``obs``
column as ``uns['<column>_colors']`` in category order. :func:`cellxgene_problems` checks
them (and that ``X`` is float32 and the embedding finite).
"""

from __future__ import annotations

import functools
import gzip
import http.server
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from .errors import CartCohortError

log = logging.getLogger(__name__)

#: obs column -> label in the cell browser: the calls the browser is coloured by.
BROWSER_FIELDS: dict[str, str] = {
    "state": "state",
    "cd4_cd8": "lineage",
    "car_positive": "CAR+",
    "clone_size": "clone size",
    "patient": "patient",
    "timepoint": "timepoint",
    "response": "response",
    "lineage_state": "lineage and state",
    "sample": "library",
    "compartment": "compartment",
}
#: The calls that must be in the cohort h5ad, categorical (clone_size stays a number).
CATEGORICAL_CALLS: tuple[str, ...] = ("state", "cd4_cd8", "car_positive", "patient",
                                      "timepoint", "response")
#: Marker genes per state listed in the browser.
N_MARKERS = 50
#: The browser's dataset name (a folder of the site).
DATASET = "cohort"
_MISSING = "NA"
_PHONE_HOME = "function phoneHome() {"
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>\s*\n?")


def _read_gex_parts(h5mu: h5py.File, path: str) -> tuple[pd.DataFrame, pd.DataFrame,
                                                          np.ndarray]:
    """obs, var and the UMAP of the ``gex`` modality of an open h5mu (errors name it)."""
    gex = h5mu.get("mod/gex")
    if gex is None or "X" not in gex:
        raise CartCohortError(
            f"{path}: no 'mod/gex' modality with a matrix X. Fix: give the cohort MuData "
            "of rule cohort (results/cohort.h5mu), rerun that rule if it is incomplete")
    if "obsm" not in gex or "X_umap" not in gex["obsm"]:
        raise CartCohortError(
            f"{path}: mod/gex has no obsm 'X_umap'. Fix: rerun rules umap and cohort")
    obs = ad.io.read_elem(gex["obs"])
    missing = [c for c in (*CATEGORICAL_CALLS, "clone_size") if c != "response"
               and c not in obs.columns]
    if missing:
        raise CartCohortError(
            f"{path}: mod/gex/obs lacks the call column(s) {missing}. Fix: rerun rules "
            "annotate, clonotypes and cohort (the calls are made there)")
    return obs, ad.io.read_elem(gex["var"]), np.asarray(ad.io.read_elem(gex["obsm/X_umap"]))


def _categorical_obs(obs: pd.DataFrame, response: pd.Series) -> pd.DataFrame:
    """obs with the response added and every text or yes/no column categorical."""
    obs = obs.copy()
    obs["response"] = pd.Categorical(
        obs["patient"].astype(str).map(response).fillna(_MISSING).astype(str))
    for col in obs.columns:
        values = obs[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_object_dtype(values) \
                or pd.api.types.is_string_dtype(values):
            text = values.astype(object).where(values.notna(), _MISSING).astype(str)
            obs[col] = pd.Categorical(text)
    return obs


def _colors(obs: pd.DataFrame) -> dict[str, np.ndarray]:
    """``<column>_colors`` of state and lineage: the report figures' colours, in category
    order (others grey)."""
    from . import pl

    out = {}
    for col, palette in (("state", pl.annotate.STATE_COLORS),
                         ("cd4_cd8", pl.annotate.LINEAGE_COLORS)):
        cats = obs[col].cat.categories
        out[f"{col}_colors"] = np.array([palette.get(str(c), "#bdbdbd") for c in cats],
                                        dtype=object)
    return out


def _copy_matrix(src: h5py.Group | h5py.Dataset, dst: h5py.File, *, chunk: int) -> None:
    """Copy ``X`` into ``dst`` inside HDF5; values cast to float32 a block at a time."""
    dst.copy(src, "X")
    data_path = "X/data" if isinstance(src, h5py.Group) else "X"
    data = dst[data_path]
    if data.dtype == np.float32:
        return
    attrs = dict(data.attrs)
    tmp = dst.create_dataset(data_path + "_f32", shape=data.shape, dtype=np.float32,
                             chunks=True, compression="gzip")
    for start in range(0, data.shape[0], chunk):
        tmp[start:start + chunk] = data[start:start + chunk].astype(np.float32)
    del dst[data_path]
    dst.move(data_path + "_f32", data_path)
    dst[data_path].attrs.update(attrs)


def write_cohort_h5ad(
    *, h5mu_path: str | os.PathLike, clinical: pd.DataFrame, out_path: str | os.PathLike,
    chunk: int = 5_000_000,
) -> None:
    """Write the ``gex`` modality of the cohort MuData as an h5ad cellxgene can open
    (step function of rule ``cohort_h5ad``).

    Parameters
    ----------
    h5mu_path
        ``results/cohort.h5mu`` (rule ``cohort``), read element by element.
    clinical
        The clinical table (``patient``, ``response``): each cell gets its patient's
        response (``NA`` where the patient has none).
    out_path
        ``results/cohort.h5ad``: ``X`` (log-normalised, float32, as in the MuData),
        ``obs`` (every call, text ones categorical, plus ``response``), ``var``,
        ``obsm['X_umap']`` and the state/lineage colours in ``uns``.
    chunk
        Matrix values cast at a time where ``X`` is not float32 already.
    """
    for col in ("patient", "response"):
        if col not in clinical.columns:
            raise CartCohortError(f"clinical table: no column '{col}'. Fix: add it "
                                  "(one row per patient)")
    response = clinical.astype({"patient": str}).set_index("patient")["response"]
    path = str(h5mu_path)
    with h5py.File(path, "r") as src:
        obs, var, umap = _read_gex_parts(src, path)
        obs = _categorical_obs(obs, response.astype(object).where(response.notna()))
        tmp = f"{out_path}.tmp"
        with h5py.File(tmp, "w") as dst:
            dst.attrs["encoding-type"] = "anndata"
            dst.attrs["encoding-version"] = "0.1.0"
            _copy_matrix(src["mod/gex/X"], dst, chunk=chunk)
            ad.io.write_elem(dst, "obs", obs)
            ad.io.write_elem(dst, "var", var)
            ad.io.write_elem(dst, "obsm", {"X_umap": umap.astype(np.float32)})
            ad.io.write_elem(dst, "uns", _colors(obs))
            for empty in ("layers", "obsp", "varm", "varp"):
                ad.io.write_elem(dst, empty, {})
    os.replace(tmp, out_path)
    log.info("wrote %s: %d cells x %d genes", out_path, len(obs), len(var))


def cellxgene_problems(adata: ad.AnnData, *, calls: Sequence[str] = CATEGORICAL_CALLS,
                       ) -> list[str]:
    """What keeps ``adata`` from opening in cellxgene with the calls to colour by (empty:
    nothing). Checks an ``X_`` embedding in ``obsm`` (2-D, finite), unique cell and gene
    ids, float32 ``X``, each of ``calls`` a categorical ``obs`` column, and colours that
    match their categories."""
    out = []
    embeddings = [k for k in adata.obsm if k.startswith("X_")]
    if "X_umap" not in embeddings:
        out.append("no obsm['X_umap']")
    for key in embeddings:
        emb = np.asarray(adata.obsm[key])
        if emb.ndim != 2 or emb.shape[1] < 2 or not np.isfinite(emb[:, :2]).all():
            out.append(f"obsm['{key}'] is not a finite n x 2 embedding")
    if not adata.obs_names.is_unique:
        out.append("cell ids (obs index) are not unique")
    if not adata.var_names.is_unique:
        out.append("gene ids (var index) are not unique")
    if adata.X is None or adata.X.dtype != np.float32:
        out.append(f"X is {None if adata.X is None else adata.X.dtype}, not float32")
    for col in calls:
        if col not in adata.obs or not isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            out.append(f"obs '{col}' is missing or not categorical")
        elif f"{col}_colors" in adata.uns and \
                len(adata.uns[f"{col}_colors"]) != len(adata.obs[col].cat.categories):
            out.append(f"uns '{col}_colors' does not match the categories of obs '{col}'")
    return out


def strip_remote_scripts(html: str) -> str:
    """``html`` without its ``<script src="http(s)://...">`` elements (the Cell Browser's
    page loads a usage counter from its authors' server; nothing draws with it)."""
    return _REMOTE_SCRIPT.sub("", html)


def _write_mtx(adata: ad.AnnData, workdir: str) -> None:
    """The matrix as the Cell Browser reads it (genes x cells ``matrix.mtx.gz``,
    ``features.tsv.gz``, ``barcodes.tsv.gz``), gzip level 1: the package's own writer
    compresses at level 9, 40 s of the demo's build for a file read once."""
    from scipy import io, sparse

    with gzip.open(Path(workdir) / "matrix.mtx.gz", "wb", compresslevel=1) as fh:
        io.mmwrite(fh, sparse.csr_matrix(adata.X).T.tocoo(), precision=7)
    for name, values in (("features", adata.var_names), ("barcodes", adata.obs_names)):
        with gzip.open(Path(workdir) / f"{name}.tsv.gz", "wt", compresslevel=1) as fh:
            fh.write("\n".join(map(str, values)) + "\n")


def _browser_input(adata: ad.AnnData, workdir: str, *, n_markers: int) -> str:
    """Write the Cell Browser's input files (matrix, meta, UMAP, markers per state) and
    its cellbrowser.conf into ``workdir``; return the conf's path."""
    from cellbrowser import cellbrowser as cb

    fields = {k: v for k, v in BROWSER_FIELDS.items() if k in adata.obs}
    adata.obs = adata.obs[list(fields)].rename(columns=fields)
    for col in ("state", "cd4_cd8"):  # the figures' colours (exported to colors.tsv)
        if f"{col}_colors" in adata.uns:
            adata.uns[f"{fields[col]}_colors"] = adata.uns.pop(f"{col}_colors")
    _write_mtx(adata, workdir)
    cb.scanpyToCellbrowser(adata, workdir, DATASET, metaFields=list(fields.values()),
                           clusterField=fields["state"],
                           nb_marker=n_markers, coordFields=["X_umap"], skipMatrix=True,
                           matrixFormat="mtx", doDebug=False)
    conf = Path(workdir) / "cellbrowser.conf"
    enum = [v for k, v in fields.items() if k != "clone_size"]
    conf.write_text(conf.read_text() + "\n".join([
        "shortLabel='cart-cohort: every cell that passed QC'",
        f"enumFields={enum!r}",
        "defColorField='state'",
        "labelField='state'",
        "geneIdType='symbols'",
        "radius=3",
        "alpha=0.7",
        "",
    ]))
    return str(conf)


def _offline(site: Path) -> None:
    """Keep the site from loading anything from the internet: the page's ``<script src=
    "https://...">`` (a usage counter of the Cell Browser's authors) removed, and the
    JavaScript function that adds that counter again at run time made to return."""
    index = site / "index.html"
    index.write_text(strip_remote_scripts(index.read_text()))
    script = site / "js" / "cellBrowser.js"
    text = script.read_text()
    if _PHONE_HOME in text:
        script.write_text(text.replace(_PHONE_HOME, _PHONE_HOME + " return;"))


def _drop_matrix_copy(dataset_dir: Path) -> None:
    """Remove the site's copy of the input matrix (offered for download; the browser
    reads its own binary matrix, and results/cohort.h5ad has every gene)."""
    (dataset_dir / "matrix.mtx.gz").unlink(missing_ok=True)
    listing = dataset_dir / "files.txt"
    if listing.exists():
        kept = [f for f in listing.read_text().splitlines() if f != "matrix.mtx.gz"]
        listing.write_text("".join(f"{f}\n" for f in kept))


def build_cell_browser(
    *, h5ad_path: str | os.PathLike, out_dir: str | os.PathLike, n_markers: int = N_MARKERS,
    min_cells: int = 1,
) -> None:
    """Build the static UCSC Cell Browser of the cohort (step function of rule
    ``cell_browser``).

    Parameters
    ----------
    h5ad_path
        ``results/cohort.h5ad`` (:func:`write_cohort_h5ad`).
    out_dir
        The site (``results/browser``): ``index.html``, the JavaScript and CSS of the
        package and the dataset; served by any static HTTP server, no internet needed.
    n_markers
        Marker genes listed per state (scanpy ``rank_genes_groups``, t-test).
    min_cells
        Genes detected in fewer cells are left out of the browser (they have nothing to
        show); the h5ad keeps every gene.
    """
    from cellbrowser import cellbrowser as cb

    adata = ad.read_h5ad(h5ad_path)
    problems = [p for p in cellxgene_problems(adata) if "colors" not in p]
    if problems:
        raise CartCohortError(f"{h5ad_path}: {'; '.join(problems)}. Fix: rebuild it with "
                              "rule cohort_h5ad")
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel() >= min_cells
    # genes by symbol alone: with ids the build maps them to symbols with a table it
    # downloads (no internet needed this way)
    adata = ad.AnnData(adata.X[:, detected], obs=adata.obs, var=adata.var.iloc[:, :0][detected],
                       obsm=dict(adata.obsm), uns=dict(adata.uns))
    out_dir = Path(out_dir).resolve()  # the package resolves some paths twice if relative
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cellbrowser-", dir=out_dir.parent) as workdir:
        conf = _browser_input(adata, workdir, n_markers=n_markers)
        # the package downloads third-party marker databases into every new site: left
        # out, so that the build needs no internet (the dataset's own markers are kept)
        databases, cb.MARKER_DB_FILES = cb.MARKER_DB_FILES, []
        try:
            cb.build([conf], str(out_dir))
        finally:
            cb.MARKER_DB_FILES = databases
    _offline(out_dir)
    _drop_matrix_copy(out_dir / DATASET)
    log.info("cell browser of %d cells x %d genes in %s", adata.n_obs, adata.n_vars, out_dir)


def remote_urls(site: str | os.PathLike) -> list[str]:
    """The ``src``/``href`` http(s) URLs that ``site/index.html`` loads (scripts, style
    sheets): none in a site that works offline."""
    html = (Path(site) / "index.html").read_text()
    return re.findall(r"(?:src|href)=[\"'](https?://[^\"']+)", html)


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that answers HTTP byte-range requests (``Range: bytes=a-b``)
    with ``206 Partial Content``: the Cell Browser reads each gene's values as a byte
    range of its matrix; Python's plain handler sends the whole file instead (the page
    then warns and holds the whole matrix in memory)."""

    def send_head(self):  # http.server's hook
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start > end:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        fh = open(path, "rb")  # noqa: SIM115 (closed by the handler after the copy)
        fh.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Slice(fh, end - start + 1)

    def log_message(self, format, *args):  # http.server's signature
        log.debug(format, *args)


class _Slice:
    """The first ``length`` bytes of an open file, read by ``shutil.copyfileobj``."""

    def __init__(self, fh, length: int) -> None:
        self._fh, self._left = fh, length

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._fh.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()


def serve_site(site: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
               ) -> http.server.ThreadingHTTPServer:
    """An HTTP server of the static ``site`` (byte ranges answered) on ``host:port``
    (``port`` 0: any free one); call ``serve_forever()`` on it (in a thread for tests)."""
    if not (Path(site) / "index.html").is_file():
        raise CartCohortError(f"{site}: no index.html. Fix: give the cell browser folder "
                              "(results/browser, rule cell_browser)")
    handler = functools.partial(RangeRequestHandler, directory=str(site))
    return http.server.ThreadingHTTPServer((host, port), handler)
