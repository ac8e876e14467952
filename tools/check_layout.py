"""Layout lint of the code: modules, functions and repeated blocks kept small.

Lists, and exits 1 when it lists anything:

- library modules (``workflow/scripts/cartcohort``) over 700 lines;
- functions over 80 lines (``def`` to its last line, decorators and docstring included)
  in the library and the entry scripts (``workflow/scripts``);
- blocks of 10 or more lines that stand twice (``workflow/scripts``, ``tools``, ``tests``):
  lines compared stripped and with white space folded, blank lines, comments, import
  statements and lone brackets passed over (a pure-Python stand-in for the
  ``duplicates`` command, which CI machines may not have).

    python tools/check_layout.py                       # the repository's defaults
    python tools/check_layout.py --duplicates tools tests  # other folders for the blocks
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
MIN_DUPLICATE_LINES = 10
_PUNCTUATION = set("()[]{}:,;")


@dataclass(frozen=True)
class Block:
    """Lines ``start``-``end`` (1-based, inclusive) of ``path``."""

    path: Path
    start: int
    end: int

    def __str__(self) -> str:
        return f"{_show(self.path)}:{self.start}-{self.end}"


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def python_files(roots: Iterable[Path]) -> list[Path]:
    """Every ``.py`` file below ``roots`` (files given directly are kept), sorted."""
    files: set[Path] = set()
    for root in roots:
        if root.is_file():
            files.add(root)
        else:
            files.update(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files)


def long_modules(files: Iterable[Path], *, max_lines: int = MAX_MODULE_LINES
                 ) -> list[tuple[Path, int]]:
    """(path, number of lines) of each file longer than ``max_lines``."""
    out = []
    for path in files:
        n = len(path.read_text().splitlines())
        if n > max_lines:
            out.append((path, n))
    return out


def _functions(tree: ast.AST, prefix: str = "") -> Iterable[tuple[str, ast.AST]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def long_functions(files: Iterable[Path], *, max_lines: int = MAX_FUNCTION_LINES
                   ) -> list[tuple[Block, str, int]]:
    """(lines, qualified name, number of lines) of each function longer than ``max_lines``."""
    out = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, node in _functions(tree):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            if n > max_lines:
                out.append((Block(path, first, node.end_lineno), name, n))
    return out


def _import_lines(text: str) -> set[int]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def normalised_lines(text: str) -> list[tuple[str, int]]:
    """(line with white space folded, 1-based line number) of the lines that count."""
    skip = _import_lines(text)
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        folded = " ".join(line.split())
        if not folded or folded.startswith("#") or i in skip or set(folded) <= _PUNCTUATION:
            continue
        out.append((folded, i))
    return out


def duplicate_blocks(files: Iterable[Path], *, min_lines: int = MIN_DUPLICATE_LINES
                     ) -> list[tuple[Block, Block, int]]:
    """(place, other place, number of counted lines they share) of each pair of places
    that share ``min_lines`` or more consecutive counted lines."""
    lines = {path: normalised_lines(path.read_text()) for path in files}
    windows: dict[tuple[str, ...], list[tuple[Path, int]]] = defaultdict(list)
    for path, seq in lines.items():
        for i in range(len(seq) - min_lines + 1):
            windows[tuple(text for text, _ in seq[i:i + min_lines])].append((path, i))
    pairs: set[tuple[Path, int, Path, int]] = set()
    for places in windows.values():
        for a, (path_a, i) in enumerate(places):
            for path_b, j in places[a + 1:]:
                if path_a != path_b or abs(i - j) >= min_lines:
                    pairs.add((path_a, i, path_b, j))
    out = []
    for path_a, i, path_b, j in sorted(pairs):
        if (path_a, i - 1, path_b, j - 1) in pairs:
            continue  # inside a run that started earlier
        k = 0
        while (path_a, i + k + 1, path_b, j + k + 1) in pairs:
            k += 1
        last = k + min_lines - 1
        seq_a, seq_b = lines[path_a], lines[path_b]
        out.append((Block(path_a, seq_a[i][1], seq_a[i + last][1]),
                    Block(path_b, seq_b[j][1], seq_b[j + last][1]), last + 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", nargs="*", type=Path,
                        default=[REPO / "workflow" / "scripts" / "cartcohort"],
                        help="folders whose modules may have at most 700 lines")
    parser.add_argument("--functions", nargs="*", type=Path,
                        default=[REPO / "workflow" / "scripts"],
                        help="folders whose functions may have at most 80 lines")
    parser.add_argument("--duplicates", nargs="*", type=Path,
                        default=[REPO / "workflow" / "scripts", REPO / "tools", REPO / "tests"],
                        help="folders searched for blocks of 10+ lines that stand twice")
    args = parser.parse_args(argv)
    problems = 0
    for path, n in long_modules(python_files(args.library)):
        print(f"module over {MAX_MODULE_LINES} lines: {_show(path)} ({n} lines)")
        problems += 1
    for block, name, n in long_functions(python_files(args.functions)):
        print(f"function over {MAX_FUNCTION_LINES} lines: {block} {name} ({n} lines)")
        problems += 1
    for a, b, n in duplicate_blocks(python_files(args.duplicates)):
        print(f"duplicated block: {a} ~ {b} ({n} lines)")
        problems += 1
    if problems:
        print(f"check_layout: {problems} problem{'s' if problems != 1 else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
