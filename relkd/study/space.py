"""The search space: which objective configs a study may draw, built from the registries.

A study file's ``search`` section restricts the space; everything it leaves out takes the
defaults below. Each value is fixed (a scalar or a single name), a list of choices, or a
range ``{low, high, log}``::

    search:
      terms: {low: 0, high: 2}          # number of relation terms
      tap: [stage2, last_stage, pool]   # or all: every tap the student and teacher share
      view: [flatten, avgpool, maxpool]
      affinity: all                     # or a list of names, or one name
      normalisation: all
      loss: all
      component_params: search          # search each component's own parameters; or default
      weight: {low: 1.0e-3, high: 1.0e5, log: true}
      kd: {enabled: [false, true], temperature: {low: 1, high: 8}, weight: {low: 0.1, high: 1.0}}
      ce_weight: {low: 0.1, high: 1.0, log: true}

Parameter names are stable and readable, so that importance and plots read well:
``n_terms``, ``term0.tap``, ``term0.view``, ``term0.affinity``, ``term0.rbf.gamma`` (a
component's own parameter, named after the component), ``term0.normalisation``,
``term0.loss``, ``term0.weight``, ``kd``, ``kd.temperature``, ``kd.weight``, ``ce_weight``.

:meth:`SearchSpace.sample` draws a config through an Optuna trial and returns it with the
rules it breaks (:func:`relkd.combination_problems`); the driver never trains an invalid
draw. :meth:`SearchSpace.params_for` is the inverse: the parameters under which a given
config (e.g. a preset) lies in the space, or ``None``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..fields import ConfigError, FieldChecker, join_path

from ..config import validate_config
from ..registry import Registry, did_you_mean
from ..relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS, combination_problems

__all__ = ["Fixed", "Choice", "Range", "SearchSpace", "validate_search", "DEFAULT_SEARCH"]

DEFAULT_SEARCH: dict[str, Any] = {
    "terms": {"low": 0, "high": 2},
    "tap": ["last_stage", "pool"],
    "view": ["flatten", "avgpool", "maxpool"],
    "affinity": "all",
    "normalisation": "all",
    "loss": "all",
    "component_params": "search",
    "weight": {"low": 1e-3, "high": 1e5, "log": True},
    "kd": {"enabled": [False, True], "temperature": {"low": 1.0, "high": 8.0},
           "weight": {"low": 0.1, "high": 1.0}},
    "ce_weight": {"low": 0.1, "high": 1.0, "log": True},
}
_FIELDS = tuple(DEFAULT_SEARCH)
_KD_FIELDS = ("enabled", "temperature", "weight")
_NAME_FIELDS: dict[str, Registry] = {"view": VIEWS, "affinity": AFFINITIES, "normalisation": NORMALISATIONS,
                                     "loss": LOSSES}
_COMPONENTS = ("affinity", "normalisation", "loss")


# ----------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class Fixed:
    """One value: nothing is searched and no Optuna parameter is created."""

    value: Any

    def suggest(self, trial: Any, name: str) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return _same(value, self.value)

    @property
    def searched(self) -> bool:
        return False

    def describe(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return any(_same(value, c) for c in self.choices)

    @property
    def searched(self) -> bool:
        return True

    def describe(self) -> Any:
        return list(self.choices)


@dataclass(frozen=True)
class Range:
    """A float or integer range, optionally log-uniform."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        tolerance = 1e-9 * max(abs(self.low), abs(self.high), 1.0)
        return self.low - tolerance <= value <= self.high + tolerance

    @property
    def searched(self) -> bool:
        return self.low != self.high

    def describe(self) -> Any:
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        return out


Domain = Fixed | Choice | Range


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


# ----------------------------------------------------------------------------- validation


def _numeric_domain(c: FieldChecker, value: Any, path: str, *, integer: bool = False, minimum: float = 0.0,
                    strict: bool = False, log_default: bool = False) -> Domain | None:
    """A number (fixed), a list of numbers (choices) or ``{low, high, log}`` (range)."""
    check = (lambda v, p: c.integer(v, p, minimum=int(minimum))) if integer else \
        (lambda v, p: c.number(v, p, minimum=minimum, strict=strict))
    if isinstance(value, Mapping):
        if not c.mapping(value, path, ("low", "high", "log")):
            return None
        for key in ("low", "high"):
            if key not in value:
                c.error(join_path(path, key), "missing; a range needs low and high")
        if "low" not in value or "high" not in value:
            return None
        low, high = check(value["low"], join_path(path, "low")), check(value["high"], join_path(path, "high"))
        log = c.boolean(value.get("log", log_default), join_path(path, "log"))
        if low is None or high is None or log is None:
            return None
        if low > high:
            c.error(path, f"low ({low:g}) must not exceed high ({high:g})")
            return None
        if log and low <= 0:
            c.error(join_path(path, "low"), f"a log range needs low > 0, got {low:g}")
            return None
        return Fixed(low) if low == high else Range(low, high, log, integer)
    if isinstance(value, (list, tuple)):
        if not value:
            c.error(path, "expected at least one value")
            return None
        values = [check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if any(v is None for v in values):
            return None
        unique = tuple(dict.fromkeys(values))
        return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)
    number = check(value, path)
    return None if number is None else Fixed(number)


def _name_domain(c: FieldChecker, value: Any, path: str, allowed: Sequence[str], kind: str) -> Domain | None:
    """``all``, one name or a list of names out of ``allowed``."""
    if value == "all":
        if not allowed:
            c.error(path, f"no {kind} to choose from")
            return None
        return Choice(tuple(allowed)) if len(allowed) > 1 else Fixed(allowed[0])
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        c.error(path, f"expected 'all', a {kind} name or a list of them; allowed: {', '.join(allowed)}; "
                      f"got {value!r}")
        return None
    ok = True
    for i, name in enumerate(names):
        if name not in allowed:
            where = path if isinstance(value, str) else f"{path}[{i}]"
            c.error(where, f"unknown {kind} {name!r}{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}")
            ok = False
    if not ok:
        return None
    unique = tuple(dict.fromkeys(names))
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def _bool_domain(c: FieldChecker, value: Any, path: str) -> Domain | None:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, bool) for v in values):
        c.error(path, f"expected true, false or [false, true], got {value!r}")
        return None
    unique = tuple(dict.fromkeys(values))
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def validate_search(search: Any, taps: Sequence[str] | None = None, path: str = "search") -> SearchSpace:
    """Check a study file's ``search`` section (``None``: the defaults) and return the space.

    ``taps`` are the layer names the student and teacher share; when given, tap names are
    checked against them and ``tap: all`` means all of them. Raises
    :class:`~relkd.config.ConfigError` listing every problem with its field path."""
    c = FieldChecker()
    search = {} if search is None else search
    if not c.mapping(search, path, _FIELDS):
        raise ConfigError(c.errors)
    merged = {**DEFAULT_SEARCH, **search}
    p = lambda key: join_path(path, key)  # noqa: E731

    terms = _numeric_domain(c, merged["terms"], p("terms"), integer=True)
    if terms is not None and _upper(terms) > 8:
        c.error(p("terms"), f"at most 8 relation terms, got up to {_upper(terms)}")
    tap_names = tuple(taps) if taps is not None else None
    if tap_names is None:
        tap = _free_names(c, merged["tap"], p("tap"))
    else:
        tap = _name_domain(c, merged["tap"], p("tap"), tap_names, "tap (of both models)")
    names = {key: _name_domain(c, merged[key], p(key), reg.list(), reg.kind) for key, reg in _NAME_FIELDS.items()}
    component_params = c.choice(merged["component_params"], p("component_params"), ("search", "default"))
    weight = _numeric_domain(c, merged["weight"], p("weight"), log_default=True)

    kd_in = merged["kd"]
    kd_enabled = kd_temperature = kd_weight = None
    if isinstance(kd_in, bool):
        kd_in = {"enabled": kd_in}
    if c.mapping(kd_in, p("kd"), _KD_FIELDS):
        kd_merged = {**DEFAULT_SEARCH["kd"], **kd_in}
        kd_enabled = _bool_domain(c, kd_merged["enabled"], p("kd.enabled"))
        kd_temperature = _numeric_domain(c, kd_merged["temperature"], p("kd.temperature"), strict=True)
        kd_weight = _numeric_domain(c, kd_merged["weight"], p("kd.weight"))
    ce_weight = _numeric_domain(c, merged["ce_weight"], p("ce_weight"), log_default=False)
    if c.errors:
        raise ConfigError(c.errors)
    space = SearchSpace(terms=terms, tap=tap, view=names["view"], affinity=names["affinity"],
                       normalisation=names["normalisation"], loss=names["loss"],
                       search_component_params=component_params == "search", weight=weight,
                        kd=kd_enabled, kd_temperature=kd_temperature, kd_weight=kd_weight, ce_weight=ce_weight)
    if not space.terms.contains(0) and not space.valid_combinations():
        raise ConfigError([f"{path}: no valid affinity x normalisation x loss combination in the space (with "
                           f"default component parameters); widen affinity, normalisation or loss, or allow "
                           f"terms: 0. Check a combination with `relkd validate`."])
    return space


def _free_names(c: FieldChecker, value: Any, path: str) -> Domain | None:
    """Tap names when the models are not known yet: any non-empty names."""
    names = [value] if isinstance(value, str) else value
    if value == "all" or not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) and n for n in names):
        c.error(path, f"expected a tap name or a list of them (e.g. [last_stage, pool]), got {value!r}")
        return None
    unique = tuple(dict.fromkeys(names))
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def _upper(domain: Domain) -> int:
    if isinstance(domain, Fixed):
        return int(domain.value)
    if isinstance(domain, Choice):
        return int(max(domain.choices))
    return int(domain.high)


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """Domains for every choice of an objective config; see the module docstring."""

    terms: Domain
    tap: Domain
    view: Domain
    affinity: Domain
    normalisation: Domain
    loss: Domain
    search_component_params: bool
    weight: Domain
    kd: Domain
    kd_temperature: Domain
    kd_weight: Domain
    ce_weight: Domain

    # -- drawing

    def sample(self, trial: Any) -> tuple[dict[str, Any], list[str]]:
        """Draw a config through ``trial`` (an ``optuna.Trial``); return it in canonical form
        with the rules it breaks. An invalid draw stops at the first invalid term, so no
        parameter is drawn that the config does not use."""
        n_terms = int(self.terms.suggest(trial, "n_terms"))
        terms = []
        for i in range(n_terms):
            term, problems = self._sample_term(trial, i)
            if problems:
                return {}, [f"term{i}: {problem}" for problem in problems]
            terms.append(term)
        use_kd = bool(self.kd.suggest(trial, "kd"))
        kd = None
        if use_kd:
            kd = {"temperature": float(self.kd_temperature.suggest(trial, "kd.temperature")),
                  "weight": float(self.kd_weight.suggest(trial, "kd.weight"))}
        ce_weight = float(self.ce_weight.suggest(trial, "ce_weight"))
        config = {"relkd_config": 1, "ce_weight": ce_weight, "kd": kd, "terms": terms}
        return validate_config(config), []

    def _sample_term(self, trial: Any, i: int) -> tuple[dict[str, Any], list[str]]:
        prefix = f"term{i}"
        term: dict[str, Any] = {"tap": self.tap.suggest(trial, f"{prefix}.tap"),
                                "view": self.view.suggest(trial, f"{prefix}.view")}
        for kind in _COMPONENTS:
            domain: Domain = getattr(self, kind)
            name = domain.suggest(trial, f"{prefix}.{kind}")
            entry = _NAME_FIELDS[kind].get(name)
            spec = {"name": name}
            for param in entry.params:
                if self.search_component_params and param.search is not None:
                    integer = param.type is int
                    low, high = param.search
                    log = param.log and not integer
                    spec[param.name] = Range(low, high, log, integer).suggest(trial, f"{prefix}.{name}.{param.name}")
            term[kind] = spec
        problems = combination_problems(term["affinity"], term["normalisation"], term["loss"])
        if problems:
            return term, problems
        term["weight"] = float(self.weight.suggest(trial, f"{prefix}.weight"))
        return term, []

    # -- the inverse

    def params_for(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The Optuna parameters under which ``config`` lies in this space (only the searched
        ones), or ``None`` when the config is outside it (a tap, name or value the space
        does not allow, a component parameter it keeps at its default, ...)."""
        cfg = validate_config(config)
        params: dict[str, Any] = {}

        def put(domain: Domain, name: str, value: Any) -> bool:
            if not domain.contains(value):
                return False
            if domain.searched:
                params[name] = value
            return True

        if not put(self.terms, "n_terms", len(cfg["terms"])):
            return None
        for i, term in enumerate(cfg["terms"]):
            prefix = f"term{i}"
            if not (put(self.tap, f"{prefix}.tap", term["tap"]) and put(self.view, f"{prefix}.view", term["view"])):
                return None
            for kind in _COMPONENTS:
                spec = term[kind]
                if not put(getattr(self, kind), f"{prefix}.{kind}", spec["name"]):
                    return None
                entry = _NAME_FIELDS[kind].get(spec["name"])
                for param in entry.params:
                    value = spec[param.name]
                    if self.search_component_params and param.search is not None:
                        domain = Range(*param.search, log=param.log and param.type is not int,
                                       integer=param.type is int)
                    else:
                        domain = Fixed(param.default)
                    if not put(domain, f"{prefix}.{spec['name']}.{param.name}", value):
                        return None
            if not put(self.weight, f"{prefix}.weight", term["weight"]):
                return None
        kd = cfg["kd"]
        if not put(self.kd, "kd", kd is not None):
            return None
        if kd is not None and not (put(self.kd_temperature, "kd.temperature", kd["temperature"])
                                   and put(self.kd_weight, "kd.weight", kd["weight"])):
            return None
        if not put(self.ce_weight, "ce_weight", cfg["ce_weight"]):
            return None
        return params

    # -- description

    def describe(self) -> dict[str, Any]:
        """The space as plain data, in the study file's ``search`` format."""
        return {
            "terms": self.terms.describe(), "tap": self.tap.describe(), "view": self.view.describe(),
            "affinity": self.affinity.describe(), "normalisation": self.normalisation.describe(),
            "loss": self.loss.describe(),
            "component_params": "search" if self.search_component_params else "default",
            "weight": self.weight.describe(),
            "kd": {"enabled": self.kd.describe(), "temperature": self.kd_temperature.describe(),
                   "weight": self.kd_weight.describe()},
            "ce_weight": self.ce_weight.describe(),
        }

    def grid(self) -> dict[str, list[Any]]:
        """The space as a grid for Optuna's ``GridSampler``: every searched parameter with its
        values. Raises :class:`~relkd.config.ConfigError` naming each field that a grid cannot
        enumerate (a float range, a varying number of terms, searched component parameters)."""
        problems = []
        if not isinstance(self.terms, Fixed):
            problems.append("search.terms: a grid needs a fixed number of terms, e.g. terms: 1")
        if self.search_component_params and any(
                p.search is not None for kind in _COMPONENTS for name in _names(getattr(self, kind))
                for p in _NAME_FIELDS[kind].get(name).params):
            problems.append("search.component_params: a grid keeps component parameters at their defaults; "
                            "set component_params: default")
        fields = {"tap": self.tap, "view": self.view, "weight": self.weight, "ce_weight": self.ce_weight}
        if self.kd.contains(True):
            fields.update({"kd.temperature": self.kd_temperature, "kd.weight": self.kd_weight})
        for field_name, domain in fields.items():
            if isinstance(domain, Range) and not domain.integer:
                problems.append(f"search.{field_name}: a grid needs a fixed value or a list of values, not a range")
        if isinstance(self.kd, Choice) and (self.kd_temperature.searched or self.kd_weight.searched):
            problems.append("search.kd: a grid cannot search kd.temperature or kd.weight while KD itself is "
                            "switched on and off; fix kd.enabled or the KD values")
        if problems:
            raise ConfigError(problems)
        grid: dict[str, list[Any]] = {}

        def add(name: str, domain: Domain) -> None:
            if isinstance(domain, Choice):
                grid[name] = list(domain.choices)
            elif isinstance(domain, Range) and domain.searched:
                grid[name] = list(range(int(domain.low), int(domain.high) + 1))

        for i in range(int(self.terms.value)):
            for key in ("tap", "view", *_COMPONENTS, "weight"):
                add(f"term{i}.{key}", getattr(self, key))
        add("kd", self.kd)
        if self.kd.contains(True):
            add("kd.temperature", self.kd_temperature)
            add("kd.weight", self.kd_weight)
        add("ce_weight", self.ce_weight)
        return grid

    def valid_combinations(self) -> list[tuple[str, str, str]]:
        """Every (affinity, normalisation, loss) in the space that is valid with default
        component parameters."""
        return [(a, n, l_) for a in _names(self.affinity) for n in _names(self.normalisation)
                for l_ in _names(self.loss) if not combination_problems(a, n, l_)]


def _names(domain: Domain) -> tuple[str, ...]:
    return domain.choices if isinstance(domain, Choice) else (domain.value,)
