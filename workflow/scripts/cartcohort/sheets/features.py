"""Checks of a library's feature names: every CAR feature of the config is there.

Shared by the parse-time checks (:func:`.samples.check_row_files`) and the
reader (:func:`cartcohort.io.read_gex`), so that a library is refused with the
same message whether or not the parse-time file checks ran
(``check_input_files``). A library that legitimately lacks the CAR (an unsorted
pre-infusion sample, say) says so in the sample sheet's ``car_expected`` column;
it is then loaded, and the load step reports it in its warnings.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from .schema import coerce
from .sniff import Issue

#: The sample-sheet column saying whether a library must hold the CAR features.
CAR_EXPECTED_COLUMN = "car_expected"


def car_expected(value: str | bool | None) -> bool:
    """The ``car_expected`` cell of a sheet row as a boolean (empty or absent: true).

    Values that are not true/false are left to the schema validation, which
    reports them; they count as true here so that the CAR is still checked.
    """
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return True
    return coerce(value, {"type": "boolean"}) is not False


def closest_features(name: str, names: Sequence[str], *, n: int = 3) -> list[str]:
    """The feature names of a library closest to ``name``.

    Spelling neighbours (:func:`difflib.get_close_matches`, case-insensitive)
    first, then names that contain ``name`` (a CAR called ``CD19-CAR`` for
    ``CAR``), shortest first.

    Parameters
    ----------
    name
        The feature looked for (an entry of config ``car_features``).
    names
        The library's feature names.
    n
        How many names to return at most.

    Returns
    -------
    list of str
        Up to ``n`` names as the library spells them.
    """
    spelled: dict[str, str] = {}
    for x in names:
        spelled.setdefault(x.lower(), x)
    key = name.lower()
    close = difflib.get_close_matches(key, list(spelled), n=n, cutoff=0.6)
    containing = sorted((k for k in spelled if key and key in k and k != key), key=len)
    return [spelled[k] for k in dict.fromkeys([*close, *containing])][:n]


def _listed(name: str, values: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``values``: one set per distinct list object (the
    sniffers share one decoded list between the libraries of one reference)."""
    key = id(values)
    hit = _SETS.get(key)
    if hit is None or hit[0] is not values:
        if len(_SETS) >= 8:
            _SETS.pop(next(iter(_SETS)))
        hit = _SETS[key] = (values, frozenset(values))
    return name in hit[1]


_SETS: dict[int, tuple[Sequence[str], frozenset[str]]] = {}


def car_feature_issues(
    car_features: Sequence[str],
    names: Sequence[str],
    ids: Sequence[str],
    *,
    where: str,
) -> list[Issue]:
    """The ``(where, what, fix)`` issues of ``car_features`` entries absent from a library.

    A CAR feature is found when a feature's name or id equals it (whatever the
    feature's type: Gene Expression, Custom...).

    Parameters
    ----------
    car_features
        Config ``car_features``.
    names, ids
        The library's feature names and ids.
    where
        The part of the file that lists the features (e.g. ``features.tsv.gz``).

    Returns
    -------
    list of Issue
        One per missing entry, naming the closest feature names found.
    """
    issues: list[Issue] = []
    for car in dict.fromkeys(str(c) for c in car_features):
        if _listed(car, names) or _listed(car, ids):
            continue
        close = closest_features(car, names)
        seen = (
            "closest feature names: " + ", ".join(f"'{x}'" for x in close)
            if close
            else "no feature name is close to it"
        )
        issues.append(
            (
                where,
                f"has no feature '{car}' of config car_features among its {len(names)} "
                f"features ({seen}), so every cell would be called CAR- (and a CAR "
                "feature under another name analysed as an ordinary gene)",
                "set config car_features to the CAR's feature name in this library's "
                "reference, or map the library to a reference that includes the CAR "
                "sequence; if the library legitimately lacks the CAR (e.g. an unsorted "
                f"pre-infusion sample), set its column '{CAR_EXPECTED_COLUMN}' to false in "
                "the sample sheet",
            )
        )
    return issues
