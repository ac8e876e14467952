"""Report pages and provenance: the overview page, the provenance record and its page.

- :mod:`cartcohort.report.overview` - the warnings, the cohort at a glance and every
  skipped analysis;
- :mod:`cartcohort.report.warnings_table` - ``results/tables/warnings.tsv``: every input
  carried through rather than refused;
- :mod:`cartcohort.report.provenance` - software versions per step, config hash, input
  checksums and git commit, gathered into ``results/provenance.json``;
- :mod:`cartcohort.report.provenance_page` - that record rendered as a report page.

Light imports only (``pandas``, ``yaml``): the ``versions_<step>`` rules import this
package inside every step's conda environment.
"""

from __future__ import annotations

from ._html import PAGE_STYLE, html_page, html_table, scrub_paths, shown_path, write_html
from .overview import overview_html, overview_page, skipped_analyses
from .provenance import (
    build_provenance,
    config_hash,
    env_packages,
    git_commit,
    installed_versions,
    path_size,
    provenance_record,
    read_json,
    record_versions,
    sha256_path,
    write_json,
)
from .provenance_page import (
    NOT_INSTALLED,
    NOT_PINNED,
    REQUIRED_RECORD_KEYS,
    render_provenance_html,
    software_table,
)
from .warnings_table import collect_warnings, qc_warnings, warnings_html

__all__ = [
    "NOT_INSTALLED",
    "NOT_PINNED",
    "PAGE_STYLE",
    "REQUIRED_RECORD_KEYS",
    "build_provenance",
    "collect_warnings",
    "config_hash",
    "env_packages",
    "git_commit",
    "html_page",
    "html_table",
    "installed_versions",
    "overview_html",
    "overview_page",
    "path_size",
    "provenance_record",
    "qc_warnings",
    "read_json",
    "record_versions",
    "render_provenance_html",
    "scrub_paths",
    "sha256_path",
    "shown_path",
    "skipped_analyses",
    "software_table",
    "warnings_html",
    "write_html",
    "write_json",
]
