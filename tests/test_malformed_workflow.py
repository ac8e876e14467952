"""Every malformed input of tests/test_sheets.py, run through `snakemake` itself:
non-zero exit, the exact problem (place + phrase) in the message, no results/ written."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, run_snakemake
from test_sheets import MALFORMED, make_cohort

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("case", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_snakemake_refuses_malformed_input(tmp_path, case):
    _, mutate, overrides, _file, where, phrase = case
    c = make_cohort(tmp_path)
    mutate(c)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(c["config"])
    cfg.update(overrides)
    cfgfile = tmp_path / "run_config.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(tmp_path, configfile=cfgfile, cores=1, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert where in out and phrase in out, out[-3000:]
    assert "Traceback" not in out, "the user sees our message, not a stack trace"
    assert not (tmp_path / "results").exists()
