"""Entry script of rule `associate`: patient-level association with response,
longitudinal mixed models and survival models."""

import pandas as pd

from cartcohort import associate as assoc
from cartcohort.features import read_tsv
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    p = smk.params.associate
    features = read_tsv(smk.input.features)
    clinical = read_tsv(smk.input.clinical)
    result = assoc.run_association(
        features,
        clinical=clinical,
        primary_timepoint=p["primary_timepoint"],
        responders=p["responders"],
        excluded=p["exclude_responses"],
        covariates=p["covariates"],
        n_bootstrap=int(p["n_bootstrap"]),
        min_patients_per_group=int(p["min_patients_per_group"]),
        min_events_per_variable=float(p["min_events_per_variable"]),
        composition_transform=p["composition_transform"],
        seed=int(p["seed"]),
        source=str(smk.input.features),
        clinical_source=str(smk.input.clinical),
    )
    longitudinal = assoc.longitudinal_models(
        features,
        clinical=clinical,
        features_to_test=result.tested or None,
        responders=p["responders"],
        excluded=p["exclude_responses"],
        min_patients_per_group=int(p["min_patients_per_group"]),
        clinical_source=str(smk.input.clinical),
    )
    survival = assoc.survival_models(
        result.patients, clinical=clinical, features=result.tested or None
    )
    notes = pd.concat(
        [
            result.notes,
            assoc.notes_from(longitudinal, scope="longitudinal"),
            assoc.notes_from(survival, scope="survival"),
        ],
        ignore_index=True,
    )
    write_table(result.association, smk.output.association)
    write_table(notes, smk.output.notes)
    write_table(longitudinal, smk.output.longitudinal)
    write_table(survival, smk.output.survival)
    mw = result.association[result.association["test"] == "mann_whitney"]
    log.info(
        "%d features tested; %d with Mann-Whitney q < 0.05",
        len(result.tested),
        int((mw["qvalue"] < 0.05).sum()),
    )
