"""Write the deterministic demo cohort (run by ``make demo``, not by Snakemake).

Example::

    python workflow/scripts/simulate_demo.py --out resources/demo --seed 0 --config-dir config

Every :class:`cartcohort.datasets.SimParams` field is an option
(``--n-patients``, ``--min-cells``, ``--max-cells``, ``--car-detection``, ``--frac-dn``,
``--gd-contigs true``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cartcohort.errors import CartCohortError  # noqa: E402
from cartcohort.datasets import SimParams, write_demo_cohort  # noqa: E402

log = logging.getLogger("cartcohort.simulate_demo")


def _boolean(text: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``) as a bool, for switches."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options: ``--out``, ``--seed``, ``--config-dir`` and every SimParams knob."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="cohort folder, e.g. resources/demo")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument(
        "--config-dir",
        default=None,
        help="also write samples.tsv/clinical.tsv here with paths relative to it",
    )
    optional = {"n_background_genes": int, "car_detection": float}  # default None
    for f in dataclasses.fields(SimParams):
        if f.name == "seed":
            continue
        kind = optional.get(f.name, type(f.default))
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_boolean if kind is bool else kind,
            default=f.default,
            help=f"(default {f.default})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the cohort, log a summary; returns the exit status."""
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out, seed, config_dir = args.pop("out"), args.pop("seed"), args.pop("config_dir")
    start = time.perf_counter()
    try:
        summary = write_demo_cohort(out, seed=seed, config_dir=config_dir, **args)
    except CartCohortError as err:
        log.error("%s", err)
        return 1
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    log.info(
        "wrote %d libraries, %d cells, %d contigs to %s (%.1f MB) in %.1f s",
        summary["n_libraries"], summary["n_cells"], summary["n_contigs"], out, size / 1e6,
        time.perf_counter() - start,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
