"""A synthetic published cohort: the authors' cell table, label map, sheet and clinical
table, with a planted difference (responders' products hold more cells labelled
``CD8 Tcm``), for tests/test_published.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

#: Authors' labels -> their probability in a non-responder's library; responders get
#: PLANTED more of "CD8 Tcm" (taken from "CD8 Tex").
LABELS = {"CD8 Tcm": 0.15, "CD8 Tex": 0.35, "CD4 Treg": 0.2, "CD4 Tem": 0.2, "NK-like": 0.1}
PLANTED = 0.25
LABEL_MAP = {
    "CD8 Tcm": {"state": "tcm", "cd4_cd8": "CD8"},
    "CD8 Tex": {"state": "exhausted", "cd4_cd8": "CD8"},
    "CD4 Treg": {"state": "treg", "cd4_cd8": "CD4"},
    "CD4 Tem": {"state": "tem", "cd4_cd8": "CD4"},
    "NK-like": {},
}
TIMEPOINTS = (("IP", 0, "product"), ("D14", 14, "PB"))


def published_cohort(out: Path, *, n_patients: int = 10, n_cells: int = 150,
                     seed: int = 0) -> dict[str, Path]:
    """Write cells.tsv, label_map.yaml, samples.tsv and clinical.tsv under ``out``.

    Half the patients are responders (CR), half non-responders (PD); each has an
    infusion-product (IP) and a day-14 blood (D14) library of ``n_cells`` cells.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    sheet, clinical, cells = [], [], []
    for i in range(n_patients):
        patient = f"P{i + 1:02d}"
        responder = i % 2 == 0
        clinical.append({"patient": patient, "response": "CR" if responder else "PD"})
        probs = dict(LABELS)
        if responder:
            probs["CD8 Tcm"] += PLANTED
            probs["CD8 Tex"] -= PLANTED
        for tp, day, comp in TIMEPOINTS:
            sample = f"{patient}_{tp}"
            sheet.append({"sample": sample, "patient": patient, "timepoint": tp,
                          "timepoint_day": day, "compartment": comp, "batch": "b1",
                          "sort": "CD3+", "gex": "", "vdj": ""})
            n = n_cells + int(rng.integers(0, 40))
            labels = rng.choice(list(probs), size=n, p=list(probs.values()))
            for j, lab in enumerate(labels):
                cells.append({"barcode": f"{sample}_C{j:04d}", "library": sample,
                              "donor": patient, "celltype": lab,
                              "clonotype": f"{patient}_cl{rng.integers(0, n // 3)}"})
    files = {
        "cells": out / "cells.tsv",
        "label_map": out / "label_map.yaml",
        "samples": out / "samples.tsv",
        "clinical": out / "clinical.tsv",
    }
    pd.DataFrame(cells).to_csv(files["cells"], sep="\t", index=False)
    files["label_map"].write_text(yaml.safe_dump(LABEL_MAP, sort_keys=False))
    pd.DataFrame(sheet).to_csv(files["samples"], sep="\t", index=False)
    pd.DataFrame(clinical).to_csv(files["clinical"], sep="\t", index=False)
    return files
