"""One registry mechanism for every kind of relkd component.

In the spirit of timm's ``register_model`` / ``create_model`` / ``list_models``::

    affinity = Registry("affinity", bind=True)

    @affinity.register(
        "rbf",
        params=[Param("gamma", 1.0, search=(1e-3, 1e2), log=True, min=0.0, min_inclusive=False)],
        nonnegative=True,
    )
    def rbf(x, gamma=1.0):
        '''Gaussian kernel. K_ij = exp(-gamma * ||x_i - x_j||^2).'''

    affinity.list("r*")            # ['rbf', 'rbf_taylor']
    fn = affinity.create("rbf", gamma=0.5)
    affinity.info("rbf").params    # (Param('gamma', ...),)

A registry with ``bind=True`` holds functions whose first arguments are data; ``create``
returns the function with its parameters bound (a :class:`Component`). A registry with
``bind=False`` holds factories (models); ``create`` calls them.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from .text import markdown_table

__all__ = ["Param", "Entry", "Component", "Registry", "split_spec", "did_you_mean", "unknown_name_message",
           "CHECK_PARAMS", "OPEN_PARAMS"]

#: Entry property: ``check(params) -> [(parameter, message), ...]``, the entry's own check of
#: its parameters' values beyond their types (e.g. that a weights file can be read).
CHECK_PARAMS = "check_params"
#: Entry property: ``True`` when the entry also takes parameters it does not declare, passed on
#: as they are (a timm model's ``timm.create_model`` arguments); declared ones are still checked.
OPEN_PARAMS = "open_params"

_TYPE_NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Param:
    """A parameter of a registry entry.

    ``search`` is the range an optimiser should draw from (``log`` for a log scale);
    ``min``/``max`` are hard bounds every value must respect; ``choices`` restricts
    the value to a finite set.
    """

    name: str
    default: Any
    type: type = float
    help: str = ""
    search: tuple[float, float] | None = None
    log: bool = False
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    choices: tuple[Any, ...] | None = None

    def allowed(self) -> str:
        """Say in words what values are allowed."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.min is not None and self.max is not None:
            lo = "(" if not self.min_inclusive else "["
            return f"{text} in {lo}{self.min}, {self.max}]"
        if self.min is not None:
            return f"{text} {'>=' if self.min_inclusive else '>'} {self.min}"
        if self.max is not None:
            return f"{text} <= {self.max}"
        return text

    def summary(self) -> str:
        """``name=default (search lo..hi log)``: how ``relkd list`` and docs/registries.md show it."""
        text = f"{self.name}={self.default!r}"
        if self.search is not None:
            text += f" (search {self.search[0]:g}..{self.search[1]:g}{' log' if self.log else ''})"
        return text

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``ValueError``
        whose message says what is allowed (without a field path: callers add it)."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ValueError(f"expected {self.allowed()}, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number ({self.allowed()}), got {value!r}")
        elif self.type is str:
            if not isinstance(value, str):
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"expected {self.allowed()}, got {value!r}")
        too_low = self.min is not None and (value < self.min if self.min_inclusive else value <= self.min)
        too_high = self.max is not None and value > self.max
        if too_low or too_high:
            raise ValueError(f"expected {self.allowed()}, got {value!r}")
        return value


@dataclass(frozen=True)
class Entry:
    """A registered component: the object plus everything known about it."""

    name: str
    obj: Callable[..., Any]
    kind: str
    description: str
    params: tuple[Param, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.obj.__doc__ or "")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def property(self, key: str, params: Mapping[str, Any] | None = None, default: Any = None) -> Any:
        """A property's value. A property may depend on the parameters: then it is stored
        as a function of the full parameter dict and evaluated here."""
        value = self.properties.get(key, default)
        if callable(value):
            return value({**self.defaults(), **(params or {})})
        return value

    def param_errors(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Every problem with ``params`` as ``(parameter, message)`` pairs; empty when fine."""
        known = [p.name for p in self.params]
        errors = []
        for key in params:
            if key not in known and not self.properties.get(OPEN_PARAMS):
                allowed = ", ".join(known) if known else "none"
                errors.append((str(key), f"{self.kind} '{self.name}' has no parameter {key!r}"
                               f"{did_you_mean(key, known)}; its parameters are: {allowed}"))
        for p in self.params:
            if p.name in params:
                try:
                    p.check(params[p.name])
                except ValueError as err:
                    errors.append((p.name, str(err)))
        check = self.properties.get(CHECK_PARAMS)
        if check is not None and not errors:
            errors += check(params)
        return errors

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``params`` against this entry and return them with defaults filled in,
        in declaration order. Raises ``ValueError`` naming the parameter."""
        errors = self.param_errors(params)
        if errors:
            key, message = errors[0]
            raise ValueError(f"{self.kind} '{self.name}' parameter {key!r}: {message}")
        resolved = {p.name: p.check(params.get(p.name, p.default)) for p in self.params}
        if self.properties.get(OPEN_PARAMS):
            resolved.update({k: v for k, v in params.items() if k not in resolved})
        return resolved


def split_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"cosine"`` or ``{"name": "rbf", "gamma": 0.5}`` -> ``(name, params)``."""
    if isinstance(spec, str):
        return spec, {}
    return spec["name"], {k: v for k, v in spec.items() if k != "name"}


class Component:
    """A registry function with its parameters bound. Calls forward to the function."""

    __slots__ = ("entry", "params", "_fn")

    def __init__(self, entry: Entry, params: Mapping[str, Any]):
        self.entry = entry
        self.params = dict(params)
        fn = entry.obj
        self._fn = (lambda *a: fn(*a, **self.params)) if self.params else fn

    @property
    def name(self) -> str:
        return self.entry.name

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., **params}``: the form configs store."""
        return {"name": self.entry.name, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.entry.kind}.{self.entry.name}({args})"


def did_you_mean(name: str, names: Sequence[str] | set[str]) -> str:
    match = difflib.get_close_matches(str(name), sorted(names), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 50, 50


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for messages: nested and long values cut short, never whole."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unknown_name_message(kind: str, name: Any, names: Sequence[str]) -> str:
    """``unknown affinity 'cosin'; did you mean 'cosine'? Valid names: cosine, dot, ...``"""
    hint = did_you_mean(name, names) or "."
    return f"unknown {kind} {short_repr(name)}{hint} Valid names: {', '.join(sorted(names))}"


class Registry:
    """A named collection of components with metadata.

    ``bind=True``: entries are functions of data plus keyword parameters and
    :meth:`create` returns a :class:`Component` with the parameters bound.
    ``bind=False``: entries are factories and :meth:`create` returns ``obj(**params)``.
    """

    def __init__(self, kind: str, *, bind: bool = True):
        self.kind = kind
        self.bind = bind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        params: Sequence[Param] = (),
        **properties: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator that registers a function or factory under ``name`` (default: its
        ``__name__``). ``description`` defaults to the first line of the docstring.
        Keyword arguments become the entry's properties. Registering a taken name raises."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name or obj.__name__, obj, description=description, params=params, **properties)
            return obj

        return decorator

    def add(
        self,
        name: str,
        obj: Callable[..., Any],
        *,
        description: str | None = None,
        params: Sequence[Param] = (),
        **properties: Any,
    ) -> Entry:
        """Register ``obj`` under ``name`` without decorator syntax."""
        if name in self._entries:
            raise ValueError(
                f"{self.kind} {name!r} is already registered (by {self._entries[name].obj!r}); "
                "choose another name"
            )
        doc = inspect.cleandoc(obj.__doc__ or "")
        desc = description or (doc.splitlines()[0] if doc else "")
        if not desc:
            raise ValueError(f"{self.kind} {name!r} needs a description or a docstring")
        entry = Entry(name, obj, self.kind, desc, tuple(params), dict(properties))
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises ``ValueError`` listing valid ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(unknown_name_message(self.kind, name, list(self._entries))) from None

    info = get

    def create(self, name: str, **params: Any) -> Any:
        """Build the component ``name`` with ``params`` (checked; defaults filled in)."""
        entry = self.get(name)
        resolved = entry.resolve_params(params)
        if self.bind:
            return Component(entry, resolved)
        return entry.obj(**resolved)

    def from_spec(self, spec: str | Mapping[str, Any]) -> Any:
        """:meth:`create` from a name or a ``{"name": ..., **params}`` mapping."""
        name, params = split_spec(spec)
        return self.create(name, **params)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard pattern (``'rbf*'``, ``'*l1'``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.list()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def markdown_tables(registries: Mapping[str, Registry]) -> str:
    """One Markdown table per registry (entry, description, parameters with defaults and search
    ranges): ``relkd list --markdown``, which writes docs/registries.md."""
    out = ["# Registries", "",
           "Made by `relkd list --markdown > docs/registries.md` from the registries themselves (a test checks "
           "that this file is what the command prints).", ""]
    for kind, registry in registries.items():
        rows = [[f"`{entry.name}`", entry.description.replace("|", "\\|"),
                 ", ".join(f"`{p.summary()}`" for p in entry.params)] for entry in registry.entries()]
        out += [f"## {kind} ({len(registry)})", "", markdown_table(["name", "description", "parameters"], rows), ""]
    return "\n".join(out)
