"""The primary panel: the bundled file is valid and product-only; bad panels are refused."""

from __future__ import annotations

import pytest
import yaml

from cartcohort.errors import InputError
from cartcohort.stats import load_primary_panel, parse_primary_panel
from cartcohort.tl.features import IN_VIVO_REPERTOIRE, feature_scope

BUNDLED = "resources/association/primary_panel.yaml"


def test_bundled_panel_is_product_only_and_one_feature_per_question():
    panel = load_primary_panel(BUNDLED)
    assert 10 <= len(panel.names) <= 15
    assert all(feature_scope(f) == "product" for f in panel.names)
    questions = [f.question for f in panel.features]
    assert len(set(questions)) == len(questions)
    assert all(f.references for f in panel.features)
    assert panel.label == "primary_panel.yaml v1"


def test_scope_of_persistence_features_is_in_vivo():
    assert feature_scope("rep_frac_post_cells_from_product_clones") == "in_vivo"
    assert feature_scope("rep_frac_product_clones_detected_later") == "in_vivo"
    assert feature_scope("memory_like_fraction") == "product"
    assert all(name.startswith("rep_") for name in IN_VIVO_REPERTOIRE)


def _spec(*features, version=1):
    return {"version": version, "features": [{"feature": f, "question": f"q_{i}"}
                                             for i, f in enumerate(features)]}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (_spec("rep_frac_post_cells_from_product_clones"), "measured after infusion"),
        (_spec("memory_like_fraction", "memory_like_fraction"), "listed more than once"),
        (_spec("n_cells"), "descriptive"),
        (_spec("memory_like_fraction", version=None), "version: missing"),
        ({"version": 1, "features": []}, "features"),
        (["not", "a", "mapping"], "not a YAML mapping"),
    ],
)
def test_bad_panels_are_refused_with_the_key(spec, expected):
    with pytest.raises(InputError, match=expected):
        parse_primary_panel(spec, source="panel.yaml")


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(InputError, match="associate.primary_panel"):
        load_primary_panel(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_primary_panel(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_spec("frac_treg", "exhausted_fraction")))
    assert load_primary_panel(good).names == ["frac_treg", "exhausted_fraction"]
