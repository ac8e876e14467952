"""Reading a user-supplied YAML resource file (signatures, primary panel) with clear errors
(a light module: the step environments import it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Problem


def read_yaml_file(path: str | os.PathLike, *, setting: str) -> tuple[Any, str]:
    """The parsed content of a YAML file and its path as given.

    Parameters
    ----------
    path
        The file.
    setting
        The config key that names it (for the fix of a missing file).

    Raises
    ------
    InputError
        The file is missing or not valid YAML.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError([Problem(src, "", "file not found",
                                  f"set {setting} to an existing YAML file")])
    try:
        return yaml.safe_load(path.read_text()), src
    except yaml.YAMLError as err:
        raise InputError([Problem(src, "", f"not valid YAML ({err})",
                                  "fix the YAML syntax")]) from None
