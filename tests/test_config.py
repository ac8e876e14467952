"""The config schema owns every default and refuses bad configs with actionable messages:
through Snakemake (dry runs of the real workflow) and through cartcohort.config itself."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import yaml

from _snakemake_dump import MINIMAL_CONFIG as MINIMAL
from _snakemake_dump import demo_project, minimal_dump
from cartcohort.config import (
    fill_defaults,
    iter_settings,
    load_schema,
    schema_defaults,
    validate_config,
)
from cartcohort.errors import InputError
from conftest import DEMO, REPO, run_snakemake

SCHEMA_PATH = REPO / "config" / "schemas" / "config.schema.yaml"
SCHEMA = load_schema(SCHEMA_PATH)
SHEETS = {"samples": str(DEMO / "samples.tsv"), "clinical": str(DEMO / "clinical.tsv")}
# maps of extra arguments for a third-party function: a key left out keeps that
# function's own default, so these keys have none in the schema
PASSTHROUGH = ("integrate.harmony.", "integrate.scvi.")


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _refused(tmp_path, overrides: dict) -> str:
    """Output of a dry run with `overrides` over the demo config (callers request the
    demo_dir fixture); it must fail cleanly."""
    project = demo_project(tmp_path)
    cfgfile = tmp_path / "user.yaml"
    cfgfile.write_text(yaml.safe_dump({**SHEETS, **overrides}))
    proc = run_snakemake(project, "-n", configfile=cfgfile, cores=1, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Traceback" not in out, "the user sees our message, not a stack trace"
    assert not (project / "results").exists()
    return out


# --------------------------------------------------------------------- through Snakemake


def test_misspelled_key_names_key_and_closest(tmp_path, demo_dir):
    out = _refused(tmp_path, {"annotate": {"smothing": 0.2}})
    assert "key 'annotate.smothing'" in out
    assert "'annotate.smoothing'" in out and "rename" in out


def test_nested_misspelling_names_full_path(tmp_path, demo_dir):
    out = _refused(tmp_path, {"qc": {"doublets": {"treshold": 0.2}}})
    assert "key 'qc.doublets.treshold'" in out and "'qc.doublets.threshold'" in out


def test_wrong_type_names_key_expected_and_given(tmp_path, demo_dir):
    out = _refused(tmp_path, {"integrate": {"n_pcs": "thirty"}})
    assert "key 'integrate.n_pcs'" in out
    assert "expected an integer" in out and "'thirty'" in out


def test_every_problem_at_once_as_documented(tmp_path, demo_dir):
    out = _refused(tmp_path, {"annotate": {"smothing": 0.2}, "integrate": {"n_pcs": "thirty"}})
    readme = (REPO / "config" / "README.md").read_text()
    block = re.search(r"```\n(2 problems found in the input:\n.*?)```", readme, re.S).group(1)
    for line in block.strip().splitlines():
        assert line in out, f"config/README.md example line not in the output: {line}\n{out}"


def test_minimal_config_dry_runs_with_schema_defaults(tmp_path_factory, demo_dir):
    """`samples` + `clinical` alone (config/config.yaml not read at all) dry-run the whole
    workflow (exit 0) with a complete config: the schema owns every default."""
    dump = minimal_dump(tmp_path_factory)
    expected = schema_defaults(SCHEMA)
    config = dict(dump["config"])
    assert config.pop("samples").endswith("resources/demo/samples.tsv")
    assert config.pop("clinical").endswith("resources/demo/clinical.tsv")
    assert config == expected
    assert len(dump["samples"]) > 1 and dump["rules"]["all"]


# ------------------------------------------------------------------ the shipped configs


def test_demo_config_validates_and_equals_schema_defaults():
    """config/config.yaml spells out the defaults for reference: each of its keys is a
    schema key whose default is the value written there (one source of truth)."""
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate_config(copy.deepcopy(shipped), SCHEMA_PATH)
    defaults = _leaves(schema_defaults(SCHEMA))
    for key, value in _leaves(shipped).items():
        if key in ("samples", "clinical"):
            continue
        assert key in defaults, f"config/config.yaml: {key} has no default in the schema"
        assert value == defaults[key] and type(value) is type(defaults[key]), (
            f"config/config.yaml: {key}: {value!r} but the schema default is {defaults[key]!r}")


def test_minimal_config_holds_only_the_sheets():
    assert set(yaml.safe_load(MINIMAL.read_text())) == {"samples", "clinical"}
    assert set(SCHEMA["required"]) == {"samples", "clinical"}


def test_schema_declares_every_key_with_description_and_default():
    for key, sub in iter_settings(SCHEMA):
        assert sub.get("description"), f"{key}: no description"
        if key in SCHEMA["required"] or key.startswith(PASSTHROUGH):
            continue
        assert "default" in sub, f"{key}: no default"
        if "properties" in sub:
            assert sub["default"] == {}, f"{key}: a section's default must be {{}}"
            assert "additionalProperties" in sub, f"{key}: additionalProperties not set"
            if key != "integrate.scvi":  # SCVI.train takes any of its arguments
                assert sub["additionalProperties"] is False, key
    assert SCHEMA["additionalProperties"] is False


def test_readme_settings_table_is_up_to_date():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "config_doc.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ validate_config itself


def test_defaults_filled_nested_in_place():
    config = {**SHEETS, "qc": {"doublets": {"method": "none"}}}
    out = validate_config(config, SCHEMA_PATH)
    assert out is config
    assert config["qc"]["doublets"] == {**schema_defaults(SCHEMA)["qc"]["doublets"],
                                        "method": "none"}
    assert config["qc"]["n_mads"] == 5 and config["annotate"]["smoothing"] == 0.25
    assert config["check_input_files"] is True


def test_null_is_never_replaced():
    config = {**SHEETS, "clonotypes": {"clusters": {"cutoff": None}},
              "qc": {"fixed": {"min_counts": None}}, "integrate": {"label_key": None}}
    validate_config(config, SCHEMA_PATH)
    assert config["clonotypes"]["clusters"]["cutoff"] is None  # default 1
    assert config["qc"]["fixed"]["min_counts"] is None  # default 500
    assert config["integrate"]["label_key"] is None


def test_overrides_stay_partial():
    config = {**SHEETS, "qc": {"per_sample": {"P01_IP": {"n_mads": 4}},
                               "doublets": {"per_compartment": {"blood": {"method": "none"}}}}}
    validate_config(config, SCHEMA_PATH)
    assert config["qc"]["per_sample"] == {"P01_IP": {"n_mads": 4}}
    assert config["qc"]["doublets"]["per_compartment"] == {"blood": {"method": "none"}}


def test_defaults_are_copies():
    a, b = schema_defaults(SCHEMA), schema_defaults(SCHEMA)
    a["responders"].append("PR")
    assert b["responders"] == ["CR"]
    c: dict = {}
    fill_defaults(c, SCHEMA)
    assert c["responders"] == ["CR"]


def test_every_problem_listed():
    config = {
        "clinical": "c.tsv",
        "annotate": {"smothing": 0.2, "car_method": "mixtrue"},
        "integrate": {"n_pcs": "thirty", "methods": ["harmony", "scvy"], "harmony": {"thetaa": 2}},
        "qc": {"doublets": {"treshold": 0.2}, "per_sample": {"P01_IP": {"n_madz": 4}}},
        "responders": [],
        "seed": True,
        "car_feature": ["CAR"],
    }
    with pytest.raises(InputError) as info:
        validate_config(config, SCHEMA_PATH)
    text = str(info.value)
    expected = [
        ("key 'samples'", "is missing"),
        ("key 'annotate.smothing'", "'annotate.smoothing'"),
        ("key 'annotate.car_method'", "mixture"),
        ("key 'integrate.n_pcs'", "expected an integer >= 2, got 'thirty' (a string)"),
        ("key 'integrate.methods[1]'", "scvi"),
        ("key 'integrate.harmony.thetaa'", "'integrate.harmony.theta'"),
        ("key 'qc.doublets.treshold'", "'qc.doublets.threshold'"),
        ("key 'qc.per_sample.P01_IP.n_madz'", "'qc.per_sample.P01_IP.n_mads'"),
        ("key 'responders'", "non-empty list"),
        ("key 'seed'", "got true"),
        ("key 'car_feature'", "'car_features'"),
    ]
    assert len(info.value.problems) == len(expected), text
    for where, phrase in expected:
        line = next((ln for ln in text.splitlines() if where + ":" in ln), None)
        assert line is not None and phrase in line, f"{where} / {phrase}:\n{text}"


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(InputError) as info:
        validate_config({**SHEETS, "load": {"zzz": 1}}, SCHEMA_PATH)
    assert "key 'load.zzz': is not a setting. Fix: remove it, or use one of the keys of " \
           "'load': gene_join" in str(info.value)


def test_not_a_mapping():
    with pytest.raises(InputError, match="not a mapping"):
        validate_config(["samples"], SCHEMA_PATH)  # type: ignore[arg-type]
