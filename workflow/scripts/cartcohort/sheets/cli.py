"""Command line: ``python -m cartcohort.sheets config.yaml`` checks a project's sheets."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import yaml

from ..errors import InputError
from .prepare import prepare_inputs


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the sheets of a config file: ``python -m cartcohort.sheets config.yaml``.

    Prints every problem and returns 1 when there are any, 0 otherwise.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("configfile", help="workflow config (YAML)")
    parser.add_argument("--base-dir", default=".", help="folder config paths are relative to")
    parser.add_argument("--no-files", action="store_true", help="check the tables only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    with open(args.configfile) as fh:
        config = yaml.safe_load(fh)
    try:
        samples, clinical, warnings = prepare_inputs(
            config, base_dir=args.base_dir, check_files=not args.no_files
        )
    except InputError as err:
        print(err, file=sys.stderr)
        return 1
    for w in warnings:
        tag = f"sample {w['sample']}: " if w["sample"] else ""
        print(f"WARNING: {tag}{w['detail']}. Fix: {w['action']}", file=sys.stderr)
    print(
        f"OK: {len(samples)} samples, {len(clinical)} patients, {len(warnings)} warning(s)",
        file=sys.stderr,
    )
    return 0
