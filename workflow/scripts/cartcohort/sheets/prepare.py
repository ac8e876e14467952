"""Read, resolve and validate the sample sheet and the clinical table (parse time).

Every problem found is collected and raised at once as an
:class:`~cartcohort.errors.InputError` of :class:`~cartcohort.errors.Problem`
objects, each naming the file, the line/column and the fix. Line numbers are
those of the file as shown by a text editor (the header is line 1).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError, Problem
from .cache import load_cache, save_cache
from .clinical import check_clinical, cross_check
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
    check_files: bool,
    excluded: set[str],
    cache_file: Path | None,
) -> pd.DataFrame | None:
    """Validate and check the sample sheet, through the cache of checked libraries."""
    cache = load_cache(cache_file) if cache_file is not None and check_files else None
    sample_df = None
    if sheet is not None:
        validate_table(sheet, schema, problems, skip={("sample", "pattern")})
        sample_df = check_samples(
            sheet, problems, check_files=check_files, excluded=excluded, cache=cache
        )
    if cache is not None and cache_file is not None:
        save_cache(cache_file, cache)
    return sample_df


def prepare_inputs(
    config: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike = ".",
    check_files: bool = True,
    schema_dir: str | os.PathLike | None = None,
    cache_path: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, resolve and validate the sample sheet and clinical table.

    Parameters
    ----------
    config
        The workflow config; uses ``samples``, ``clinical`` (paths, relative to
        ``base_dir``), ``primary_timepoint``, ``exclude_samples``.
    base_dir
        Folder that relative ``config`` paths are relative to.
    check_files
        Also check every GEX/TCR file (existence, format, cell count, barcode
        overlap). ``False`` only checks the tables (quick dry runs).
    schema_dir
        Folder with ``samples.schema.yaml``/``clinical.schema.yaml``
        (default: the repository's ``config/schemas``).
    cache_path
        Optional JSON file remembering libraries whose files passed the checks,
        keyed on their paths, sizes and modification times; an unchanged library
        is not re-read on the next call (Snakemake parses the workflow on every
        invocation, and once per job on clusters). Relative to ``base_dir``.

    Returns
    -------
    samples, clinical
        ``samples`` indexed by ``sample``: the sheet's columns (strings),
        ``timepoint_day`` float (NaN when absent), absolute ``gex`` (a concrete
        h5/h5ad file or an mtx folder) and ``vdj`` (``""`` when absent; filled
        from a cellranger multi folder when left empty). ``clinical`` indexed
        by ``patient``: ``response`` and covariates (numbers as float).

    Raises
    ------
    InputError
        Listing every problem found. Problems of libraries listed in
        ``exclude_samples`` that concern their files are logged as warnings
        instead, so a corrupt library can be excluded. Sample and patient ids
        spelled ``NA`` are refused: the workflow's tables write a missing value
        as ``NA``, so such an id would be read back as missing.
    """
    base = Path(base_dir)
    problems: list[Problem] = []
    samples_path = config_path(config["samples"], base)
    clinical_path = config_path(config["clinical"], base)
    s_schema = load_schema("samples", schema_dir)
    c_schema = load_schema("clinical", schema_dir)

    sheet = read_tsv(samples_path, "sample sheet", problems)
    clin = read_tsv(clinical_path, "clinical table", problems)
    excluded = [str(s) for s in (config.get("exclude_samples") or [])]
    excluded_set = set(excluded)

    cache_file = config_path(cache_path, base) if cache_path else None
    sample_df = _samples_of(sheet, s_schema, problems, check_files, excluded_set, cache_file)
    clinical_df = None
    if clin is not None:
        validate_table(clin, c_schema, problems)
        clinical_df = check_clinical(clin, c_schema, problems)

    if sheet is not None and sample_df is not None:
        included = _check_exclusions(sample_df, excluded, samples_path, problems)
        _check_primary(config.get("primary_timepoint"), included, problems)
        if clinical_df is not None:
            cross_check(sheet, sample_df, clinical_df, excluded_set, clinical_path, problems)

    if problems:
        raise InputError(problems)
    assert sample_df is not None and clinical_df is not None
    return sample_df, clinical_df
