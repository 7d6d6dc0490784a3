"""The ground floor of every relkd file: safe YAML loading, :class:`ConfigError` and
:class:`FieldChecker`, which collects ``"field.path: what is wrong"`` lines.

Every schema (objective configs, settings, study and compare files) is built from these::

    c = FieldChecker()
    if c.mapping(document, "", ("name", "seed")):
        seed = c.integer(document.get("seed", 0), "seed")
    if c.errors:
        raise ConfigError(c.errors, source)
"""
from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from .files import not_a_file
from .registry import Registry, did_you_mean, short_repr, unknown_name_message

__all__ = ["ConfigError", "FieldChecker", "join_path", "yaml_load", "yaml_dump", "read_yaml_file", "MAX_YAML_VALUES"]


class ConfigError(ValueError):
    """An invalid config or study file. ``errors`` lists ``"field.path: what is wrong"`` lines."""

    def __init__(self, errors: list[str], source: str | os.PathLike | None = None):
        self.errors = list(errors)
        self.source = str(source) if source is not None else None
        where = f"{self.source}: " if self.source else ""
        if len(self.errors) == 1:
            message = where + self.errors[0]
        else:
            message = f"{where}{len(self.errors)} problems:\n" + "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(message)


# --------------------------------------------------------------------------- YAML


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus floats written without a dot (``1e3``, ``3e-4``), which
    YAML 1.1 would otherwise read as strings."""


    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping, refusing a key written twice: PyYAML would keep the last one silently,
        and a user who writes ``ce_weight`` twice deserves to hear it. Keys brought in by a
        merge (``<<: *base``) may still be overridden, as YAML intends."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{short_repr(key)}: given twice (first at line {first.start_mark.line + 1}); "
                                    f"expected each key once in a mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


#: Floats written without a dot: the loader reads them as numbers, and so the dumper quotes a
#: string that looks like one (``'1e100'`` stays a string).
_DOTLESS_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _DOTLESS_FLOAT, list("-+0123456789"))


#: More values than any relkd file needs; a document that expands beyond (YAML aliases
#: repeated inside each other, or an alias inside itself) is refused before anything walks it.
MAX_YAML_VALUES = 100_000


def _exceeds(data: Any, budget: int) -> bool:
    """Whether ``data`` holds more than ``budget`` values with every alias expanded."""
    stack = [data]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return False


def yaml_load(text: str, source: str | os.PathLike | None = None) -> Any:
    """Parse YAML with safe loading only; syntax errors, object-constructing tags and
    documents of more than :data:`MAX_YAML_VALUES` values become a :class:`ConfigError`
    with the line and column where known."""
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - _SafeLoader is a SafeLoader
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        why = ("; relkd reads YAML with safe loading, so tags that construct Python objects are not allowed"
               if "tag" in (err.problem or "") else "")
        raise ConfigError([f"{where}{err.problem}{why}"], source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"invalid YAML at {where}{problem}"], source) from None
    if _exceeds(data, MAX_YAML_VALUES):
        raise ConfigError([f"the document holds more than {MAX_YAML_VALUES} values once its aliases (*name) are "
                           "expanded (at most that many are allowed); relkd files are small, so aliases nested in "
                           "each other or in themselves are refused"], source)
    return data


class _SafeDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, so that :func:`yaml_load` reads every string back as it was: a
    string holding one of the Unicode line breaks NEL (``\\x85``), LS (``\\u2028``) or PS
    (``\\u2029``) is written double-quoted, where they are escapes (``\\N``, ``\\L``, ``\\P``); in
    the styles PyYAML picks otherwise the break is written raw, and a reader folds a raw NEL
    into a space (``{'\\x85': 1}`` came back as ``{' ': 1}``). And a string that looks like a
    float without a dot (``'1e3'``) is quoted, since :class:`_SafeLoader` reads those as numbers."""


_UNICODE_BREAKS = re.compile("[\x85\u2028\u2029]")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = '"' if _UNICODE_BREAKS.search(data) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_SafeDumper.add_representer(str, _represent_str)
_SafeDumper.add_implicit_resolver("tag:yaml.org,2002:float", _DOTLESS_FLOAT, list("-+0123456789"))


def yaml_dump(data: Any) -> str:
    """YAML text with keys in their given order; small mappings in flow style. Every string
    :func:`yaml_load` reads back as it was (a ``meta`` key or value of any characters)."""
    return yaml.dump(data, Dumper=_SafeDumper, sort_keys=False, default_flow_style=None, allow_unicode=True)


def read_yaml_file(path: str | os.PathLike) -> Any:
    """Read and safely parse a YAML file; a missing file is a :class:`ConfigError`."""
    p = Path(path)
    problem = not_a_file(p)
    if problem:
        raise ConfigError([problem])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(["not a text file; expected a YAML file (UTF-8 text)"], p) from None
    except OSError as err:
        raise ConfigError([f"cannot read the file ({err.strerror or err}); expected a readable YAML file"], p) from None
    return yaml_load(text, p)


# --------------------------------------------------------------------------- checks


class FieldChecker:
    """Collects errors with their field paths."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def mapping(self, value: Any, path: str, fields: tuple[str, ...]) -> bool:
        if not isinstance(value, Mapping):
            self.error(path or "(top level)",
                       f"expected a mapping with fields {', '.join(fields)}, got {short_repr(value)}")
            return False
        for key in value:
            if key not in fields:
                self.error(join_path(path, str(key)),
                           f"unknown field{did_you_mean(str(key), fields)}; allowed fields: {', '.join(fields)}")
        return True

    def number(self, value: Any, path: str, *, minimum: float = 0.0, strict: bool = False,
               maximum: float | None = None) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
            ok = ok and (maximum is None or value <= maximum)
        if not ok:
            upper = f" and <= {maximum:g}" if maximum is not None else ""
            bound = f"{'>' if strict else '>='} {minimum:g}{upper}"
            self.error(path, f"expected a finite number {bound}, got {short_repr(value)}")
            return None
        return value

    def integer(self, value: Any, path: str, *, minimum: int = 0) -> int | None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.error(path, f"expected an integer >= {minimum}, got {short_repr(value)}")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {short_repr(value)}")
            return None
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            self.error(path, f"expected one of {', '.join(choices)}, got {short_repr(value)}"
                             f"{did_you_mean(str(value), choices) if isinstance(value, str) else ''}")
            return None
        return value

    def optional(self, value: Any, check: Any) -> Any:
        """``None`` stays ``None``; anything else goes through ``check``."""
        return None if value is None else check(value)

    def mapping_value(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping, got {short_repr(value)}")
            return {}
        return copy.deepcopy(dict(value))

    def component(self, value: Any, path: str, registry: Registry) -> dict[str, Any] | None:
        """``name`` or ``{name: ..., **params}`` -> canonical ``{name, **all params}``."""
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping) or "name" not in value:
            self.error(path, f"expected a {registry.kind} name or a mapping with 'name' and its parameters, "
                             f"got {short_repr(value)}; valid names: {', '.join(registry.list())}")
            return None
        name = value["name"]
        if not isinstance(name, str) or name not in registry:
            self.error(join_path(path, "name"), unknown_name_message(registry.kind, name, registry.list()))
            return None
        entry = registry.get(name)
        params = {k: v for k, v in value.items() if k != "name"}
        errors = entry.param_errors(params)
        for key, message in errors:
            self.error(join_path(path, key), message)
        if errors:
            return None
        return {"name": name, **entry.resolve_params(params)}


_PLAIN_KEY = re.compile(r"^\w[\w+\-.:]*$")


def join_path(path: str, key: Any) -> str:
    """``path.key``; a key that is not a plain name (empty, spaces, not a string) is quoted."""
    shown = key if isinstance(key, str) and _PLAIN_KEY.match(key) else short_repr(key, 40)
    return f"{path}.{shown}" if path else shown
