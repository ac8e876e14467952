"""Type-I error and power of the primary-panel association (issue 26 acceptance).

Usage::

    python tools/type1_error.py --features results/tables/sample_features.tsv \
        --clinical resources/demo/clinical.tsv [--n-permutations 1000] [--power-cohorts 100] \
        [--out benchmarks/type1_error.tsv]

1. **Family-wise type-I error.** The association of rule ``associate`` is run on the
   feature table (settings from ``config/config.yaml``: primary timepoint, response
   groups, primary panel, ``associate.collapse_rho``, ...). Its primary family (the
   panel representatives) is then re-tested under ``--n-permutations`` seeded
   permutations of the response labels over the patients
   (:func:`cartcohort.stats.permutation_fwer`): the rate of permutations with any
   primary-panel q < 0.05, per test, with its Clopper-Pearson 95 % interval.
2. **Power on planted effects.** ``--power-cohorts`` cohorts are simulated with the demo
   simulator (the demo's design, seeds 1000, 1001, ...), their feature tables built
   from the truth cells (cell states and clones as planted, so the power is that of the
   statistics, not of the upstream calls), and the primary panel tested. For each
   planted and null quantity of ``truth_effects`` (design power: two-sided Mann-Whitney
   at alpha 0.05, :mod:`cartcohort.datasets.power`) the table gives how often its panel
   feature had p < 0.05 (comparable with the design power) and primary-family q < 0.05.

Prints both tables and writes them (``--out``; ``section`` column ``fwer`` / ``power``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from cartcohort import stats  # noqa: E402
from cartcohort.tables import read_table, write_table  # noqa: E402

#: truth_effects quantity -> the primary-panel feature that measures it.
PANEL_FEATURE = {
    "memory_like_fraction": "memory_like_fraction",
    "exhausted_fraction": "exhausted_fraction",
    "clonal_expansion_alpha": "rep_rarefied_shannon",
    "cd4_fraction": "log2_cd4_cd8_ratio",
    "car_fraction": "car_positive_fraction",
    "treg_fraction": "frac_treg",
    "proliferating_fraction": "frac_proliferating",
}


def _settings(config: Path) -> dict:
    cfg = yaml.safe_load(config.read_text())
    a = cfg["associate"]
    panel = REPO / a.get("primary_panel", "resources/association/primary_panel.yaml")
    return dict(
        primary_timepoint=cfg["primary_timepoint"], responders=list(cfg["responders"]),
        excluded=list(a["exclude_responses"]), collapse_rho=float(a["collapse_rho"]),
        min_patients_per_group=int(a["min_patients_per_group"]),
        min_events_per_variable=float(a["min_events_per_variable"]),
        panel=stats.load_primary_panel(panel),
    )


def fwer_table(features: pd.DataFrame, clinical: pd.DataFrame, settings: dict, *,
               n_permutations: int, seed: int) -> pd.DataFrame:
    """The permutation FWER of the primary family on one feature table."""
    res = stats.run_association(features, clinical=clinical, **settings)
    a = res.association
    primary = a[(a["family"] == "primary") & (a["test"] == "mann_whitney")]
    feats = list(primary["feature"])
    lab = res.patients[res.patients["responder"].notna()].reset_index(drop=True)
    out = stats.permutation_fwer(
        lab, responder=lab["responder"].astype(bool), features=feats,
        n_permutations=n_permutations, seed=seed,
        min_per_group=settings["min_patients_per_group"],
        min_events_per_variable=settings["min_events_per_variable"],
    ).table
    print(f"primary family: {len(feats)} features tested: {', '.join(feats)}")
    print("observed labels, primary family (mann_whitney):")
    print(primary[["feature", "effect", "pvalue", "qvalue", "direction"]].to_string(index=False))
    return out


def _simulated_features(seed: int):
    from cartcohort.datasets import simulate_cohort
    from cartcohort.tl import features as F
    from cartcohort.tl import repertoire as RT

    c = simulate_cohort(seed=seed, n_background_genes=10)
    tc = c.truth_cells
    tc = tc[~tc["is_doublet"] & ~tc["is_low_quality"]]
    cells = tc.merge(c.samples[["sample", "timepoint_day", "compartment"]], on="sample")
    cells["clone_id"] = cells["clone"].where(cells["has_tcr"])
    rep = RT.repertoire_tables(cells, primary_timepoint="IP", n_bootstrap=50, seed=seed).samples
    return F.sample_features(cells, repertoire=rep), c.clinical


def power_table(truth: pd.DataFrame, settings: dict, *, n_cohorts: int) -> pd.DataFrame:
    """How often each planted / null quantity's panel feature is found over simulated cohorts."""
    hits: dict[str, dict] = {q: {"p": 0, "q": 0, "n": 0, "via": set()} for q in PANEL_FEATURE}
    for k in range(n_cohorts):
        feats, clin = _simulated_features(1000 + k)
        a = stats.run_association(feats, clinical=clin, **settings).association
        mw = a[(a["test"] == "mann_whitney") & (a["family"] == "primary")].set_index("feature")
        for quantity, feature in PANEL_FEATURE.items():
            # a panel feature collapsed as a twin is measured by its representative
            reps = [r for r, t in mw["twins"].fillna("").items() if f"{feature} (" in t]
            tested = feature if feature in mw.index else (reps[0] if reps else None)
            if tested is not None:
                hits[quantity]["n"] += 1
                hits[quantity]["p"] += int(mw.loc[tested, "pvalue"] < 0.05)
                hits[quantity]["q"] += int(mw.loc[tested, "qvalue"] < 0.05)
                hits[quantity]["via"].add(tested)
        print(f"cohort {k + 1}/{n_cohorts} done", flush=True)
    rows = []
    for _, t in truth.iterrows():
        h = hits.get(t["quantity"])
        if h is None:
            continue
        n = max(h["n"], 1)
        lo, hi = stats.clopper_pearson(h["p"], n) if h["n"] else (float("nan"),) * 2
        rows.append(dict(quantity=t["quantity"], kind=t["kind"],
                         feature=PANEL_FEATURE[t["quantity"]],
                         tested_as=",".join(sorted(h["via"])), design_power=t["design_power"],
                         n_cohorts=h["n"], rate_p05=h["p"] / n, ci_low=lo, ci_high=hi,
                         rate_q05=h["q"] / n))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default="results/tables/sample_features.tsv")
    ap.add_argument("--clinical", default="resources/demo/clinical.tsv")
    ap.add_argument("--truth", default="resources/demo/truth_effects.tsv")
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--n-permutations", type=int, default=1000)
    ap.add_argument("--power-cohorts", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/type1_error.tsv")
    args = ap.parse_args(argv)
    if args.n_permutations < 200:
        ap.error("--n-permutations must be at least 200 (issue 26 acceptance)")
    settings = _settings(Path(args.config))
    fwer = fwer_table(read_table(args.features), read_table(args.clinical), settings,
                      n_permutations=args.n_permutations, seed=args.seed)
    print("\nfamily-wise rate of any primary-panel q < 0.05 under permuted labels:")
    print(fwer.to_string(index=False))
    parts = [fwer.assign(section="fwer")]
    if args.power_cohorts:
        power = power_table(read_table(args.truth), settings, n_cohorts=args.power_cohorts)
        print("\npower on planted effects (primary panel, Mann-Whitney):")
        print(power.to_string(index=False))
        parts.append(power.assign(section="power"))
    out = pd.concat(parts, ignore_index=True)
    write_table(out[["section", *[c for c in out.columns if c != "section"]]], args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
