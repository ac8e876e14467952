"""The workflow configuration: schema-owned defaults and validation with actionable messages.

``config/schemas/config.schema.yaml`` is the one place where a setting's type, allowed
values and default live. :func:`validate_config` fills the defaults into the config
(before Snakemake builds the DAG, so the rules index the config without defaulting) and
refuses a config with every problem listed at once: a misspelled key at any depth names
its full path and the closest valid key, a wrong value names the key, what is expected
and what was given.

Light imports only (``yaml``, ``jsonschema``, ``difflib``): ``workflow/rules/common.smk``
imports this module while Snakemake parses the workflow.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import yaml

from .errors import InputError, Problem

__all__ = [
    "expected_value",
    "fill_defaults",
    "iter_settings",
    "load_schema",
    "schema_defaults",
    "validate_config",
]

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping (key: value)",
    "null": "null",
}


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    """The config schema (YAML or JSON) at ``path``."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def fill_defaults(config: MutableMapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Set every absent key of ``config`` that ``schema`` gives a ``default``, in place.

    Semantics of ``snakemake.utils.validate(set_default=True)``: only absent keys are
    set (a ``null`` value is kept, snakemake#1701), and the defaults of a nested object
    are filled inside the object the user gave or inside its own default (every section
    has ``default: {}``). Override maps (``additionalProperties`` schemas such as
    ``qc.per_sample``) stay as given: an override holds only what it changes.
    """
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        value = config.get(key)
        if isinstance(value, MutableMapping) and "properties" in sub:
            fill_defaults(value, sub)


def schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The config made of the schema's defaults alone."""
    config: dict[str, Any] = {}
    fill_defaults(config, schema)
    return config


def iter_settings(
    schema: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(dotted key, subschema) of every declared key, sections before their keys."""
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path, sub
        if "properties" in sub:
            yield from iter_settings(sub, path + ".")


def validate_config(
    config: MutableMapping[str, Any],
    schema_path: str | os.PathLike,
    *,
    source: str = "config",
) -> MutableMapping[str, Any]:
    """Fill the schema defaults into ``config`` (in place) and validate it.

    Parameters
    ----------
    config
        The workflow config (Snakemake's ``config``), changed in place.
    schema_path
        ``config/schemas/config.schema.yaml``.
    source
        Name of the config in messages.

    Returns
    -------
    MutableMapping
        ``config`` itself, with every default filled.

    Raises
    ------
    InputError
        Listing every problem: unknown keys (with the closest valid key), wrong types,
        values out of range or not among the allowed ones, missing required keys.
    """
    from jsonschema import Draft202012Validator

    schema = load_schema(schema_path)
    if not isinstance(config, MutableMapping):
        raise InputError([Problem(source, "", f"is {_show(config)}, not a mapping of settings",
                                  "write the config as YAML `key: value` lines")])
    fill_defaults(config, schema)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config),
                    key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)))
    problems: list[Problem] = []
    for error in errors:
        for problem in _problems(error, source, schema):
            if problem not in problems:  # `required` reports each missing key per error
                problems.append(problem)
    if problems:
        raise InputError(problems)
    return config


# ------------------------------------------------------------------------ messages


def _key_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    """A value as the user wrote it, with its YAML type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}' (a string)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"the list {value!r}"
    return repr(value)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` (``#/...``) replaced by its target."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}


def expected_value(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """What a subschema accepts, in words: 'an integer >= 2', 'one of: mad, fixed'.

    ``root`` is the whole schema (for local ``$ref``); also used by tools/config_doc.py.
    """
    schema = _resolve(schema, root)
    alternatives = schema.get("anyOf", schema.get("oneOf"))
    if alternatives:
        return " or ".join(expected_value(s, root) for s in alternatives)
    if "enum" in schema:
        values = [str(v) for v in schema["enum"]]
        return values[0] if len(values) == 1 else "one of: " + ", ".join(values)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in types) or "a value"
    if schema.get("minItems") == 1:
        words = words.replace("a list", "a non-empty list")
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                    ("exclusiveMaximum", "<")):
        if key in schema:
            bounds.append(f"{op} {schema[key]}")
    if bounds:
        words += " " + " and ".join(bounds)
    if "array" in types and isinstance(schema.get("items"), Mapping):
        words += f" (each {expected_value(schema['items'], root)})"
    return words


def _example(schema: Mapping[str, Any]) -> str:
    default = schema.get("default")
    if "default" not in schema or isinstance(default, Mapping):
        return ""
    return f" (default: {yaml.safe_dump(default, default_flow_style=True).strip()})".replace(
        "\n...", "")


def _problems(error: Any, source: str, root: Mapping[str, Any]) -> list[Problem]:
    path = list(error.absolute_path)
    key = _key_path(path)
    where = f"key '{key}'" if key else "top level"
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        out = []
        for extra in sorted(set(error.instance) - set(allowed), key=str):
            full = _key_path([*path, extra])
            close = difflib.get_close_matches(str(extra), allowed, n=1, cutoff=0.6)
            section = f"'{key}'" if key else "the top level"
            if close:
                right = _key_path([*path, close[0]])
                out.append(Problem(
                    source, f"key '{full}'",
                    f"is not a setting; the closest valid key is '{right}'",
                    f"rename '{full}' to '{right}'"))
            else:
                out.append(Problem(
                    source, f"key '{full}'", "is not a setting",
                    f"remove it, or use one of the keys of {section}: {', '.join(allowed)}"))
        return out
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        props = schema.get("properties", {})
        return [Problem(source, f"key '{_key_path([*path, k])}'", "is missing (it has no default)",
                        f"add it: {props.get(k, {}).get('description', k)}".rstrip("."))
                for k in missing]
    if error.validator == "enum":
        close = difflib.get_close_matches(str(error.instance),
                                          [str(v) for v in error.validator_value], n=1)
        hint = f" (closest: {close[0]})" if close else ""
        return [Problem(source, where, f"{_show(error.instance)} is not allowed{hint}",
                        f"use {expected_value(schema, root)}")]
    quote = ""
    if schema.get("type") == "string" and isinstance(error.instance, int | float | bool):
        quote = (" in quotes: YAML reads an unquoted 001 as the number 1 and TRUE as true, "
                 "so write ids as '001', 'TRUE'")
    return [Problem(source, where,
                    f"expected {expected_value(schema, root)}, got {_show(error.instance)}",
                    f"give {expected_value(schema, root)}{quote}{_example(schema)}")]
