"""The sheet of new products to score (config ``new_samples``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..sheets import prepare_inputs
from ..sheets.prepare import PreparedInputs


def prepare_new_samples(
    config: Mapping[str, Any],
    *,
    path: str | os.PathLike,
    check_files: bool = True,
    cache_path: str | os.PathLike | None = None,
) -> PreparedInputs:
    """Read and validate the new products' sample sheet like the cohort's.

    The sheet has the columns of the cohort's (``config/schemas/samples.schema.yaml``);
    new products have no outcome, so their patients are checked against a clinical
    table of the sheet's own patients with response ``NA``. Every library must be at
    the primary timepoint (an infusion product).

    Parameters
    ----------
    config
        The workflow config (its load/CAR settings check the files).
    path
        The new sheet (config ``new_samples``).
    check_files, cache_path
        As :func:`cartcohort.sheets.prepare_inputs`.

    Returns
    -------
    PreparedInputs
        As :func:`cartcohort.sheets.prepare_inputs`; ``clinical`` lists the new
        patients with response NA.
    """
    import pandas as pd

    sheet = pd.read_csv(path, sep="\t", dtype=str)
    if "patient" not in sheet.columns:
        raise InputError([Problem(str(path), "column 'patient'", "is missing",
                                  "use the columns of the cohort's sample sheet")])
    with tempfile.TemporaryDirectory() as tmp:
        clinical = Path(tmp) / "clinical_of_new_samples.tsv"
        pd.DataFrame({"patient": sorted(sheet["patient"].dropna().unique()),
                      "response": "NA"}).to_csv(clinical, sep="\t", index=False)
        cfg = dict(config, samples=str(Path(path).resolve()), clinical=str(clinical),
                   exclude_samples=[])
        prepared = prepare_inputs(cfg, base_dir=".", check_files=check_files,
                                  cache_path=cache_path)
    bad = [s for s, tp in prepared.samples["timepoint"].items()
           if tp != config["primary_timepoint"]]
    if bad:
        raise InputError([
            Problem(str(path), f"sample '{s}'",
                    f"timepoint is not the primary timepoint "
                    f"'{config['primary_timepoint']}' (only infusion products are scored)",
                    "list only infusion-product libraries in new_samples")
            for s in bad])
    warnings = [w for w in prepared.warnings if w.get("check") != "response_na"]
    return PreparedInputs(prepared.samples, prepared.clinical, warnings)
