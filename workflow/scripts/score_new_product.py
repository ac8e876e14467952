#!/usr/bin/env python
"""Score new infusion products against an existing cohort's reference.

Superseded by ``snakemake score_products --config new_samples=new.tsv
reference=path/to/results/reference`` (README "Score a new product"), which loads, QCs,
projects and annotates the new libraries itself; this script only places an already
computed ``sample_features.tsv``.

No re-run of the cohort is needed: the reference is the cohort's
``results/tables/reference_features.tsv`` (written by rule ``scorecards``)
and the new products' features come from a ``sample_features.tsv`` computed
the same way (rule ``sample_features`` on the new products' cells).

Example::

    python workflow/scripts/score_new_product.py \\
        --reference results/tables/reference_features.tsv \\
        --features new_sample_features.tsv \\
        --association results/tables/association.tsv \\
        --panel resources/association/primary_panel.yaml --flag-coverage 0.9 \\
        --out-dir new_scorecards

writes ``new_scorecards/<sample>.tsv`` per product (same columns as
``results/scorecards/<sample>.tsv``) and ``new_scorecards/scorecards.html``. Give the
cohort run's ``associate.primary_panel`` and ``scorecards.flag_coverage`` (the defaults
are those of the config schema): the primary-panel features are flagged outside the
responders' prediction interval, and the page states the rule's leave-one-out
calibration on the reference's responders.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cartcohort import scorecards, stats
from cartcohort.errors import CartCohortError, InputError, Problem
from cartcohort.vocab import ID_RULE, SAMPLE_ID_RE
from cartcohort.tables import read_table, write_table


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="reference_features.tsv of the cohort")
    ap.add_argument("--features", required=True, help="sample_features.tsv of the new product(s)")
    ap.add_argument("--association", help="association.tsv of the cohort (adds direction, q)")
    ap.add_argument("--samples", nargs="*", help="score only these samples (default: all rows)")
    ap.add_argument("--panel", default="resources/association/primary_panel.yaml",
                    help="primary panel of the cohort run (associate.primary_panel)")
    ap.add_argument("--flag-coverage", type=float, default=0.9,
                    help="nominal coverage of the responders' interval "
                         "(scorecards.flag_coverage)")
    ap.add_argument("--out-dir", default="scorecards_new", help="output folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("score_new_product")
    try:
        reference = read_table(args.reference)
        features = read_table(args.features)
        association = read_table(args.association) if args.association else None
        problems = []
        for col, table, path in (("patient", reference, args.reference),
                                 ("responder", reference, args.reference),
                                 ("sample", features, args.features)):
            if col not in table.columns:
                problems.append(Problem(path, f"column '{col}'", "required column is missing",
                                        "pass the file written by the workflow"))
        if problems:
            raise InputError(problems)
        features["sample"] = features["sample"].astype(str)
        samples = args.samples or list(features["sample"])
        unknown = sorted(set(samples) - set(features["sample"]))
        bad = [s for s in samples if not SAMPLE_ID_RE.match(s)]
        if unknown:
            problems.append(Problem(args.features, "column 'sample'",
                                    f"sample(s) {unknown} not found", "check --samples"))
        if bad:
            problems.append(Problem(args.features, "column 'sample'",
                                    f"unsafe sample id(s) {bad} (used as file names)",
                                    ID_RULE))
        if problems:
            raise InputError(problems)
        panel = stats.load_primary_panel(args.panel)
        ref_patients = set(reference["patient"].astype(str))
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cards = {}
        for sample in samples:
            row = features[features["sample"] == sample].iloc[0]
            patient = str(row.get("patient", ""))
            exclude = patient if patient in ref_patients else None
            if exclude:
                log.info("%s: patient %s is in the reference and is left out of it", sample,
                         patient)
            cards[sample] = scorecards.score_product(
                row, reference=reference, primary=panel.names, coverage=args.flag_coverage,
                association=association, exclude_patient=exclude,
            )
            write_table(cards[sample], out_dir / f"{sample}.tsv")
        calibration = scorecards.flag_calibration(reference, primary=panel.names,
                                                  coverage=args.flag_coverage)
        (out_dir / "scorecards.html").write_text(
            scorecards.scorecards_html(cards, calibration=calibration, panel_label=panel.label,
                                       title="New product scorecards")
        )
        log.info("scored %d product(s) against %d reference patients -> %s", len(cards),
                 len(reference), out_dir)
    except CartCohortError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
