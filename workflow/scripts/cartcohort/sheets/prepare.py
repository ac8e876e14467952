"""Read, resolve and validate the sample sheet and the clinical table (parse time).

Every problem found is collected and raised at once as an
:class:`~cartcohort.errors.InputError` of :class:`~cartcohort.errors.Problem`
objects, each naming the file, the line/column and the fix. Line numbers are
those of the file as shown by a text editor (the header is line 1).

Sample, patient and timepoint ids must follow :data:`~.messages.ID_RULE` (they become
file names, wildcards and parts of joined id lists); ids spelled ``NA`` are refused:
the workflow's tables write a missing value as ``NA``, so such an id would be read
back as missing. Every patient needs a response code of the config, or ``NA`` (not
known: carried through, and listed as a warning row).
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ..config import fill_defaults
from ..errors import InputError, Problem
from ..response_groups import apply_response_override
from .cache import load_cache, save_cache
from .clinical import (
    ResponseCodes,
    check_clinical,
    check_response_codes,
    check_response_override,
    check_responses,
    cross_check,
    response_na_warnings,
)
from .messages import warning_row
from .samples import check_samples
from .schema import load_schema, validate_table
from .tsv import SheetTable, read_tsv


def config_path(value: Any, base_dir: Path) -> Path:
    """A path from the config (``~`` expanded) as an absolute path, relative to ``base_dir``."""
    p = Path(os.path.expanduser(str(value)))
    if not p.is_absolute():
        p = base_dir / p
    return Path(os.path.normpath(os.path.abspath(p)))


def _check_exclusions(
    sample_df: pd.DataFrame,
    excluded: list[str],
    samples_path: Path,
    problems: list[Problem],
) -> pd.DataFrame:
    """Report ``exclude_samples`` entries not in the sheet, or excluding every sample;
    return the included rows."""
    excluded_set = set(excluded)
    known = set(sample_df.index)
    unknown = [s for s in excluded if s not in known]
    if unknown:
        close = {u: difflib.get_close_matches(u, sorted(known), n=1) for u in unknown}
        hint = "; ".join(f"'{u}' -> '{c[0]}'?" for u, c in close.items() if c)
        problems.append(
            Problem(
                "config",
                "key 'exclude_samples'",
                f"names sample(s) not in {samples_path.name}: "
                f"{', '.join(repr(u) for u in unknown)}",
                "use sample ids from the sheet's 'sample' column" + (f" ({hint})" if hint else ""),
            )
        )
    included = sample_df.loc[[s for s in sample_df.index if s not in excluded_set]]
    if len(sample_df) and included.empty:
        problems.append(
            Problem(
                "config",
                "key 'exclude_samples'",
                "excludes every sample of the sheet",
                "leave at least one sample in the cohort",
            )
        )
    return included


def _yaml_hint(key: Any, known: list[str]) -> str:
    """How to write ``key`` of a config map of sample ids that YAML did not read as text."""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, known, n=1)
        return f" ('{key}' -> '{close[0]}'?)" if close else ""
    same = [k for k in known if k.lower() == str(key).lower()]
    if isinstance(key, int) and not isinstance(key, bool):
        same += [k for k in known if k.isdigit() and int(k) == key]
    spelled = f": write '{same[0]}' in quotes" if same else ", so quote the id"
    return f" (YAML reads an unquoted {key!r} as a {type(key).__name__}{spelled})"


def _check_overrides(
    config: Mapping[str, Any], sample_df: pd.DataFrame, problems: list[Problem]
) -> None:
    """Report ``qc.per_sample`` keys that are no sample id of the sheet: their overrides
    would be silently ignored."""
    per_sample = (config.get("qc") or {}).get("per_sample") or {}
    known = sorted(map(str, sample_df.index))
    unknown = [k for k in per_sample if not isinstance(k, str) or k not in set(known)]
    if unknown:
        hints = "".join(_yaml_hint(k, known) for k in unknown)
        problems.append(
            Problem(
                "config",
                "key 'qc.per_sample'",
                f"has overrides for sample(s) not in the sample sheet: "
                f"{', '.join(repr(k) for k in unknown)}, which would be ignored",
                "use sample ids from the sheet's 'sample' column" + hints,
            )
        )


def _check_primary(primary: Any, included: pd.DataFrame, problems: list[Problem]) -> None:
    """Report a ``primary_timepoint`` that is no included sample's timepoint."""
    if primary is None or included.empty or "timepoint" not in included:
        return
    tps = sorted(set(included["timepoint"]) - {""})
    if str(primary) not in tps:
        problems.append(
            Problem(
                "config",
                "key 'primary_timepoint'",
                f"'{primary}' is not the timepoint of any (included) sample; "
                f"the sheet has: {', '.join(tps)}",
                "set primary_timepoint to the timepoint label of the infusion "
                "products (column 'timepoint' of the sample sheet)",
            )
        )


def _samples_of(
    sheet: SheetTable | None,
    schema: Mapping[str, Any],
    problems: list[Problem],
    warnings: list[dict[str, Any]],
    check_files: bool,
    excluded: set[str],
    cache_file: Path | None,
    config: Mapping[str, Any],
) -> pd.DataFrame | None:
    """Validate and check the sample sheet, through the cache of checked libraries
    (``config`` with its defaults filled: ``car_features``, ``load.min_tcr_gex_overlap``;
    ``published.cells`` set: ``gex`` may be empty)."""
    cache = load_cache(cache_file) if cache_file is not None and check_files else None
    sample_df = None
    if config["published"]["cells"]:
        # published entry point: the libraries' cells come from the authors' table
        schema = {**schema, "required": [c for c in schema["required"] if c != "gex"]}
    if sheet is not None:
        validate_table(sheet, schema, problems, skip=_OWN_CHECKS)
        sample_df = check_samples(
            sheet,
            problems,
            check_files=check_files,
            excluded=excluded,
            cache=cache,
            warnings=warnings,
            car_features=[str(c) for c in config["car_features"]],
            min_tcr_gex_overlap=float(config["load"]["min_tcr_gex_overlap"]),
        )
    if cache is not None and cache_file is not None:
        save_cache(cache_file, cache)
    if sample_df is not None and config["published"]["cells"]:
        warnings += _unused_files(sample_df)
    return sample_df


def _unused_files(sample_df: pd.DataFrame) -> list[dict[str, Any]]:
    """Warning rows of sheet gex files that the published entry point does not read
    (the cells and labels come from the authors' table; vdj files are read: their
    contigs give the clonotypes, cartcohort.published_tcr)."""
    rows = []
    fixes = {
        "gex": ("empty the sheet's gex column, or set published.cells to '' to start from "
                "the Cell Ranger files"),
    }
    for col, fix in fixes.items():
        given = sorted(s for s in sample_df.index if sample_df.loc[s].get(col, ""))
        if given:
            rows.append(warning_row(
                step="sheets", check=f"published_ignores_{col}", count=len(given),
                detail=f"published.cells is set: the {col} files of {len(given)} "
                f"librar{'ies' if len(given) != 1 else 'y'} ({', '.join(given[:5])}) "
                "are not read", action=fix[0].upper() + fix[1:]))
    return rows


class PreparedInputs(NamedTuple):
    """What :func:`prepare_inputs` returns (unpack it as three values)."""

    #: The resolved sample sheet, indexed by ``sample``.
    samples: pd.DataFrame
    #: The clinical table, indexed by ``patient``.
    clinical: pd.DataFrame
    #: Rows of ``warnings.tsv`` (:func:`~.messages.warning_row`): inputs carried through.
    warnings: list[dict[str, Any]]


def prepare_inputs(
    config: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike = ".",
    check_files: bool = True,
    schema_dir: str | os.PathLike | None = None,
    cache_path: str | os.PathLike | None = None,
) -> PreparedInputs:
    """Read, resolve and validate the sample sheet and clinical table.

    Parameters
    ----------
    config
        The workflow config; uses ``samples``, ``clinical`` (paths, relative to
        ``base_dir``), ``primary_timepoint``, ``exclude_samples``, the response
        codes ``responders``, ``non_responders``, ``associate.exclude_responses``
        ``car_features``, ``load.min_tcr_gex_overlap``, ``published.cells`` (set: ``gex``
        may be empty; absent keys take the schema's defaults).
    base_dir
        Folder that relative ``config`` paths are relative to.
    check_files
        Also check every GEX/TCR file (existence, format, cell count, every contig
        of the TCR files, barcode overlap, two samples with the same file content,
        every ``car_features`` entry in each library whose ``car_expected`` is
        true). ``False`` only checks the tables (quick dry runs).
    schema_dir
        Folder with ``samples.schema.yaml``/``clinical.schema.yaml``/
        ``config.schema.yaml`` (default: the repository's ``config/schemas``).
    cache_path
        Optional JSON file remembering libraries whose files passed the checks,
        keyed on their paths, sizes and modification times; an unchanged library
        is not re-read on the next call (Snakemake parses the workflow on every
        invocation, and once per job on clusters). Relative to ``base_dir``.

    Returns
    -------
    PreparedInputs
        ``samples`` indexed by ``sample``: the sheet's columns (strings),
        ``timepoint_day`` float (NaN when absent), absolute ``gex`` (a concrete
        h5/h5ad file or an mtx folder) and ``vdj`` (``""`` when absent; filled
        from a cellranger multi folder). ``clinical`` indexed by ``patient``:
        ``response`` (text, ``NA`` when not known), covariates (numbers as float).
        ``warnings``: rows of ``warnings.tsv`` for inputs carried through, sorted
        by step, sample and check.

    Raises
    ------
    InputError
        Listing every problem found (module docstring). Problems of the files of
        libraries in ``exclude_samples`` are only logged, so that a corrupt library
        can be excluded.
    """
    base = Path(base_dir)
    problems: list[Problem] = []
    warnings: list[dict[str, Any]] = []
    full = _with_defaults(config, schema_dir)
    samples_path = config_path(config["samples"], base)
    clinical_path = config_path(config["clinical"], base)
    sheet = read_tsv(samples_path, "sample sheet", problems)
    clin = read_tsv(clinical_path, "clinical table", problems)
    excluded = [str(s) for s in (config.get("exclude_samples") or [])]
    cache_file = config_path(cache_path, base) if cache_path else None
    s_schema = load_schema("samples", schema_dir)
    sample_df = _samples_of(
        sheet, s_schema, problems, warnings, check_files, set(excluded), cache_file, full
    )
    clinical_df = _clinical_of(clin, load_schema("clinical", schema_dir), full, problems)
    if sheet is not None and sample_df is not None:
        included = _check_exclusions(sample_df, excluded, samples_path, problems)
        _check_overrides(config, sample_df, problems)
        _check_primary(config.get("primary_timepoint"), included, problems)
        if clinical_df is not None:
            cross_check(sheet, sample_df, clinical_df, set(excluded), clinical_path, problems)
            warnings += response_na_warnings(clinical_df, sample_df, set(excluded), clinical_path)
    if problems:
        raise InputError(problems)
    assert sample_df is not None and clinical_df is not None
    warnings = [w for w in warnings if w["sample"] not in set(excluded)]
    warnings.sort(key=lambda w: (w["step"], w["sample"], w["check"]))
    return PreparedInputs(sample_df, clinical_df, warnings)


#: ``(column, validator)`` of the sheets' schemas checked with better words here.
_OWN_CHECKS = {
    ("sample", "pattern"),
    ("patient", "pattern"),
    ("timepoint", "pattern"),
    ("response", "required"),
}


def _clinical_of(
    clin: SheetTable | None,
    schema: Mapping[str, Any],
    config: Mapping[str, Any],
    problems: list[Problem],
) -> pd.DataFrame | None:
    """Validate and check the clinical table and the response codes of ``config``
    (defaults filled); with ``response_override``, its codes replace ``response``."""
    codes = ResponseCodes.of(config)
    check_response_codes(codes, problems)
    if clin is None:
        return None
    validate_table(clin, schema, problems, skip=_OWN_CHECKS)
    clinical_df = check_clinical(clin, schema, problems)
    check_responses(clin, codes, problems)
    override = config["response_override"]
    check_response_override(clin, override, codes, problems)
    if clinical_df is None or problems or not override:
        return clinical_df
    return apply_response_override(clinical_df, column=override)  # the paper's groups


def _with_defaults(config: Mapping[str, Any], schema_dir: str | os.PathLike | None) -> dict:
    """A copy of ``config`` in which absent keys take the config schema's defaults."""
    filled = copy.deepcopy(dict(config))
    fill_defaults(filled, load_schema("config", schema_dir))
    return filled
