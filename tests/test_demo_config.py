"""The committed default sheets in config/ describe exactly the generated demo cohort."""

import pandas as pd

from conftest import REPO


def test_config_sheets_match_generated_demo(demo_dir):
    committed = pd.read_csv(REPO / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    generated = pd.read_csv(demo_dir / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    for col in ("gex", "vdj"):
        generated[col] = [f"../resources/demo/{p}" if p else "" for p in generated[col]]
    pd.testing.assert_frame_equal(committed, generated)
    assert (REPO / "config" / "clinical.tsv").read_text() == (demo_dir / "clinical.tsv").read_text()
