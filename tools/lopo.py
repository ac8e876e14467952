"""Leave-one-product-out acceptance of scoring new products (issue #20).

For each of N infusion products of a finished cohort run: the cohort is re-run to its
frozen reference without that product (``snakemake reference`` in a work folder of its
own, the cohort's load and QC outputs copied in, so merge, integration, annotation,
features and association run again without it), then the product is scored as new
against that reference (:func:`cartcohort.reference.score_new_product`, the same call as
rule ``score_product``) and compared with its in-cohort results:

- ``max_abs_fraction_diff``: largest |new - in-cohort| over the fractions of
  ``sample_features.tsv`` (``*_fraction``, ``frac_*``; target <= 0.03), and
  ``_scorecard`` over the scorecard's fractions only (the protein features of an ADT
  panel are left out: scoring a new product reads no ADT panel);
- ``diversity_in_ci``: the in-cohort rarefied Gini-Simpson diversity inside the new
  product's CI (rarefied to the frozen depth);
- ``max_abs_percentile_diff``: largest |new - in-cohort| cohort percentile over the
  primary-panel features of the scorecard (target <= 10 points), and ``_scorecard``
  over the one-page scorecard's attributes;
- ``state_agreement``: share of cells whose state equals the in-cohort call (>= 0.9),
  ``state_agreement_transfer`` for the kNN vote alone, and ``cohort_self_agreement``:
  the same share for the cohort's *other* cells between the re-run and the full run
  (how far in-cohort calls move when one library leaves).

Usage (a demo run in results/, ~3 min per product on 2 cores)::

    .venv/bin/python tools/lopo.py --results results --sheet config/samples.tsv \\
        --clinical config/clinical.tsv --out benchmarks/lopo.tsv
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from cartcohort.reference import MATCHED_SETTINGS, score_new_product
from cartcohort.scorecards.product import FITNESS_FEATURES
from cartcohort.tl.protein_features import PROTEIN_FEATURES

#: The diversity with a CI on the scorecard.
DIVERSITY = "rep_rarefied_gini_simpson"

COLUMNS = ("sample", "n_cells", "max_abs_fraction_diff_scorecard", "max_abs_fraction_diff",
           "worst_fraction",
           "diversity", "diversity_new", "diversity_ci_low", "diversity_ci_high",
           "diversity_in_ci", "max_abs_percentile_diff_scorecard", "max_abs_percentile_diff",
           "worst_percentile_feature", "state_agreement", "state_agreement_transfer",
           "cohort_self_agreement", "rebuild_s", "score_s", "pass")


def pick_products(sheet: pd.DataFrame, n: int) -> list[str]:
    """``n`` product libraries spread evenly over the sheet's sorted products."""
    prods = sorted(sheet.loc[sheet["compartment"] == "product", "sample"].astype(str))
    idx = np.unique(np.linspace(0, len(prods) - 1, n).round().astype(int))
    return [prods[i] for i in idx]


def rebuild(sample: str, *, results: Path, sheet: Path, clinical: Path, work: Path) -> Path:
    """The cohort's reference without ``sample`` (snakemake target ``reference``)."""
    table = pd.read_csv(sheet, sep="\t")
    for col in ("gex", "vdj"):
        table[col] = [str((sheet.parent / p).resolve()) for p in table[col]]
    table = table[table["sample"].astype(str) != sample]
    work.mkdir(parents=True, exist_ok=True)
    table.to_csv(work / "samples.tsv", sep="\t", index=False)
    for sub in ("load", "qc"):
        dest = work / "results" / sub
        dest.mkdir(parents=True, exist_ok=True)
        for f in (results / sub).iterdir():
            if f.is_file() and not f.name.startswith(sample + ".") and not (dest / f.name).exists():
                shutil.copy2(f, dest / f.name)
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
           "-d", str(work), "--cores", "2", "--configfile", str(REPO / "config/config.yaml"),
           "--rerun-triggers", "mtime", "--config", f"samples={work / 'samples.tsv'}",
           f"clinical={clinical.resolve()}", "--", "reference"]
    with open(work / "run.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return work / "results" / "reference"


def self_agreement(results: Path, rebuilt: Path) -> float:
    """Share of the *other* cohort cells whose state in the cohort re-run without the
    product equals the full run's: how far the in-cohort calls themselves move when one
    library leaves (the ceiling of ``state_agreement``)."""
    a, b = (pd.read_csv(d / "tables" / "cells.tsv.gz", sep="\t", usecols=["cell", "state"])
            .set_index("cell")["state"].astype(str) for d in (results, rebuilt))
    both = a.index.intersection(b.index)
    return float((a[both] == b[both]).mean())


def compare(sample: str, *, results: Path, scored) -> dict:
    """The new product's features, percentiles and states against its in-cohort ones."""
    feats = pd.read_csv(results / "tables" / "sample_features.tsv", sep="\t")
    old = feats[feats["sample"].astype(str) == sample].iloc[0]
    new = scored.features.iloc[0]
    # the protein features (ADT panel, rule protein) are not computed for new products:
    # scoring reads no ADT panel, so they have no value to compare
    fr = [c for c in feats.columns if (c.endswith("_fraction") or c.startswith("frac_"))
          and c not in PROTEIN_FEATURES]
    # a state with no cell in the product has no frac_ column in its one-row table: 0
    diff = pd.Series({c: abs(float(new.get(c, 0.0)) - float(old[c])) for c in fr
                      if pd.notna(old[c]) and pd.notna(new.get(c, 0.0))})
    card = pd.read_csv(results / "scorecards" / f"{sample}.tsv", sep="\t")
    prim = card[card["primary"].astype(str).str.lower() == "true"].set_index("feature")
    newc = scored.card.set_index("feature")
    pdiff = (newc.loc[prim.index, "cohort_percentile"].astype(float)
             - prim["cohort_percentile"].astype(float)).abs()
    old_all = card.set_index("feature")["cohort_percentile"].astype(float)
    card_feats = [f for f in FITNESS_FEATURES if f in newc.index and f in old_all.index]
    pdiff_card = (newc.loc[card_feats, "cohort_percentile"].astype(float)
                  - old_all[card_feats]).abs()
    cells = pd.read_csv(results / "tables" / "cells.tsv.gz", sep="\t",
                        usecols=["cell", "state"]).set_index("cell")["state"].astype(str)
    ours = scored.cells.set_index(scored.cells["cell"].astype(str))
    both = ours.index.intersection(cells.index)
    div, lo, hi = (float(old[DIVERSITY]), float(new[f"{DIVERSITY}_ci_low"]),
                   float(new[f"{DIVERSITY}_ci_high"]))
    row = {
        "sample": sample, "n_cells": len(ours),
        "max_abs_fraction_diff_scorecard": float(
            diff[[f for f in FITNESS_FEATURES if f in diff.index]].max()),
        "max_abs_fraction_diff": float(diff.max()), "worst_fraction": diff.idxmax(),
        "diversity": div, "diversity_new": float(new[DIVERSITY]),
        "diversity_ci_low": lo, "diversity_ci_high": hi, "diversity_in_ci": lo <= div <= hi,
        "max_abs_percentile_diff_scorecard": float(pdiff_card.max()),
        "max_abs_percentile_diff": float(pdiff.max()),
        "worst_percentile_feature": pdiff.idxmax(),
        "state_agreement": float((ours.loc[both, "state"].astype(str) == cells[both]).mean()),
        "state_agreement_transfer": float(
            (ours.loc[both, "state_transfer"].astype(str) == cells[both]).mean()),
    }
    row["pass"] = bool(row["max_abs_fraction_diff"] <= 0.03 and row["diversity_in_ci"]
                       and row["max_abs_percentile_diff"] <= 10
                       and row["state_agreement"] >= 0.9)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--sheet", type=Path, default=Path("config/samples.tsv"))
    ap.add_argument("--clinical", type=Path, default=Path("config/clinical.tsv"))
    ap.add_argument("--n-products", type=int, default=5)
    ap.add_argument("--samples", nargs="*", help="products to leave out (default: spread)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cartcohort_lopo"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/lopo.tsv"))
    args = ap.parse_args(argv)
    import time

    sheet = pd.read_csv(args.sheet, sep="\t")
    products = args.samples or pick_products(sheet, args.n_products)
    frozen = json.loads((args.results / "reference" / "settings.json").read_text())
    settings = {k: frozen.get(k) for k in MATCHED_SETTINGS}
    rows = []
    for sample in products:
        t0 = time.perf_counter()
        ref = rebuild(sample, results=args.results, sheet=args.sheet,
                      clinical=args.clinical, work=args.work / sample)
        t1 = time.perf_counter()
        qc = args.results / "qc"
        scored = score_new_product(qc / f"{sample}.h5mu",
                                   qc_summary=pd.read_csv(qc / f"{sample}.tsv", sep="\t"),
                                   sample=sample, reference_dir=ref, settings=settings,
                                   features_file=REPO / "resources" / "features.yaml")
        row = compare(sample, results=args.results, scored=scored)
        row["cohort_self_agreement"] = self_agreement(args.results, ref.parent)
        (args.work / sample / f"{sample}.html").write_text(scored.html)
        row["rebuild_s"], row["score_s"] = round(t1 - t0, 1), round(time.perf_counter() - t1, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False, float_format="%.4g")
    print(table.to_string(index=False))
    return 0 if table["pass"].all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
