"""Entry script of rule `scorecards`: every infusion product placed in the cohort."""

from pathlib import Path

from cartcohort import associate as assoc
from cartcohort.features import read_tsv
from cartcohort.logs import script_logging
from cartcohort.plots import associate as plots
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    p = smk.params.associate
    features = read_tsv(smk.input.features)
    clinical = read_tsv(smk.input.clinical)
    association = read_tsv(smk.input.association)
    patients, _ = assoc.labelled_patients(
        features,
        clinical=clinical,
        primary_timepoint=p["primary_timepoint"],
        responders=p["responders"],
        excluded=p["exclude_responses"],
        source=str(smk.input.features),
        clinical_source=str(smk.input.clinical),
    )
    reference = assoc.build_reference(patients)
    write_table(reference, smk.output.reference, sort_by=["patient"])
    cards = assoc.score_cohort_products(
        features, reference=reference, association=association, samples=smk.params.samples
    )
    paths = {Path(path).name[: -len(".tsv")]: path for path in smk.output.cards}
    for sample, card in cards.items():
        write_table(card, paths[sample])
    meta = assoc.product_meta(features, patients=patients, samples=smk.params.samples)
    Path(smk.output.html).write_text(assoc.scorecards_html(cards, meta=meta))
    labels = {s: f"{s} ({meta.loc[s, 'response']})" for s in meta.index}
    plots.scorecard_heatmap(cards, labels=labels).savefig(smk.output.heatmap, dpi=150)
    log.info("scored %d products against %d reference patients", len(cards), len(reference))
