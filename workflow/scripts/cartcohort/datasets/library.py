"""One simulated library: cells, their clones, QC truth, counts, TCR contigs and truth table.

Every random draw of a library comes from one generator seeded with
``[seed, 4, library index]``, in a fixed order: states and clones, planted persistence,
QC truth, expression, barcodes, contigs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError
from .expression import TCR_FEATURE_COLUMNS, simulate_counts
from .genes import STATES
from .kinetics import new_clone_rate
from .panel import GenePanel
from .params import SimParams
from .patients import POOL_STATES, PatientSim, timepoint_props
from .plan import LibraryPlan
from .tcr import Chain, airr_rows, chain_records, tenx_rows

TRUTH_CELL_COLUMNS: tuple[str, ...] = (
    "cell", "sample", "patient", "timepoint", "barcode", "state", "state_weight",
    "state_secondary", "cd4_cd8", "car_positive",
    "clone", "is_doublet", "is_low_quality", "has_tcr", "car_umis", "n_contigs",
    "planted_persistent", "is_gd",
)
_I_TREG = STATES.index("treg")
_I_PROLIF = STATES.index("proliferating")
# Each state's neighbours on the differentiation continuum (its program blends into theirs).
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "naive_tscm": ("tcm",),
    "tcm": ("naive_tscm", "tem"),
    "tem": ("tcm", "teff", "exhausted"),
    "teff": ("tem", "exhausted"),
    "exhausted": ("tem", "teff"),
    "treg": ("tcm",),
    "proliferating": ("teff", "exhausted", "tem"),
}


@dataclass
class Library:
    """One simulated library, in memory.

    Attributes
    ----------
    plan
        Sheet row (sample, patient, timepoint, ...) and file formats.
    barcodes
        Cell barcodes (sorted), one per row of ``counts``.
    counts
        ``scipy.sparse.csr_matrix`` (cells x features, int32) of UMI counts.
    features
        Feature table (``id``, ``name``, ``feature_type``, ``genome``); CAR last.
    vdj
        TCR table exactly as written: 10x contig CSV columns or AIRR columns.
    truth
        Per-cell truth (columns ``TRUTH_CELL_COLUMNS``).
    """

    plan: LibraryPlan
    barcodes: np.ndarray
    counts: sp.csr_matrix
    features: pd.DataFrame
    vdj: pd.DataFrame
    truth: pd.DataFrame

    def to_anndata(self):
        """The counts as an AnnData (obs = truth, var = features with unique names, X float32)."""
        import anndata as ad

        obs = self.truth.set_index("cell")
        var = pd.DataFrame(
            {
                "gene_ids": self.features["id"].to_numpy(),
                "feature_types": self.features["feature_type"].to_numpy(),
                "genome": self.features["genome"].to_numpy(),
            },
            index=pd.Index(self.features["name"].to_numpy(), name=None),
        )
        adata = ad.AnnData(X=self.counts.astype(np.float32), obs=obs, var=var)
        adata.var_names_make_unique()  # duplicated symbols, as scanpy's 10x readers do
        return adata


@dataclass
class _Cells:
    """Per-cell draws of a library: ``n`` cells, then one partner row per doublet."""

    n: int
    state: np.ndarray
    clone: np.ndarray
    protected: np.ndarray
    is_doublet: np.ndarray
    primary: np.ndarray  # the doublet cells (sorted)
    partner: np.ndarray  # the row merged into each of them
    is_low_quality: np.ndarray
    no_tcr: np.ndarray
    pattern: np.ndarray  # 0 = VDJ + VJ (TRB + TRA), 1 = VDJ only, 2 = VJ only
    show_dual: np.ndarray


def random_barcodes(
    n: int, rng: np.random.Generator, taken: set[str] | None = None
) -> list[str]:
    """``n`` distinct 10x-style barcodes (16 nt + ``-1``), none of them in ``taken``."""
    letters = np.array(list("ACGT"))
    out: list[str] = []
    seen = set(taken or ())
    while len(out) < n:
        m = n - len(out)
        arr = letters[rng.integers(0, 4, size=(m, 16))]
        for row in arr:
            bc = "".join(row) + "-1"
            if bc not in seen:
                seen.add(bc)
                out.append(bc)
    return out


def simulate_library(
    lib: LibraryPlan,
    psim: PatientSim,
    panel: GenePanel,
    gene_logfactor: np.ndarray,
    params: SimParams,
) -> Library:
    """Simulate one library of a patient.

    Parameters
    ----------
    lib
        The library's plan (sample, timepoint, sort, size, formats).
    psim
        The patient's clone pools (clones drawn here are added to it).
    panel
        The gene panel.
    gene_logfactor
        Per-gene log factor of the library's batch and patient.
    params
        Simulator settings.

    Returns
    -------
    Library
        Counts, barcodes, features, TCR table and per-cell truth.
    """
    rng = np.random.default_rng([params.seed, 4, lib.index])
    n = lib.n_cells
    n_tot = n + int(round(params.doublet_rate * n))
    props = timepoint_props(psim.plan, lib.timepoint)
    state, clone_state = _draw_states(props, params, n_tot, rng)
    mix_state, mix_weight = draw_mixing(state, params.state_mixing, rng)
    clone = _draw_clones(lib, psim, params, state, clone_state, rng)
    protected = _plant_persistence(lib, psim, state, clone, rng)
    profile = np.array([psim.clones[c].profile for c in clone], dtype=np.int64)
    car = np.array([psim.clones[c].car for c in clone])
    cells = _draw_qc(params, n, state, clone, protected, rng)
    raw = simulate_counts(
        panel, params, state=state, mix_state=mix_state, mix_weight=mix_weight,
        lineage=profile, car=car, is_low_quality=cells.is_low_quality,
        tcr_idx=_tcr_feature_index(psim, panel, clone), gene_logfactor=gene_logfactor, rng=rng,
    )
    merge = sp.identity(n_tot, dtype=np.int32, format="csr") + sp.csr_matrix(
        (np.ones(len(cells.primary), dtype=np.int32), (cells.primary, cells.partner)),
        shape=(n_tot, n_tot),
    )
    mat = sp.csr_matrix((merge @ raw)[:n])
    mat.sort_indices()
    car_umis = mat[:, panel.n_genes].toarray().ravel()
    cell_bc, cell_chains = _cell_chains(psim, cells, params, rng)
    vdj = _contig_table(lib, cell_chains, rng)
    car_pos = car[:n].copy()
    car_pos[cells.primary] |= car[cells.partner]
    truth = _truth_table(
        lib, psim, cells, cell_bc=cell_bc, cell_chains=cell_chains, car_pos=car_pos,
        car_umis=car_umis, mix=(mix_state[:n], mix_weight[:n]),
    )
    return Library(
        plan=lib,
        barcodes=np.array(cell_bc, dtype=object),
        counts=mat,
        features=panel.features.copy(),
        vdj=vdj,
        truth=truth,
    )


def _draw_states(
    props: np.ndarray, params: SimParams, n_tot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's state, and the state of the pool its clone is drawn from."""
    state = rng.choice(len(STATES), size=n_tot, p=props)
    alt_states = np.array([STATES.index(s) for s in POOL_STATES if s != "treg"])
    alt_w = props[alt_states] / props[alt_states].sum()
    alt = alt_states[rng.choice(len(alt_states), size=n_tot, p=alt_w)]
    stray = rng.random(n_tot) < params.stray_rate
    clone_state = np.where((state == _I_PROLIF) | (stray & (state != _I_TREG)), alt, state)
    return state, clone_state


def draw_mixing(
    state: np.ndarray, mean_weight: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's neighbouring state and its weight in ``[0, 0.5]`` (mean ``mean_weight``)."""
    n = len(state)
    u = rng.random(n)
    mix_state = np.empty(n, dtype=np.int64)
    for s, name in enumerate(STATES):
        nb = np.array([STATES.index(x) for x in NEIGHBOURS[name]])
        sel = state == s
        mix_state[sel] = nb[np.minimum((u[sel] * len(nb)).astype(int), len(nb) - 1)]
    if mean_weight <= 0:
        return mix_state, np.zeros(n)
    a = 1.2
    b = a * (0.5 / mean_weight - 1.0)
    return mix_state, 0.5 * rng.beta(a, b, size=n)


def _draw_clones(
    lib: LibraryPlan,
    psim: PatientSim,
    params: SimParams,
    state: np.ndarray,
    clone_state: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Each cell's clone (index into ``psim.clones``): product, blood or persistent pools."""
    n_tot = len(state)
    u_src = rng.random(n_tot)
    u_pb = rng.random(n_tot)
    u_rank = rng.random(n_tot)
    if lib.timepoint == "IP":
        car_req = np.zeros(n_tot, bool)
        from_pb = np.zeros(n_tot, bool)
    elif lib.sort == "CAR+":
        car_req = u_src < 0.95
        from_pb = ~car_req & (u_pb < 0.5)
    else:
        car_req = np.zeros(n_tot, bool)
        from_pb = u_src < new_clone_rate(psim, lib.timepoint_day)
    if lib.timepoint != "IP" and psim.planted:
        # in vivo kinetics: a share of blood cells from the planted (expanded, null) clones
        plan = psim.in_vivo(lib.timepoint, lib.timepoint_day)
        in_vivo = (rng.random(n_tot) < plan.share) & (state != _I_TREG)
        pers_pick = plan.clones[rng.choice(len(plan.clones), size=n_tot, p=plan.probs)]
    else:
        in_vivo = np.zeros(n_tot, bool)
        pers_pick = np.zeros(n_tot, dtype=np.int64)
    clone = np.empty(n_tot, dtype=np.int64)
    for i in range(n_tot):
        if in_vivo[i]:
            clone[i] = pers_pick[i]
            continue
        key = ("pb" if from_pb[i] else "ip", STATES[clone_state[i]])
        pool = psim.pools[key]
        if car_req[i] and len(pool.car_idx):
            k = int(pool.car_idx[np.searchsorted(pool.car_cum, u_rank[i], side="right")])
        else:
            k = int(np.searchsorted(pool.cum, u_rank[i], side="right"))
        clone[i] = psim.clone_of(key, k)
    return clone


def _plant_persistence(
    lib: LibraryPlan,
    psim: PatientSim,
    state: np.ndarray,
    clone: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Give every persistent clone >= 2 cells (updates ``state``, ``clone``); the protected mask."""
    n = lib.n_cells
    protected = np.zeros(len(clone), bool)
    pers = np.array(psim.persistent, dtype=np.int64)
    for ci in psim.persistent:
        cl = psim.clones[ci]
        have = np.flatnonzero(clone[:n] == ci)[:2]
        protected[have] = True
        need = 2 - len(have)
        if need > 0:
            s_idx = STATES.index(cl.state)
            free = ~protected[:n] & ~np.isin(clone[:n], pers)
            cand = np.flatnonzero(free & (state[:n] == s_idx))
            if len(cand) < need:
                cand = np.flatnonzero(free & (state[:n] != _I_TREG))
            if len(cand) < need:
                raise CartCohortError(
                    f"library {lib.sample} has too few cells ({n}) to plant its persistent "
                    "clones. Fix: raise min_cells."
                )
            pick = rng.choice(cand, size=need, replace=False)
            clone[pick] = ci
            state[pick] = s_idx
            protected[pick] = True
    return protected


def _draw_qc(
    params: SimParams,
    n: int,
    state: np.ndarray,
    clone: np.ndarray,
    protected: np.ndarray,
    rng: np.random.Generator,
) -> _Cells:
    """QC truth: doublets (with their partner rows), low-quality cells, TCR detection."""
    n_tot = len(state)
    free = np.flatnonzero(~protected[:n])
    n_d = min(n_tot - n, len(free))
    is_doublet = np.zeros(n_tot, bool)
    prim = np.sort(rng.choice(free, size=n_d, replace=False))
    is_doublet[prim] = True
    partner = n + np.arange(n_d)
    free2 = free[~is_doublet[free]]
    n_lq = min(int(round(params.low_quality_rate * n)), len(free2))
    is_lq = np.zeros(n_tot, bool)
    is_lq[rng.choice(free2, size=n_lq, replace=False)] = True
    no_tcr = (rng.random(n_tot) < params.no_tcr_rate) & ~protected
    pattern = rng.choice(3, size=n_tot, p=[0.82, 0.10, 0.08])  # pair, TRB only, TRA only
    pattern[protected] = 0
    show_dual = rng.random(n_tot) < 0.8
    return _Cells(
        n=n, state=state, clone=clone, protected=protected, is_doublet=is_doublet,
        primary=prim, partner=partner, is_low_quality=is_lq, no_tcr=no_tcr, pattern=pattern,
        show_dual=show_dual,
    )


def _tcr_feature_index(psim: PatientSim, panel: GenePanel, clone: np.ndarray) -> np.ndarray:
    """Panel columns of each cell's own TCR features (-1: not in the panel).

    The VJ chain's V and J, the VDJ chain's V, J and C, the VJ chain's C and, for
    gamma-delta cells, the TRGC their TRG chain does not use (``expression``'s
    ``_TCR_FEATURE_WEIGHTS`` order).
    """
    tcr_idx = np.full((len(clone), TCR_FEATURE_COLUMNS), -1, dtype=np.int64)
    cache: dict[int, tuple[int, ...]] = {}
    for i, c in enumerate(clone):
        if c not in cache:
            cl = psim.clones[c]
            vj = cl.alphas[0]
            other_c = {"TRGC1": "TRGC2", "TRGC2": "TRGC1"}.get(vj.c)
            cache[c] = (
                panel.feature_index(vj.v),
                panel.feature_index(vj.j),
                panel.feature_index(cl.beta.v),
                panel.feature_index(cl.beta.j),
                panel.index[cl.beta.c],
                panel.index[vj.c],
                panel.index[other_c] if other_c else -1,
            )
        tcr_idx[i] = cache[c]
    return tcr_idx


def _reported(psim: PatientSim, cells: _Cells, i: int, gd_contigs: bool) -> bool:
    """Whether row ``i``'s own chains reach the contig table (gamma-delta: only in TRG/TRD mode)."""
    return not cells.no_tcr[i] and (gd_contigs or not psim.clones[cells.clone[i]].is_gd)


def _chains_of(psim: PatientSim, cells: _Cells, i: int, gd_contigs: bool) -> list[Chain]:
    """The TCR chains detected in row ``i`` (none, VDJ only, VJ only or both)."""
    if not _reported(psim, cells, i, gd_contigs):
        return []
    cl = psim.clones[cells.clone[i]]
    out: list[Chain] = []
    if cells.pattern[i] in (0, 1):
        out.append(cl.beta)
    if cells.pattern[i] in (0, 2):
        out.extend(cl.alphas if cells.show_dual[i] else cl.alphas[:1])
    return out


def _cell_chains(
    psim: PatientSim, cells: _Cells, params: SimParams, rng: np.random.Generator
) -> tuple[list[str], dict[str, list[Chain]]]:
    """Sorted cell barcodes, and the chains of every barcode with TCR (TCR-only ones too)."""
    n = cells.n
    n_extra = int(round(params.tcr_only_barcode_rate * n))
    bcs = random_barcodes(n + n_extra, rng)
    cell_bc = sorted(bcs[:n])
    extra_bc = bcs[n:]
    cell_chains: dict[str, list[Chain]] = {}
    partner_of = dict(zip(cells.primary.tolist(), cells.partner.tolist(), strict=True))
    gd = params.gd_contigs
    for i in range(n):
        chs = _chains_of(psim, cells, i, gd)
        if i in partner_of:
            chs = chs + [c for c in _chains_of(psim, cells, partner_of[i], gd) if c not in chs]
        if chs:
            cell_chains[cell_bc[i]] = chs
    with_tcr = np.array([i for i in range(n) if _reported(psim, cells, i, gd)])
    for bc in extra_bc if len(with_tcr) else ():  # TCR-only barcodes copy a reported cell
        cl = psim.clones[cells.clone[int(with_tcr[rng.integers(0, len(with_tcr))])]]
        cell_chains[bc] = [cl.beta, cl.alphas[0]]
    return cell_bc, cell_chains


def _contig_table(
    lib: LibraryPlan, cell_chains: dict[str, list[Chain]], rng: np.random.Generator
) -> pd.DataFrame:
    """The library's contig table (AIRR or 10x), raw clonotypes numbered by frequency."""
    keys = {bc: sorted(c.cdr3_nt for c in chs) for bc, chs in cell_chains.items()}
    freq: dict[tuple[str, ...], int] = {}
    for k in keys.values():
        freq[tuple(k)] = freq.get(tuple(k), 0) + 1
    ranked = sorted(freq, key=lambda k: (-freq[k], k))
    ct_name = {k: f"clonotype{r + 1}" for r, k in enumerate(ranked)}
    clonotype = {bc: (ct_name[tuple(k)], k) for bc, k in keys.items()}
    recs: list[dict[str, object]] = []
    for bc in sorted(cell_chains):
        recs.extend(chain_records(bc, cell_chains[bc], rng))
    return airr_rows(recs, clonotype) if lib.vdj_format == "airr" else tenx_rows(recs, clonotype)


def _truth_table(
    lib: LibraryPlan,
    psim: PatientSim,
    cells: _Cells,
    *,
    cell_bc: list[str],
    cell_chains: dict[str, list[Chain]],
    car_pos: np.ndarray,
    car_umis: np.ndarray,
    mix: tuple[np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """Per-cell truth of the library's ``n`` cells (``TRUTH_CELL_COLUMNS``).

    ``clone`` is empty for cells without their own TCR; a gamma-delta cell keeps its clone
    even when the contig table lists no gamma-delta contigs (``gd_contigs`` off).
    """
    sel = np.arange(cells.n)
    own_tcr = ~cells.no_tcr[: cells.n]
    lineage = [psim.clones[c].lineage for c in cells.clone[sel]]
    return pd.DataFrame(
        {
            "cell": [f"{lib.sample}_{bc}" for bc in cell_bc],
            "sample": lib.sample,
            "patient": lib.patient,
            "timepoint": lib.timepoint,
            "barcode": cell_bc,
            "state": [STATES[s] for s in cells.state[sel]],
            "state_weight": np.round(1.0 - mix[1], 4),
            "state_secondary": [STATES[s] for s in mix[0]],
            "cd4_cd8": lineage,
            "car_positive": car_pos,
            "clone": [
                psim.clones[c].gid if t else ""
                for c, t in zip(cells.clone[sel], own_tcr, strict=True)
            ],
            "is_doublet": cells.is_doublet[sel],
            "is_low_quality": cells.is_low_quality[sel],
            "has_tcr": np.array([bc in cell_chains for bc in cell_bc]),
            "car_umis": car_umis.astype(np.int64),
            "n_contigs": [len(cell_chains.get(bc, ())) for bc in cell_bc],
            "planted_persistent": cells.protected[sel],
            "is_gd": np.array([x == "gd" for x in lineage], dtype=bool),
        },
        columns=list(TRUTH_CELL_COLUMNS),
    )
