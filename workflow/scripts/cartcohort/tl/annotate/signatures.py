"""Marker programs: the versioned signature file, its validation and the programs usable
on a dataset.

The programs are read from a YAML file (:func:`load_signatures`, schema in
``resources/signatures/t_cell_states.yaml``). Genes absent from the data are reported; a
program with fewer than :data:`MIN_PRESENT_GENES` ``up`` genes in the data is skipped
with a warning (:func:`restrict_signatures`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...yaml_file import read_yaml_file
from ...errors import CartCohortError, InputError, Problem

logger = logging.getLogger(__name__)

#: State ids of DESIGN.md that a signature file may define.
KNOWN_STATES: tuple[str, ...] = (
    "naive_tscm", "tcm", "tem", "teff", "exhausted", "treg", "proliferating", "gd", "mait",
)
UNASSIGNED = "unassigned"
#: Programs with fewer present ``up`` genes are skipped.
MIN_PRESENT_GENES = 2
#: Exhaustion-marker columns of the cells table.
MARKER_COLUMNS: tuple[str, ...] = ("pd1_pos", "tim3_pos", "lag3_pos")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_GENE_RE = re.compile(r"^\S+$")
_TOP_LEVEL_KEYS = {"version", "lineage", "exhaustion_markers", "states", "name", "description"}
_STATE_KEYS = {"id", "label", "up", "down", "lineage", "references", "note"}


@dataclass(frozen=True)
class StateSignature:
    """One marker program.

    Parameters
    ----------
    id
        State id used in calls and as ``score_<id>``.
    label
        Human-readable name.
    up, down
        Genes higher / lower in the state.
    lineage
        ``"CD4"`` or ``"CD8"`` when the state can only be called in that lineage.
    references
        Publications the program comes from.
    """

    id: str
    label: str
    up: tuple[str, ...]
    down: tuple[str, ...] = ()
    lineage: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Signatures:
    """A validated signature file."""

    version: str
    states: tuple[StateSignature, ...]
    lineage: Mapping[str, tuple[str, ...]]
    exhaustion_markers: Mapping[str, str]
    source: str = ""

    @property
    def state_ids(self) -> list[str]:
        """State ids in file order."""
        return [s.id for s in self.states]

    def state(self, state_id: str) -> StateSignature:
        """The program with this id."""
        for s in self.states:
            if s.id == state_id:
                return s
        raise KeyError(state_id)


def _gene_list(value: Any, *, source: str, where: str, problems: list[Problem]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        problems.append(Problem(source, where, f"must be a list of gene symbols, got {value!r}",
                                "write it as a YAML list, e.g. [CCR7, SELL]"))
        return ()
    out: list[str] = []
    for g in value:
        if not isinstance(g, str) or not _GENE_RE.match(g):
            problems.append(Problem(source, where, f"{g!r} is not a gene symbol",
                                    "use gene symbols as in the count matrix (no spaces)"))
            continue
        if g in out:
            problems.append(Problem(source, where, f"gene {g} is listed twice", "list it once"))
            continue
        out.append(g)
    return tuple(out)


def _parse_header(spec: Mapping, *, source: str, problems: list[Problem]) -> Any:
    """The ``version`` value; problems with it and with unknown top-level keys."""
    version = spec.get("version")
    if version is None or (isinstance(version, str) and not version.strip()):
        problems.append(Problem(source, "key 'version'", "missing",
                                "add a 'version:' key (bump it whenever gene lists change)"))
    for key in spec:
        if key not in _TOP_LEVEL_KEYS:
            problems.append(Problem(source, f"key {key!r}", "unknown top-level key",
                                    f"use only {sorted(_TOP_LEVEL_KEYS)}"))
    return version


#: Keys of the signature file's ``lineage`` section: marker genes of CD4 and CD8 (required),
#: the gamma-delta TCR genes, and the genes of the CD4-like and CD8-like transcriptional
#: programs (optional, together).
LINEAGE_KEYS: tuple[str, ...] = ("CD4", "CD8", "gd", "CD4_program", "CD8_program")


def _parse_lineage(spec: Mapping, *, source: str,
                   problems: list[Problem]) -> dict[str, tuple[str, ...]]:
    lineage_spec = spec.get("lineage")
    lineage: dict[str, tuple[str, ...]] = {}
    if (not isinstance(lineage_spec, Mapping) or not {"CD4", "CD8"} <= set(lineage_spec)
            or not set(lineage_spec) <= set(LINEAGE_KEYS)):
        problems.append(Problem(source, "key 'lineage'",
                                "must map CD4 and CD8 (and optionally gd, CD4_program, "
                                "CD8_program) to lists of genes",
                                "e.g. lineage: {CD4: [CD4], CD8: [CD8A, CD8B], "
                                "gd: [TRDC, TRGC1, TRGC2]}"))
        return lineage
    if ("CD4_program" in lineage_spec) != ("CD8_program" in lineage_spec):
        problems.append(Problem(source, "key 'lineage'",
                                "CD4_program and CD8_program go together",
                                "give both lists, or neither"))
    for lin in [k for k in LINEAGE_KEYS if k in lineage_spec]:
        genes = _gene_list(lineage_spec[lin], source=source, where=f"lineage.{lin}",
                           problems=problems)
        if not genes:
            problems.append(Problem(source, f"lineage.{lin}", "no genes",
                                    "list at least one gene"))
        lineage[lin] = genes
    return lineage


def _parse_markers(spec: Mapping, *, source: str, problems: list[Problem]) -> dict[str, str]:
    markers_spec = spec.get("exhaustion_markers", {}) or {}
    markers: dict[str, str] = {}
    if not isinstance(markers_spec, Mapping):
        problems.append(Problem(source, "key 'exhaustion_markers'", "must be a mapping",
                                "e.g. {pd1_pos: PDCD1, tim3_pos: HAVCR2, lag3_pos: LAG3}"))
        return markers
    for col, gene in markers_spec.items():
        if col not in MARKER_COLUMNS:
            problems.append(Problem(source, f"exhaustion_markers.{col}", "unknown column",
                                    f"use {list(MARKER_COLUMNS)}"))
        elif not isinstance(gene, str) or not _GENE_RE.match(gene):
            problems.append(Problem(source, f"exhaustion_markers.{col}",
                                    f"{gene!r} is not a gene symbol", "give one gene symbol"))
        else:
            markers[col] = gene
    return markers


def _parse_state_id(st: Any, n: int, *, source: str, seen: set[str],
                    problems: list[Problem]) -> str | None:
    """The id of states entry ``n`` (None when the entry cannot be read further)."""
    where = f"states entry {n}"
    if not isinstance(st, Mapping):
        problems.append(Problem(source, where, "is not a mapping", "give id, label, up, down"))
        return None
    sid = st.get("id")
    if not isinstance(sid, str) or not _ID_RE.match(sid):
        problems.append(Problem(source, f"{where}, key 'id'", f"invalid id {sid!r}",
                                "use a lower-case identifier such as 'naive_tscm'"))
        return None
    where = f"state '{sid}'"
    if sid == UNASSIGNED:
        problems.append(Problem(source, where, "'unassigned' is reserved", "rename the state"))
    if sid in seen:
        problems.append(Problem(source, where, "duplicate state id",
                                "give every state its own id"))
    seen.add(sid)
    for key in st:
        if key not in _STATE_KEYS:
            problems.append(Problem(source, f"{where}, key {key!r}", "unknown key",
                                    "use id, label, up, down, lineage, references"))
    return sid


def _parse_state(st: Mapping, sid: str, *, source: str,
                 problems: list[Problem]) -> StateSignature:
    where = f"state '{sid}'"
    up = _gene_list(st.get("up"), source=source, where=f"{where}, key 'up'", problems=problems)
    down = _gene_list(st.get("down"), source=source, where=f"{where}, key 'down'",
                      problems=problems)
    if isinstance(st.get("up"), (list, tuple)) and len(up) < MIN_PRESENT_GENES:
        problems.append(Problem(source, f"{where}, key 'up'",
                                f"needs at least {MIN_PRESENT_GENES} genes, has {len(up)}",
                                "list the genes that are higher in the state"))
    both = sorted(set(up) & set(down))
    if both:
        problems.append(Problem(source, where, f"genes both up and down: {both}",
                                "keep each gene in one list"))
    lin = st.get("lineage")
    if lin is not None and lin not in ("CD4", "CD8"):
        problems.append(Problem(source, f"{where}, key 'lineage'", f"unknown lineage {lin!r}",
                                "use CD4, CD8 or leave the key out"))
    refs = st.get("references", []) or []
    if isinstance(refs, str):
        refs = [refs]
    label = st.get("label", sid)
    return StateSignature(id=sid, label=str(label), up=up, down=down, lineage=lin,
                          references=tuple(str(r) for r in refs))


def _parse_states(spec: Mapping, *, source: str,
                  problems: list[Problem]) -> list[StateSignature]:
    states_spec = spec.get("states")
    states: list[StateSignature] = []
    if not isinstance(states_spec, list) or not states_spec:
        problems.append(Problem(source, "key 'states'", "must be a non-empty list of programs",
                                "see resources/signatures/t_cell_states.yaml"))
        states_spec = []
    seen: set[str] = set()
    for n, st in enumerate(states_spec, start=1):
        sid = _parse_state_id(st, n, source=source, seen=seen, problems=problems)
        if sid is not None:
            states.append(_parse_state(st, sid, source=source, problems=problems))
    return states


def parse_signatures(spec: Any, *, source: str) -> Signatures:
    """Validate a parsed signature file.

    Parameters
    ----------
    spec
        The YAML document (a mapping with ``version``, ``lineage``,
        ``exhaustion_markers`` and ``states``).
    source
        File name used in error messages.

    Returns
    -------
    Signatures
        The programs in file order, the lineage genes, the exhaustion-marker genes
        and ``source``.

    Raises
    ------
    InputError
        Listing every problem found (missing keys, bad ids, duplicate states,
        genes both up and down, unknown lineage restriction, ...).
    """
    problems: list[Problem] = []
    if not isinstance(spec, Mapping):
        raise InputError([Problem(source, "", "the file is not a YAML mapping",
                                  "start from resources/signatures/t_cell_states.yaml")])
    version = _parse_header(spec, source=source, problems=problems)
    lineage = _parse_lineage(spec, source=source, problems=problems)
    markers = _parse_markers(spec, source=source, problems=problems)
    states = _parse_states(spec, source=source, problems=problems)
    if problems:
        raise InputError(problems)
    unknown = [s.id for s in states if s.id not in KNOWN_STATES]
    if unknown:
        logger.warning("%s: states %s are outside the DESIGN.md vocabulary %s; they are scored "
                       "and called but downstream summaries may ignore them",
                       source, unknown, list(KNOWN_STATES))
    return Signatures(version=str(version), states=tuple(states), lineage=lineage,
                      exhaustion_markers=markers, source=source)


def load_signatures(path: str | os.PathLike) -> Signatures:
    """Read and validate a signature YAML file (see :func:`parse_signatures`).

    Returns
    -------
    Signatures
        The validated programs; ``source`` is the path as given.

    Raises
    ------
    InputError
        The file is missing, not YAML, or invalid.
    """
    spec, src = read_yaml_file(path, setting="annotate.signatures")
    return parse_signatures(spec, source=src)


def restrict_signatures(
    signatures: Signatures, *, genes: Sequence[str], min_genes: int = MIN_PRESENT_GENES
) -> tuple[Signatures, pd.DataFrame]:
    """Keep the genes present in the data; drop programs with too few.

    Parameters
    ----------
    signatures
        Validated programs.
    genes
        Gene symbols of the data (``var_names``).
    min_genes
        Minimum number of present ``up`` genes for a program to be used.

    Returns
    -------
    (Signatures, pandas.DataFrame)
        The programs restricted to present genes, and one row per program:
        ``state, n_up, n_up_present, n_down, n_down_present, missing, used``.
    """
    present = set(map(str, genes))
    rows = []
    kept: list[StateSignature] = []
    for s in signatures.states:
        up = tuple(g for g in s.up if g in present)
        down = tuple(g for g in s.down if g in present)
        missing = [g for g in (*s.up, *s.down) if g not in present]
        used = len(up) >= min_genes
        if missing:
            logger.info("signature %s: %d of %d genes absent from the data: %s", s.id,
                        len(missing), len(s.up) + len(s.down), ", ".join(missing))
        if not used:
            logger.warning("signature %s skipped: only %d of its up genes are in the data "
                           "(need %d)", s.id, len(up), min_genes)
        else:
            kept.append(StateSignature(id=s.id, label=s.label, up=up, down=down,
                                       lineage=s.lineage, references=s.references))
        rows.append({"state": s.id, "n_up": len(s.up), "n_up_present": len(up),
                     "n_down": len(s.down), "n_down_present": len(down),
                     "missing": ",".join(missing), "used": used})
    if not kept:
        raise CartCohortError(
            f"{signatures.source}: no marker program has {min_genes} or more genes in the data; "
            "check that var_names are gene symbols (not Ensembl ids) and that the signature "
            "file matches the organism")
    out = Signatures(version=signatures.version, states=tuple(kept), lineage=signatures.lineage,
                     exhaustion_markers=signatures.exhaustion_markers, source=signatures.source)
    return out, pd.DataFrame(rows)
