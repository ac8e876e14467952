"""Small helpers of the simulator: the genetic code, seed-independent RNGs, fake gene ids."""

from __future__ import annotations

import hashlib

import numpy as np

BASES = "TCAG"
_CODON_AA = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
_CODONS = [a + b + c for a in BASES for b in BASES for c in BASES]
CODON_TABLE: dict[str, str] = dict(zip(_CODONS, _CODON_AA, strict=True))
_AA_CODONS: dict[str, list[str]] = {}
for _c, _a in CODON_TABLE.items():
    _AA_CODONS.setdefault(_a, []).append(_c)
SENSE_AA = "ACDEFGHIKLMNPQRSTVWY"


def translate(nt: str) -> str:
    """Translate a nucleotide sequence (length multiple of 3 is not required)."""
    return "".join(CODON_TABLE[nt[i : i + 3]] for i in range(0, len(nt) - len(nt) % 3, 3))


def back_translate(aa: str, rng: np.random.Generator) -> str:
    """A nucleotide sequence coding for ``aa`` (one random codon per residue)."""
    choice = rng.integers(0, 6, size=len(aa))
    return "".join(_AA_CODONS[a][c % len(_AA_CODONS[a])] for a, c in zip(aa, choice, strict=True))


def stable_int(text: str) -> int:
    """A 64-bit integer that depends only on ``text`` (not on ``PYTHONHASHSEED``)."""
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "little")


def fixed_rng(text: str) -> np.random.Generator:
    """RNG that depends only on ``text`` (germline sequences, gene parameters)."""
    return np.random.default_rng(stable_int(text))


def random_aa(n: int, rng: np.random.Generator, alphabet: str = SENSE_AA) -> str:
    """``n`` residues drawn uniformly from ``alphabet``."""
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=n))


def gene_id(symbol: str) -> str:
    """Fake but stable Ensembl-like id of a gene symbol (``ENSG`` + 11 digits)."""
    return f"ENSG{stable_int('gene:' + symbol) % 10**11:011d}"


def gex_symbol(vdj_gene: str) -> str:
    """GEX-reference spelling of a V(D)J gene (``TRAV29/DV5`` -> ``TRAV29DV5``)."""
    return vdj_gene.replace("/", "")


def clip(x: float, lo: float, hi: float) -> float:
    """``x`` limited to ``[lo, hi]``, as a Python float."""
    return float(min(max(x, lo), hi))
