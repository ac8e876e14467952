"""The pre-specified primary panel of product features (``associate.primary_panel``).

The panel is the confirmatory question of a response association: a short,
versioned list of product features, one per biological question, fixed before the
response labels are looked at (``resources/association/primary_panel.yaml``).
Its features form one multiple-testing family; every other product feature is
exploratory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..yaml_file import read_yaml_file
from ..errors import InputError, Problem
from ..tl.features import ID_COLUMNS, feature_scope, is_descriptive

_BUNDLED = "resources/association/primary_panel.yaml"
_QUESTION = re.compile(r"^[a-z][a-z0-9_]*$")
#: Sizes of a panel that still answers one question per feature (issue 26: 10-15).
MIN_PANEL, MAX_PANEL = 1, 30


@dataclass(frozen=True)
class PanelFeature:
    """One feature of the primary panel.

    Attributes
    ----------
    feature
        Product-feature column of ``sample_features.tsv``.
    question
        Identifier of the biological question it answers.
    rationale
        Why this feature (one line).
    references
        Publications (DOIs).
    """

    feature: str
    question: str
    rationale: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class PrimaryPanel:
    """A validated primary panel.

    Attributes
    ----------
    version
        The file's ``version`` (written beside every primary row).
    features
        The panel in file order.
    source
        The file it was read from.
    """

    version: str
    features: tuple[PanelFeature, ...]
    source: str

    @property
    def names(self) -> list[str]:
        """Feature columns of the panel, in file order."""
        return [f.feature for f in self.features]

    @property
    def label(self) -> str:
        """``<file name> v<version>`` for tables and figures."""
        return f"{Path(self.source).name} v{self.version}"


def _parse_entry(i: int, entry: Any, *, source: str, problems: list[Problem]) -> PanelFeature | None:
    where = f"features[{i}]"
    fix_start = f"start from {_BUNDLED}"
    if not isinstance(entry, Mapping):
        problems.append(Problem(source, where, "not a mapping", fix_start))
        return None
    name = entry.get("feature")
    question = entry.get("question")
    if not isinstance(name, str) or not name:
        problems.append(Problem(source, where, "no 'feature'", "name a sample_features.tsv column"))
        return None
    if name in ID_COLUMNS or is_descriptive(name) or name.startswith("count_"):
        problems.append(Problem(source, f"{where} ({name})", "an identifier or descriptive "
                                "column, never tested", "choose a tested product feature"))
    elif feature_scope(name) != "product":
        problems.append(Problem(source, f"{where} ({name})", "measured after infusion (in vivo), "
                                "so it cannot predict response", "choose a product feature; "
                                "in vivo features are reported as outcome correlates"))
    if not isinstance(question, str) or not _QUESTION.match(question):
        problems.append(Problem(source, f"{where} ({name})", f"question {question!r} is not a "
                                "lower-case identifier", "give e.g. question: memory_like"))
        question = str(question)
    refs = entry.get("references", [])
    if not isinstance(refs, list):
        problems.append(Problem(source, f"{where} ({name})", "references is not a list",
                                "give references: [doi:...]"))
        refs = []
    return PanelFeature(name, question, str(entry.get("rationale", "")),
                        tuple(str(r) for r in refs))


def parse_primary_panel(spec: Any, *, source: str) -> PrimaryPanel:
    """Validate a parsed primary-panel file.

    Parameters
    ----------
    spec
        The YAML document: a mapping with ``version`` and ``features``.
    source
        File name used in messages.

    Returns
    -------
    PrimaryPanel
        The panel in file order.

    Raises
    ------
    InputError
        Listing every problem: no version, no features, a duplicated feature or
        question, an identifier, descriptive or in vivo feature.
    """
    if not isinstance(spec, Mapping):
        raise InputError([Problem(source, "", "the file is not a YAML mapping",
                                  f"start from {_BUNDLED}")])
    problems: list[Problem] = []
    version = spec.get("version")
    if version is None or str(version).strip() == "":
        problems.append(Problem(source, "version", "missing", "add version: 1 and bump it on "
                                "every change of the list"))
    entries = spec.get("features")
    if not isinstance(entries, list) or not MIN_PANEL <= len(entries) <= MAX_PANEL:
        problems.append(Problem(source, "features", f"must be a list of {MIN_PANEL}-{MAX_PANEL} "
                                "entries", "list one product feature per biological question"))
        entries = entries if isinstance(entries, list) else []
    parsed = [_parse_entry(i, e, source=source, problems=problems) for i, e in enumerate(entries)]
    feats = [p for p in parsed if p is not None]
    for attr in ("feature", "question"):
        values = [getattr(f, attr) for f in feats]
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            problems.append(Problem(source, "features", f"{attr} listed more than once: {dup}",
                                    f"keep one entry per {attr}"))
    if problems:
        raise InputError(problems)
    return PrimaryPanel(version=str(version), features=tuple(feats), source=source)


def load_primary_panel(path: str | os.PathLike) -> PrimaryPanel:
    """Read and validate a primary-panel YAML file (:func:`parse_primary_panel`); the
    panel's ``source`` is the path as given. A missing file, invalid YAML or an invalid
    panel raises :class:`~cartcohort.errors.InputError`."""
    spec, src = read_yaml_file(path, setting="associate.primary_panel")
    return parse_primary_panel(spec, source=src)
