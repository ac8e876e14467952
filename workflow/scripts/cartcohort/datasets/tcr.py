"""Simulated TCR repertoire: germline segments, clones, chains and contig tables (10x, AIRR)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from ._utils import BASES, SENSE_AA, back_translate, fixed_rng, random_aa, translate
from .genes import (
    LINEAGE_PROFILES,
    TRAJ,
    TRAV,
    TRBJ,
    TRBJ_MOTIF,
    TRBV,
    TRDD,
    TRDJ_MOTIF,
    TRDV,
    TRGC_OF_J,
    TRGJ_MOTIF,
    TRGV,
)

# rough CDR3 middle amino-acid usage
_CDR3_AA = "GSATRLDEPQNYVKFHW"
_CDR3_W = np.array([14, 12, 7, 8, 9, 8, 6, 5, 6, 6, 5, 5, 4, 3, 3, 2, 1], dtype=float)
_CDR3_CUM = np.cumsum(_CDR3_W / _CDR3_W.sum())
_CDR3_CUM[-1] = 1.0


@dataclass(frozen=True)
class _Segment:
    aa: str
    nt: str


def _seg(aa: str, rng: np.random.Generator) -> _Segment:
    return _Segment(aa, back_translate(aa, rng))


_V_CACHE: dict[str, dict[str, _Segment | str]] = {}


def _v_germline(v: str) -> dict[str, _Segment | str]:
    if v not in _V_CACHE:
        rng = fixed_rng("V:" + v)
        nonc = SENSE_AA.replace("C", "")
        prefixes = ("CASS", "CASS", "CASS", "CASR", "CAWS", "CSAR", "CASG", "CSVE")
        if v.startswith("TRA"):
            prefixes = ("CAV", "CAVR", "CALS", "CAAS", "CAMR", "CVV", "CAE", "CAYR", "CILR")
        elif v.startswith("TRG"):
            prefixes = ("CALWE", "CATWD", "CAAWD", "CALWEV")
        elif v.startswith("TRD"):
            prefixes = ("CACD", "CALGE", "CAFR", "CACDT")
        _V_CACHE[v] = {
            "utr": "".join(BASES[i] for i in rng.integers(0, 4, size=60)),
            "fwr1": _seg(random_aa(25, rng, nonc), rng),
            "cdr1": _seg(random_aa(int(rng.integers(5, 7)), rng, nonc), rng),
            "fwr2": _seg(random_aa(17, rng, nonc), rng),
            "cdr2": _seg(random_aa(int(rng.integers(5, 7)), rng, nonc), rng),
            "fwr3": _seg(random_aa(36, rng, nonc), rng),
            "prefix": prefixes[int(rng.integers(0, len(prefixes)))],
        }
    return _V_CACHE[v]


_J_CACHE: dict[str, dict[str, _Segment | str]] = {}


def _j_germline(j: str) -> dict[str, _Segment | str]:
    if j not in _J_CACHE:
        rng = fixed_rng("J:" + j)
        known = {**TRBJ_MOTIF, **TRGJ_MOTIF, **TRDJ_MOTIF}
        if j in known:
            motif = known[j]
        else:
            ends = ("KLTF", "KLIF", "QLIF", "TLIF", "KVIF", "NLVF", "RLTF", "QFYF")
            motif = random_aa(int(rng.integers(2, 4)), rng, "GSNTDYAKQ") + ends[
                int(rng.integers(0, len(ends)))
            ]
        fwr4 = "G" + random_aa(2, rng, "QKEP") + "GT" + random_aa(4, rng, "RLKVTS")
        _J_CACHE[j] = {"motif": motif, "fwr4": _seg(fwr4, rng)}
    return _J_CACHE[j]


_C_CACHE: dict[str, str] = {}


def _c_germline(c: str) -> str:
    if c not in _C_CACHE:
        rng = fixed_rng("C:" + c)
        _C_CACHE[c] = back_translate(random_aa(80, rng), rng)
    return _C_CACHE[c]


_C_AA_CACHE: dict[str, str] = {}


def _c_translation(c: str) -> str:
    if c not in _C_AA_CACHE:
        _C_AA_CACHE[c] = translate(_c_germline(c))
    return _C_AA_CACHE[c]


@dataclass(frozen=True)
class Chain:
    """One TCR chain of a clone."""

    locus: str
    v: str
    d: str
    j: str
    c: str
    cdr3: str
    cdr3_nt: str


@dataclass
class Clone:
    """A planted clone; lineage, CAR status and chains are shared by all its cells.

    ``lineage`` is ``CD4``, ``CD8``, ``DN`` (double-negative alpha-beta) or ``gd``
    (gamma-delta). ``alphas`` and ``beta`` are the clone's VJ and VDJ chains: TRA and TRB
    for alpha-beta clones, TRG and TRD for gamma-delta clones. ``cd8aa``: a gamma-delta
    clone that expresses CD8A without CD8B. ``cd4_like``: a double-negative clone with
    the CD4-like transcriptional program (the others have the CD8-like one).
    """

    gid: str
    patient: str
    state: str
    lineage: str
    car: bool
    source: str
    alphas: tuple[Chain, ...]
    beta: Chain
    persistent: bool = False
    cd8aa: bool = False
    cd4_like: bool = False

    @property
    def is_gd(self) -> bool:
        """Whether the clone is gamma-delta."""
        return self.lineage == "gd"

    @property
    def profile(self) -> int:
        """Row of the clone's expression profile in ``LINEAGE_PROFILES``."""
        name = "gd_cd8aa" if self.is_gd and self.cd8aa else self.lineage
        if self.lineage == "DN" and self.cd4_like:
            name = "DN_cd4like"
        return LINEAGE_PROFILES.index(name)


def _usage_weights(n: int) -> np.ndarray:
    """Cumulative usage distribution over a gene list ordered by frequency."""
    w = (np.arange(n) + 1.0) ** -0.5
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    return cum


def _draw(cum: np.ndarray, rng: np.random.Generator, size: int | None = None):
    return np.searchsorted(cum, rng.random(size), side="right")


_TRAV_W = _usage_weights(len(TRAV))
_TRBV_W = _usage_weights(len(TRBV))
_TRAJ_W = _usage_weights(len(TRAJ))
_TRBJ_W = _usage_weights(len(TRBJ))


# Gamma-delta segment usage: (genes, cumulative probabilities)
_TRDV_USE = (TRDV, (0.6, 0.92, 1.0))
_TRDJ_USE = (("TRDJ1", "TRDJ3", "TRDJ2", "TRDJ4"), (0.8, 0.9, 0.95, 1.0))
_TRDD_USE = (TRDD, (0.6, 0.9, 1.0))
_TRGJ_V9_USE = (("TRGJP", "TRGJ1", "TRGJ2"), (0.8, 0.9, 1.0))
_TRGV_OTHER_USE = (TRGV, (0.15, 0.45, 0.65, 0.8, 0.9, 1.0))  # TRGV9 15 %, then by rank
_TRGJ_OTHER_USE = (("TRGJ1", "TRGJ2", "TRGJP1", "TRGJP2"), (0.35, 0.7, 0.85, 1.0))


def _pick(use: tuple[tuple[str, ...], tuple[float, ...]], rng: np.random.Generator) -> str:
    genes, cum = use
    return genes[min(int(np.searchsorted(cum, rng.random(), side="right")), len(genes) - 1)]


def _gd_segments(locus: str, rng: np.random.Generator, paired_v: str) -> tuple[str, str, str, str]:
    """V, D, J and C of a gamma (``paired_v``: its delta chain's V) or delta chain.

    Blood gamma-delta cells are mostly V-gamma-9 V-delta-2 (TRGV9-TRGJP-TRGC1 with TRDV2),
    else V-delta-1 (or 3) with another TRGV, mostly TRGC2.
    """
    if locus == "TRD":
        v, j, d = _pick(_TRDV_USE, rng), _pick(_TRDJ_USE, rng), _pick(_TRDD_USE, rng)
        return v, ("" if rng.random() < 0.2 else d), j, "TRDC"
    if paired_v == "TRDV2" and rng.random() < 0.92:
        v, j = "TRGV9", _pick(_TRGJ_V9_USE, rng)
    else:
        v, j = _pick(_TRGV_OTHER_USE, rng), _pick(_TRGJ_OTHER_USE, rng)
    return v, "", j, TRGC_OF_J[j]


def make_gd_chains(rng: np.random.Generator, used: set[str]) -> tuple[Chain, Chain]:
    """A gamma-delta clone's TRG and TRD chains, CDR3 nucleotides new to ``used`` (added)."""
    delta = make_chain("TRD", rng, used)
    return make_chain("TRG", rng, used, paired_v=delta.v), delta


def make_chain(
    locus: str, rng: np.random.Generator, used: set[str], *, paired_v: str = ""
) -> Chain:
    """A new chain of ``locus`` whose CDR3 nucleotides are not in ``used`` (added to it).

    ``locus`` is ``TRA``, ``TRB``, ``TRG`` or ``TRD``; ``paired_v`` (TRG only) is the V of
    the clone's delta chain, which sets the gamma V usage.
    """
    for _ in range(1000):
        if locus in ("TRG", "TRD"):
            v, d, j, c = _gd_segments(locus, rng, paired_v)
            middle = int(rng.integers(1, 6)) if locus == "TRG" else int(rng.integers(4, 11))
        elif locus == "TRA":
            v = TRAV[_draw(_TRAV_W, rng)]
            j = TRAJ[_draw(_TRAJ_W, rng)]
            d, c = "", "TRAC"
            middle = int(rng.integers(1, 6))
        else:
            v = TRBV[_draw(_TRBV_W, rng)]
            j = TRBJ[_draw(_TRBJ_W, rng)]
            if j.startswith("TRBJ1"):
                d, c = "TRBD1", "TRBC1"
            else:
                d, c = ("TRBD1", "TRBD2")[int(rng.integers(0, 2))], "TRBC2"
            if rng.random() < 0.25:
                d = ""
            middle = int(rng.integers(2, 7))
        prefix = str(_v_germline(v)["prefix"])
        motif = str(_j_germline(j)["motif"])
        motif = motif[int(rng.integers(0, 3)) :] if len(motif) > 5 else motif
        mid = "".join(_CDR3_AA[i] for i in _draw(_CDR3_CUM, rng, middle))
        aa = prefix + mid + motif
        nt = back_translate(aa, rng)
        if nt not in used:
            used.add(nt)
            return Chain(locus, v, d, j, c, aa, nt)
    raise CartCohortError("internal: could not draw a unique CDR3 after 1000 tries")


def _contig_parts(chain: Chain, rng: np.random.Generator) -> dict[str, object]:
    """Full contig of a chain: segments, sequence and alignment coordinates (1-based)."""
    vg = _v_germline(chain.v)
    jg = _j_germline(chain.j)
    utr = str(vg["utr"])[int(rng.integers(0, 40)) :]
    segs = [vg["fwr1"], vg["cdr1"], vg["fwr2"], vg["cdr2"], vg["fwr3"]]
    vregion = "".join(s.nt for s in segs)  # type: ignore[union-attr]
    fwr4 = jg["fwr4"]
    cstub = _c_germline(chain.c)[: int(rng.integers(60, 220))]
    seq = utr + vregion + chain.cdr3_nt + fwr4.nt + cstub  # type: ignore[union-attr]
    v_start = len(utr) + 1
    v_end = len(utr) + len(vregion) + 9
    j_len = 3 * len(str(jg["motif"])) + len(fwr4.nt)  # type: ignore[union-attr]
    junc_end = len(utr) + len(vregion) + len(chain.cdr3_nt)
    j_end = junc_end + len(fwr4.nt)  # type: ignore[union-attr]
    j_start = max(v_end + 1, j_end - j_len + 1)
    v_aa = "".join(s.aa for s in segs)  # type: ignore[union-attr]
    c_aa = _c_translation(chain.c)[: len(cstub) // 3]
    return {
        "segs": segs,
        "fwr4": fwr4,
        "sequence": seq,
        "sequence_aa": v_aa + chain.cdr3 + fwr4.aa + c_aa,  # type: ignore[union-attr]
        "v_start": v_start,
        "v_end": v_end,
        "j_start": j_start,
        "j_end": j_end,
        "c_start": j_end + 1,
        "c_end": len(seq),
        "junc_start": len(utr) + len(vregion) + 1,
        "junc_end": junc_end,
    }


TENX_VDJ_COLUMNS: tuple[str, ...] = (
    "barcode", "is_cell", "contig_id", "high_confidence", "length", "chain", "v_gene",
    "d_gene", "j_gene", "c_gene", "full_length", "productive", "fwr1", "fwr1_nt", "cdr1",
    "cdr1_nt", "fwr2", "fwr2_nt", "cdr2", "cdr2_nt", "fwr3", "fwr3_nt", "cdr3", "cdr3_nt",
    "fwr4", "fwr4_nt", "reads", "umis", "raw_clonotype_id", "raw_consensus_id",
    "exact_subclonotype_id",
)
AIRR_COLUMNS: tuple[str, ...] = (
    "cell_id", "clone_id", "sequence_id", "sequence", "sequence_aa", "productive",
    "rev_comp", "v_call", "v_cigar", "d_call", "d_cigar", "j_call", "j_cigar", "c_call",
    "c_cigar", "sequence_alignment", "germline_alignment", "junction", "junction_aa",
    "junction_length", "junction_aa_length", "v_sequence_start", "v_sequence_end",
    "d_sequence_start", "d_sequence_end", "j_sequence_start", "j_sequence_end",
    "c_sequence_start", "c_sequence_end", "consensus_count", "umi_count", "duplicate_count",
    "is_cell", "locus",
)


def chain_records(
    barcode: str, chains: list[Chain], rng: np.random.Generator
) -> list[dict[str, object]]:
    """One contig record per chain of a barcode: full contig, UMI and read counts."""
    recs = []
    for i, ch in enumerate(chains, start=1):
        parts = _contig_parts(ch, rng)
        umis = 1 + int(rng.poisson(5.0 if ch.locus in ("TRB", "TRD") else 3.0))
        reads = int(umis * rng.lognormal(np.log(350.0), 0.4)) + umis
        recs.append(
            {"barcode": barcode, "contig_id": f"{barcode}_contig_{i}", "chain": ch,
             "parts": parts, "umis": umis, "reads": reads}
        )
    return recs


def tenx_rows(recs: list[dict[str, object]], clonotype: dict[str, tuple[str, list[str]]]):
    """Contig records as a Cell Ranger ``filtered_contig_annotations.csv`` table."""
    rows = []
    for r in recs:
        ch: Chain = r["chain"]  # type: ignore[assignment]
        parts = r["parts"]
        segs = parts["segs"]  # type: ignore[index]
        ct, keys = clonotype[r["barcode"]]  # type: ignore[index]
        row = {
            "barcode": r["barcode"], "is_cell": "true", "contig_id": r["contig_id"],
            "high_confidence": "true", "length": len(parts["sequence"]),  # type: ignore[index]
            "chain": ch.locus, "v_gene": ch.v, "d_gene": ch.d, "j_gene": ch.j, "c_gene": ch.c,
            "full_length": "true", "productive": "true",
        }
        for name, s in zip(("fwr1", "cdr1", "fwr2", "cdr2", "fwr3"), segs, strict=True):
            row[name] = s.aa
            row[name + "_nt"] = s.nt
        row["cdr3"] = ch.cdr3
        row["cdr3_nt"] = ch.cdr3_nt
        row["fwr4"] = parts["fwr4"].aa  # type: ignore[index,union-attr]
        row["fwr4_nt"] = parts["fwr4"].nt  # type: ignore[index,union-attr]
        row["reads"] = r["reads"]
        row["umis"] = r["umis"]
        row["raw_clonotype_id"] = ct
        row["raw_consensus_id"] = f"{ct}_consensus_{keys.index(ch.cdr3_nt) + 1}"
        row["exact_subclonotype_id"] = 1
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TENX_VDJ_COLUMNS))


def airr_rows(recs: list[dict[str, object]], clonotype: dict[str, tuple[str, list[str]]]):
    """Contig records as an AIRR rearrangement table (``airr_rearrangement.tsv``)."""
    rows = []
    for r in recs:
        ch: Chain = r["chain"]  # type: ignore[assignment]
        p: dict = r["parts"]  # type: ignore[assignment]
        seq = p["sequence"]
        n = len(seq)
        vs, ve, js, je, cs, ce = (
            p["v_start"], p["v_end"], p["j_start"], p["j_end"], p["c_start"], p["c_end"]
        )
        if ch.d:
            mid = (p["junc_start"] + p["junc_end"]) // 2
            ds, de = mid - 4, mid + 4
            d_cigar = f"{ds - 1}S{de - ds + 1}M{n - de}S"
        else:
            ds = de = None
            d_cigar = ""
        aln = seq[vs - 1 : je]
        rows.append(
            {
                "cell_id": r["barcode"],
                "clone_id": clonotype[r["barcode"]][0],  # type: ignore[index]
                "sequence_id": r["contig_id"],
                "sequence": seq,
                "sequence_aa": p["sequence_aa"],
                "productive": "T",
                "rev_comp": "F",
                "v_call": ch.v,
                "v_cigar": f"{vs - 1}S{ve - vs + 1}M{n - ve}S",
                "d_call": ch.d,
                "d_cigar": d_cigar,
                "j_call": ch.j,
                "j_cigar": f"{js - 1}S{je - js + 1}M{n - je}S",
                "c_call": ch.c,
                "c_cigar": f"{cs - 1}S{ce - cs + 1}M",
                "sequence_alignment": aln,
                "germline_alignment": aln,
                "junction": ch.cdr3_nt,
                "junction_aa": ch.cdr3,
                "junction_length": len(ch.cdr3_nt),
                "junction_aa_length": len(ch.cdr3),
                "v_sequence_start": vs,
                "v_sequence_end": ve,
                "d_sequence_start": ds,
                "d_sequence_end": de,
                "j_sequence_start": js,
                "j_sequence_end": je,
                "c_sequence_start": cs,
                "c_sequence_end": ce,
                "consensus_count": r["reads"],
                "umi_count": r["umis"],
                "duplicate_count": r["umis"],
                "is_cell": "T",
                "locus": ch.locus,
            }
        )
    df = pd.DataFrame(rows, columns=list(AIRR_COLUMNS))
    for col in ("d_sequence_start", "d_sequence_end"):
        df[col] = df[col].astype("Int64")
    return df

