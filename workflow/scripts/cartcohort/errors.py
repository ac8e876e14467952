"""Project-wide exceptions with messages a bioinformatician can act on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in user input.

    Parameters
    ----------
    file
        The file (or config key) the problem is in.
    where
        Row/column/field locator, e.g. ``"row 3, column 'gex'"``; empty if
        the whole file is concerned.
    what
        What is wrong.
    fix
        What the user should do about it.
    """

    file: str
    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        loc = f"{self.file}: {self.where}: " if self.where else f"{self.file}: "
        return f"{loc}{self.what}. Fix: {self.fix}"


class CartCohortError(Exception):
    """Base class of all errors raised on purpose by cart-cohort."""


class InputError(CartCohortError):
    """Invalid user input; carries every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem | str]):
        self.problems = [p for p in problems]
        lines = [f"  - {p}" for p in self.problems]
        n = len(self.problems)
        super().__init__(
            f"{n} problem{'s' if n != 1 else ''} found in the input:\n" + "\n".join(lines)
        )


def exclude_line(sample: str) -> str:
    """The config line that leaves library ``sample`` out of the run.

    The id is a single-quoted YAML string (``exclude_samples: ['001']``), so that an id
    such as ``001`` or ``TRUE`` is not read back as a number or a boolean (single quotes:
    a TSV cell holding it needs no quoting).

    Returns
    -------
    str
        ``exclude_samples: ['<sample>']``.
    """
    quoted = "'" + str(sample).replace("'", "''") + "'"
    return f"exclude_samples: [{quoted}]"


def exclude_fix(sample: str) -> str:
    """How to run on without library ``sample`` (the fix of a failed per-library job).

    Returns
    -------
    str
        One sentence, without its final stop, quoting :func:`exclude_line`.
    """
    return (f"To go on without library {sample}, add it to the config's exclude_samples "
            f"({exclude_line(sample)}) and run again")
