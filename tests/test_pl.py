"""The figure facade `cartcohort.pl`: lazy (no matplotlib until a figure is drawn) and
complete (every public figure function of its modules is exported). Not part of the report
env's tests: the report step draws no figures, so its env has no matplotlib."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

from conftest import REPO


def test_pl_facade_is_lazy_and_exports_every_figure_function():
    code = ("import sys, cartcohort.pl as pl; assert 'matplotlib' not in sys.modules; "
            "pl.save_figure; assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO / "workflow" / "scripts")
    from cartcohort import pl

    for path in sorted((REPO / "workflow" / "scripts" / "cartcohort" / "pl").glob("[a-z]*.py")):
        module = importlib.import_module(f"cartcohort.pl.{path.stem}")
        public = [n.name for n in ast.parse(path.read_text()).body
                  if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
        for name in public:
            assert name in pl.__all__, f"cartcohort.pl does not export {path.stem}.{name}"
            assert getattr(pl, name) is getattr(module, name)
