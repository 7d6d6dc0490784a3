"""The search space: which objective configs a study may draw, a :class:`SearchSpace` of
domains for the table of dimensions (:mod:`relkd.study.dimensions`), made from a study
file's ``search`` section by :func:`validate_search`.

A study file's ``search`` section restricts the space; everything it leaves out takes the
defaults of :data:`DIMENSIONS`. Each value is fixed (a scalar or a single name), a list of
choices, or a range ``{low, high, log}``::

    search:
      terms: {low: 0, high: 2}          # number of terms
      family: relation                  # or [relation, feature]: each term may be a feature term
      method: all                       # feature terms' methods (relkd.features), when family allows them
      tap: [stage2, last_stage, pool]   # or all: every tap the student and teacher share
      teacher_tap: same                 # or a list (same among them): the teacher's layer may differ
      view: [flatten, avgpool, maxpool]
      affinity: all                     # or a list of names, or one name
      normalisation: all
      loss: all
      component_params: search          # search each component's own parameters; or default
      weight: {low: 1.0e-3, high: 1.0e5, log: true}
      kd: {enabled: [false, true], temperature: {low: 1, high: 8}, weight: {low: 0.1, high: 1.0}}
      ce_weight: {low: 0.1, high: 1.0, log: true}

:meth:`SearchSpace.sample` draws a config through an Optuna trial and returns it with the
rules it breaks; :meth:`SearchSpace.params_for` is the inverse (both in
:mod:`relkd.study.draws`, which also names the parameters). ``describe`` gives the space
back in the ``search`` format, ``grid`` as a grid for Optuna's grid and brute-force samplers.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..config import feature_problems
from ..fields import ConfigError, FieldChecker, join_path
from ..relation import combination_problems
from .dimensions import (COMPONENT, DEFAULT_SEARCH, DIMENSIONS, GROUPS, PAIR, SAME, SECTIONS, SWITCH, SWITCHED,
                         TERM_VALUE, TERM_WEIGHT, VALUE, Dimension, choice_group, dims, nested, term_dims)
from .domains import Choice, Domain, Fixed, Range, names_of
from .draws import config_params, draw_config, draw_term

__all__ = ["Fixed", "Choice", "Range", "Dimension", "DIMENSIONS", "SearchSpace", "validate_search",
           "DEFAULT_SEARCH", "choice_group", "GROUPS"]


def validate_search(search: Any, taps: Sequence[str] | None = None, path: str = "search") -> SearchSpace:
    """Check a study file's ``search`` section (``None``: the defaults) and return the space.

    ``taps`` are the layer names the student and teacher share; when given, tap names are
    checked against them and ``tap: all`` means all of them. Raises
    :class:`~relkd.config.ConfigError` listing every problem with its field path."""
    c = FieldChecker()
    search = {} if search is None else search
    if not c.mapping(search, path, tuple(DEFAULT_SEARCH)):
        raise ConfigError(c.errors)
    merged = {**DEFAULT_SEARCH, **search}
    for section in SECTIONS:  # nested sections (kd): a bare switch, or a mapping of its fields
        defaults, value = DEFAULT_SEARCH[section], merged[section]
        if isinstance(value, bool):
            value = {next(iter(defaults)): value}
        merged[section] = {**defaults, **value} if c.mapping(value, join_path(path, section), tuple(defaults)) \
            else None
    domains: dict[str, Any] = {}
    for dim in DIMENSIONS:
        section, _, rest = dim.field.partition(".")
        value = merged[section] if not rest else (merged[section] or {}).get(rest)
        if value is None and rest:
            domains[dim.field] = None  # its section is broken: said above
            continue
        domains[dim.field] = dim.parse(c, value, join_path(path, dim.field), taps)
    if c.errors:
        raise ConfigError(c.errors)
    space = SearchSpace(domains)
    if "method" in search and not space.family.contains("feature"):
        raise ConfigError([f"{path}.method: the space draws no feature terms; add feature to search.family"])
    if not space.family.contains("relation") and not space.terms.contains(0) and not space.valid_features():
        raise ConfigError([f"{path}: no method in search.method can read a tap in search.tap (AT, NST, VID and SRM "
                           f"need feature maps such as stage2); widen method or tap"])
    if not space.terms.contains(0) and not space.family.contains("feature") and not space.valid_combinations():
        raise ConfigError([f"{path}: no valid affinity x normalisation x loss combination in the space (with "
                           f"default component parameters); widen affinity, normalisation or loss, or allow "
                           f"terms: 0. Check a combination with `relkd validate`."])
    return space


class SearchSpace:
    """Domains for every search field of :data:`DIMENSIONS` (``space.tap``, ``space.kd`` ...);
    see the module docstring."""

    _ALIASES = {"kd": "kd.enabled", "kd_temperature": "kd.temperature", "kd_weight": "kd.weight"}

    def __init__(self, domains: Mapping[str, Any]):
        self.domains = dict(domains)

    def __getattr__(self, name: str) -> Any:
        domains = self.__dict__.get("domains", {})
        field = self._ALIASES.get(name, name)
        if field in domains:
            return domains[field]
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.domains == other.domains

    def __repr__(self) -> str:
        return f"SearchSpace({self.domains!r})"

    @property
    def search_component_params(self) -> bool:
        return self.domains["component_params"].value == "search"

    def choices(self, field: str) -> tuple[Any, ...]:
        """The values a categorical search field may take here (one for a fixed field)."""
        domain = self.domains[field]
        return tuple(domain.choices) if isinstance(domain, Choice) else (domain.value,)

    # -- drawing (relkd.study.draws)

    def sample(self, trial: Any) -> tuple[dict[str, Any], list[str]]:
        """Draw a config through ``trial`` (an ``optuna.Trial``); return it in canonical form
        with the rules it breaks (:func:`~relkd.study.draws.draw_config`)."""
        return draw_config(self, trial)

    def sample_term(self, trial: Any, i: int) -> tuple[dict[str, Any], list[str]]:
        """Draw term ``i`` (parameters ``term<i>.*``); return it with the rules it breaks
        (:func:`~relkd.study.draws.draw_term`)."""
        return draw_term(self, trial, i)

    # -- the inverse

    def params_for(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The Optuna parameters under which ``config`` lies in this space (only the searched
        ones), or ``None`` when the config is outside it (:func:`~relkd.study.draws.config_params`)."""
        return config_params(self, config)

    # -- description

    def describe(self) -> dict[str, Any]:
        """The space as plain data, in the study file's ``search`` format. A space of relation
        terms only leaves out ``family`` and ``method``, one without pairing ``teacher_tap``
        (so study records from before them are unchanged)."""
        features = self.family.contains("feature")
        paired = not (isinstance(self.teacher_tap, Fixed) and self.teacher_tap.value == SAME)
        return nested([(d.field, self.domains[d.field].describe()) for d in DIMENSIONS
                       if (features or d.field not in ("family", "method")) and (paired or d.field != "teacher_tap")])

    def grid(self, *, tree: bool = False) -> dict[str, list[Any]]:
        """The space as a grid for Optuna's ``GridSampler``: every searched parameter with its
        values. Raises :class:`~relkd.config.ConfigError` naming each field that a grid cannot
        enumerate (a float range, a varying number of terms, searched component parameters).
        ``tree=True`` checks the space for ``BruteForceSampler``, which walks a conditional
        space (a varying number of terms) but, like a grid, no float range."""
        problems = []
        if not tree and not isinstance(self.terms, Fixed):
            problems.append("search.terms: a grid needs a fixed number of terms, e.g. terms: 1")
        if not tree and isinstance(self.family, Choice):
            problems.append("search.family: a grid cannot mix the families (each draws other fields); expected one "
                            "family, or use the brute-force sampler")
        families = names_of(self.family)
        if self.search_component_params and any(
                p.search is not None for dim in dims(COMPONENT) if dim.family in (None, *families)
                for name in names_of(self.domains[dim.field]) for p in dim.registry.get(name).params):
            problems.append("search.component_params: a grid keeps component parameters at their defaults; "
                            "expected component_params: default")
        kd_possible = self.kd.contains(True)
        for dim in dims(TERM_VALUE, TERM_WEIGHT, SWITCHED, VALUE):
            domain = self.domains[dim.field]
            if dim.role == SWITCHED and not kd_possible:
                continue
            if isinstance(domain, Range) and not domain.integer:
                problems.append(f"search.{dim.field}: a grid needs a fixed value or a list of values, not a range")
        if isinstance(self.kd, Choice) and (self.kd_temperature.searched or self.kd_weight.searched):
            what = "brute-force search" if tree else "grid"
            problems.append(f"search.kd: a {what} cannot search kd.temperature or kd.weight while KD itself is "
                            "switched on and off; expected kd.enabled fixed, or fixed KD values")
        if problems:
            raise ConfigError(problems)
        grid: dict[str, list[Any]] = {}

        def add(name: str, domain: Domain) -> None:
            if isinstance(domain, Choice):
                grid[name] = list(domain.choices)
            elif isinstance(domain, Range) and domain.searched:
                grid[name] = list(range(int(domain.low), int(domain.high) + 1))

        for i in range(int(self.terms.value)):
            for dim in term_dims(families[0], TERM_VALUE, COMPONENT, PAIR, TERM_WEIGHT):
                add(dim.param_name(i), self.domains[dim.field])
        for dim in dims(SWITCH, SWITCHED, VALUE):
            if dim.role != SWITCHED or kd_possible:
                add(dim.param, self.domains[dim.field])
        return grid

    def valid_features(self) -> list[tuple[str, str]]:
        """Every (feature method, tap) in the space that can work (maps for AT, NST, VID, SRM)."""
        return [(m, t) for m in names_of(self.method) for t in names_of(self.tap) if not feature_problems(m, t)]

    def valid_combinations(self) -> list[tuple[str, str, str]]:
        """Every (affinity, normalisation, loss) in the space that is valid with default
        component parameters."""
        return [(a, n, l_) for a in names_of(self.affinity) for n in names_of(self.normalisation)
                for l_ in names_of(self.loss) if not combination_problems(a, n, l_)]
