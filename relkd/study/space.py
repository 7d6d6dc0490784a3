"""The search space: which objective configs a study may draw, declared once as a table of
dimensions built from the registries.

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

Parameter names are stable and readable, so that importance and plots read well:
``n_terms``, ``term0.family``, ``term0.tap``, ``term0.view``, ``term0.affinity``, ``term0.rbf.gamma`` (a
component's own parameter, named after the component), ``term0.normalisation``,
``term0.loss``, ``term0.method`` (a feature term's), ``term0.teacher_tap``, ``term0.weight``, ``kd``,
``kd.temperature``, ``kd.weight``, ``ce_weight``. A term draws the fields of its family only (a relation term its
view, affinity, normalisation and loss; a feature term its method), so a space that mixes the
families is conditional: TPE, random and brute-force search walk it; a grid does not.

:meth:`SearchSpace.sample` draws a config through an Optuna trial and returns it with the
rules it breaks (:func:`relkd.combination_problems`); the driver never trains an invalid
draw. :meth:`SearchSpace.params_for` is the inverse: the parameters under which a given
config (e.g. a preset) lies in the space, or ``None``.

Every search field is one :class:`Dimension` of :data:`DIMENSIONS`: its study-file field,
default, parser, Optuna parameter name, where its value goes in the config, and its
design-choice group. Validation, :data:`DEFAULT_SEARCH`, ``sample``, ``params_for``,
``describe``, ``grid`` and the analysis' choice groups (:func:`choice_group`) all read the
table, so adding a search field is one entry, e.g. a per-term categorical field::

    Dimension("mix", "avg", names_parser(("avg", "max")), "{term}.mix", "view", role=TERM_VALUE)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..config import KD_TEMPERATURE_RANGE, MAX_WEIGHT, TERM_KINDS, feature_problems, validate_config
from ..features import FEATURES
from ..fields import ConfigError, FieldChecker, join_path
from ..relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS, combination_problems
from .domains import (Choice, Domain, Fixed, Range, bool_domain, free_names, name_domain, names_of, numeric_domain,
                      upper)

__all__ = ["Fixed", "Choice", "Range", "Dimension", "DIMENSIONS", "SearchSpace", "validate_search",
           "DEFAULT_SEARCH", "choice_group", "GROUPS"]

# How a dimension's value enters the config (the order of DIMENSIONS is the order of drawing).
COUNT = "count"                  # the number of terms
FAMILY = "family"                # each term's family (relation or feature)
TERM_VALUE = "term value"        # a plain value of each term (tap, view)
COMPONENT = "component"          # a registry name of each term, with its own parameters
COMPONENT_PARAMS = "params"      # whether components' own parameters are searched (a switch)
PAIR = "pair"                    # the teacher's layer of each term, when it may differ from the student's
TERM_WEIGHT = "term weight"      # a value of each term drawn once its combination is valid
SWITCH = "switch"                # a part of the config that is on or off (kd)
SWITCHED = "switched"            # a value inside a switched part (kd.temperature)
VALUE = "value"                  # a top-level value (ce_weight)

#: Groups of search parameters, in the order plots show them.
GROUPS = ("terms", "family", "tap", "view", "affinity", "normalisation", "loss", "component params", "weights",
          "KD")

Parser = Callable[[FieldChecker, Any, str, "Sequence[str] | None"], Any]


@dataclass(frozen=True)
class Dimension:
    """One search field: ``field`` (dotted path in the ``search`` section), its ``default``,
    ``parse(checker, value, path, taps) -> Domain``, the Optuna parameter name (``{term}``
    stands for ``term0``, ``term1``, ...; ``{component}`` and ``{param}`` for a component's
    own parameter), its design-choice ``group``, its ``role``, for values that land in
    the config under another name, ``config_key`` (default: the last part of ``field``), and
    for a per-term field of one family only, that ``family``."""

    field: str
    default: Any
    parse: Parser
    param: str
    group: str
    role: str = VALUE
    config_key: str | None = None
    registry: Any = None  # components: where their names and parameters come from
    family: str | None = None  # per-term fields: drawn only for terms of this family (None: every term)

    @property
    def key(self) -> str:
        return self.config_key or self.field.rsplit(".", 1)[-1]

    def param_name(self, term: int | None = None, component: str = "", param: str = "") -> str:
        return self.param.format(term=f"term{term}", component=component, param=param)


def numbers(**options: Any) -> Parser:
    """A parser of a number, a list of numbers or a range (``numeric_domain``'s options)."""
    return lambda c, value, path, taps: numeric_domain(c, value, path, **options)


def names_parser(names: Sequence[str] | Callable[[], Sequence[str]], kind: str = "value") -> Parser:
    """A parser of ``all``, one name or a list of names out of ``names``."""
    return lambda c, value, path, taps: name_domain(c, value, path, names() if callable(names) else names, kind)


def registry_names(registry: Any) -> Parser:
    return lambda c, value, path, taps: name_domain(c, value, path, registry.list(), registry.kind)


def parse_terms(c: FieldChecker, value: Any, path: str, taps: Sequence[str] | None) -> Domain | None:
    domain = numeric_domain(c, value, path, integer=True)
    if domain is not None and upper(domain) > 8:
        c.error(path, f"at most 8 terms, got up to {upper(domain)}")
    return domain


def parse_tap(c: FieldChecker, value: Any, path: str, taps: Sequence[str] | None) -> Domain | None:
    if taps is None:
        return free_names(c, value, path)
    return name_domain(c, value, path, tuple(taps), "tap (of both models)")


SAME = "same"  # the ``teacher_tap`` value for the student's own layer


def parse_teacher_tap(c: FieldChecker, value: Any, path: str, taps: Sequence[str] | None) -> Domain | None:
    return free_names(c, value, path) if taps is None else name_domain(c, value, path, (SAME, *taps),
                                                                       "teacher tap (or same)")


def parse_switch(c: FieldChecker, value: Any, path: str, taps: Sequence[str] | None) -> Domain | None:
    return bool_domain(c, value, path)


def parse_component_params(c: FieldChecker, value: Any, path: str, taps: Sequence[str] | None) -> Domain | None:
    choice = c.choice(value, path, ("search", "default"))
    return None if choice is None else Fixed(choice)


#: The search space, one row per search field, in the order a trial draws them.
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("terms", {"low": 0, "high": 2}, parse_terms, "n_terms", "terms", role=COUNT),
    Dimension("family", "relation", names_parser(TERM_KINDS, "term family"), "{term}.family", "family", role=FAMILY,
              config_key="kind"),
    Dimension("tap", ["last_stage", "pool"], parse_tap, "{term}.tap", "tap", role=TERM_VALUE),
    Dimension("view", ["flatten", "avgpool", "maxpool"], registry_names(VIEWS), "{term}.view", "view",
              role=TERM_VALUE, family="relation"),
    Dimension("affinity", "all", registry_names(AFFINITIES), "{term}.affinity", "affinity", role=COMPONENT,
              registry=AFFINITIES, family="relation"),
    Dimension("normalisation", "all", registry_names(NORMALISATIONS), "{term}.normalisation", "normalisation",
              role=COMPONENT, registry=NORMALISATIONS, family="relation"),
    Dimension("loss", "all", registry_names(LOSSES), "{term}.loss", "loss", role=COMPONENT, registry=LOSSES,
              family="relation"),
    Dimension("method", "all", registry_names(FEATURES), "{term}.method", "family", role=COMPONENT,
              registry=FEATURES, family="feature"),
    Dimension("teacher_tap", SAME, parse_teacher_tap, "{term}.teacher_tap", "tap", role=PAIR),
    Dimension("component_params", "search", parse_component_params, "{term}.{component}.{param}",
              "component params", role=COMPONENT_PARAMS),
    Dimension("weight", {"low": 1e-3, "high": 1e5, "log": True}, numbers(log_default=True, maximum=MAX_WEIGHT),
              "{term}.weight",
              "weights", role=TERM_WEIGHT),
    Dimension("kd.enabled", [False, True], parse_switch, "kd", "KD", role=SWITCH, config_key="kd"),
    Dimension("kd.temperature", {"low": 1.0, "high": 8.0},
              numbers(minimum=KD_TEMPERATURE_RANGE[0], maximum=KD_TEMPERATURE_RANGE[1]), "kd.temperature", "KD",
              role=SWITCHED),
    Dimension("kd.weight", {"low": 0.1, "high": 1.0}, numbers(maximum=MAX_WEIGHT), "kd.weight", "weights",
              role=SWITCHED),
    Dimension("ce_weight", {"low": 0.1, "high": 1.0, "log": True}, numbers(log_default=False, maximum=MAX_WEIGHT),
              "ce_weight",
              "weights", role=VALUE),
)


def _nested(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``{"kd.weight": v}`` pairs as nested mappings ``{"kd": {"weight": v}}``, in order."""
    out: dict[str, Any] = {}
    for field, value in pairs:
        *parents, last = field.split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return out


#: The ``search`` section every study starts from.
DEFAULT_SEARCH: dict[str, Any] = _nested([(d.field, d.default) for d in DIMENSIONS])
#: Fields of ``search`` that hold fields of their own (``kd: {enabled, temperature, weight}``).
SECTIONS = tuple(dict.fromkeys(d.field.split(".")[0] for d in DIMENSIONS if "." in d.field))


def _param_pattern(dim: Dimension) -> re.Pattern:
    text = re.escape(dim.param).replace(r"\{term\}", r"term\d+")
    text = text.replace(r"\{component\}", r"[A-Za-z0-9_]+").replace(r"\{param\}", r"[A-Za-z0-9_]+")
    return re.compile(f"^{text}$")


_GROUP_PATTERNS = [(_param_pattern(d), d.group) for d in DIMENSIONS]


def choice_group(param: str) -> str:
    """The design choice a search parameter belongs to (one of :data:`GROUPS`, else ``other``),
    read from :data:`DIMENSIONS`::

        n_terms -> terms; term0.affinity -> affinity; term1.rbf.gamma -> component params;
        term0.weight, kd.weight, ce_weight -> weights; kd, kd.temperature -> KD

    A refinement's parameters (:mod:`relkd.study.refine`) belong where the value they change
    does: ``refine.term0.scale`` -> weights, ``refine.extra`` -> terms,
    ``refine.extra.term0.loss`` -> loss, ``refine.kd.temperature`` -> KD.
    """
    if param.startswith("refine."):
        rest = param.removeprefix("refine.")
        rest = "n_terms" if rest == "extra" else rest.removeprefix("extra.")
        return choice_group(re.sub(r"\.scale$", ".weight", rest)) if rest != "base" else "other"
    for pattern, group in _GROUP_PATTERNS:
        if pattern.match(param):
            return group
    return "other"


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

    def _own_params(self, dim: Dimension, name: str) -> list[tuple[Any, Domain]]:
        """A component's own parameters with the domain each takes here."""
        out = []
        for param in dim.registry.get(name).params:
            if self.search_component_params and param.search is not None:
                integer = param.type is int
                out.append((param, Range(param.search[0], param.search[1], param.log and not integer, integer)))
            else:
                out.append((param, Fixed(param.default)))
        return out

    def choices(self, field: str) -> tuple[Any, ...]:
        """The values a categorical search field may take here (one for a fixed field)."""
        domain = self.domains[field]
        return tuple(domain.choices) if isinstance(domain, Choice) else (domain.value,)

    def _dims(self, *roles: str) -> list[Dimension]:
        return [d for d in DIMENSIONS if d.role in roles]

    # -- drawing

    def sample(self, trial: Any) -> tuple[dict[str, Any], list[str]]:
        """Draw a config through ``trial`` (an ``optuna.Trial``); return it in canonical form
        with the rules it breaks. An invalid draw stops at the first invalid term, so no
        parameter is drawn that the config does not use."""
        (count,) = self._dims(COUNT)
        n_terms = int(self.domains[count.field].suggest(trial, count.param))
        terms = []
        for i in range(n_terms):
            term, problems = self.sample_term(trial, i)
            if problems:
                return {}, [f"term{i}: {problem}" for problem in problems]
            terms.append(term)
        config: dict[str, Any] = {"relkd_config": 1, "terms": terms}
        for dim in self._dims(SWITCH, SWITCHED, VALUE):
            if dim.role == SWITCHED:
                section = dim.field.split(".")[0]
                if config[section] is not None:
                    config[section][dim.key] = float(self.domains[dim.field].suggest(trial, dim.param))
            elif dim.role == SWITCH:
                config[dim.key] = {} if bool(self.domains[dim.field].suggest(trial, dim.param)) else None
            else:
                config[dim.key] = float(self.domains[dim.field].suggest(trial, dim.param))
        return validate_config(config), []

    def sample_term(self, trial: Any, i: int) -> tuple[dict[str, Any], list[str]]:
        """Draw term ``i`` (parameters ``term<i>.*``; its family first, then that family's
        fields); return it with the rules it breaks (then without its weight: nothing more
        is drawn for an invalid term)."""
        (family_dim,) = self._dims(FAMILY)
        family = self.domains[family_dim.field].suggest(trial, family_dim.param_name(i))
        term: dict[str, Any] = {"kind": "feature"} if family == "feature" else {}
        (params_dim,) = self._dims(COMPONENT_PARAMS)
        for dim in self._term_dims(family, TERM_VALUE, COMPONENT):
            value = self.domains[dim.field].suggest(trial, dim.param_name(i))
            if dim.role == COMPONENT:
                spec = {"name": value}
                for param, domain in self._own_params(dim, value):
                    if isinstance(domain, Range):
                        spec[param.name] = domain.suggest(trial, params_dim.param_name(i, value, param.name))
                value = spec
            term[dim.key] = value
        (pair_dim,) = self._dims(PAIR)
        teacher = self.domains[pair_dim.field].suggest(trial, pair_dim.param_name(i))
        if teacher not in (SAME, term["tap"]):
            term["tap"] = {"student": term["tap"], "teacher": teacher}
        if family == "feature":
            problems = feature_problems(term["method"]["name"], term["tap"])
        else:
            problems = combination_problems(term["affinity"], term["normalisation"], term["loss"])
        if problems:
            return term, problems
        for dim in self._dims(TERM_WEIGHT):
            term[dim.key] = float(self.domains[dim.field].suggest(trial, dim.param_name(i)))
        return term, []

    def _term_dims(self, family: str, *roles: str) -> list[Dimension]:  # those a term of ``family`` draws
        return [d for d in self._dims(*roles) if d.family in (None, family)]

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

        (count,) = self._dims(COUNT)
        (params_dim,) = self._dims(COMPONENT_PARAMS)
        if not put(self.domains[count.field], count.param, len(cfg["terms"])):
            return None
        (family_dim,) = self._dims(FAMILY)
        for i, term in enumerate(cfg["terms"]):
            family = term.get("kind", "relation")
            if not put(self.domains[family_dim.field], family_dim.param_name(i), family):
                return None
            tap = term["tap"]
            if isinstance(tap, list):  # the space draws one layer pair per term
                return None
            (pair_dim,) = self._dims(PAIR)
            pair = self.domains[pair_dim.field]
            if isinstance(tap, Mapping):
                student, teacher = tap["student"], tap["teacher"]
            else:  # the same layer: "same", or the layer's own name when "same" is not offered
                student, teacher = tap, SAME if pair.contains(SAME) else tap
            if not put(pair, pair_dim.param_name(i), teacher):
                return None
            for dim in self._term_dims(family, TERM_VALUE, COMPONENT, TERM_WEIGHT):
                value = student if dim.field == "tap" else term[dim.key]
                name = value["name"] if dim.role == COMPONENT else value
                if not put(self.domains[dim.field], dim.param_name(i), name):
                    return None
                if dim.role == COMPONENT:
                    for param, domain in self._own_params(dim, name):
                        if not put(domain, params_dim.param_name(i, name, param.name), value[param.name]):
                            return None
        for dim in self._dims(SWITCH, SWITCHED, VALUE):
            if dim.role == SWITCH:
                ok = put(self.domains[dim.field], dim.param, cfg[dim.key] is not None)
            elif dim.role == SWITCHED:
                section = cfg[dim.field.split(".")[0]]
                ok = section is None or put(self.domains[dim.field], dim.param, section[dim.key])
            else:
                ok = put(self.domains[dim.field], dim.param, cfg[dim.key])
            if not ok:
                return None
        return params

    # -- description

    def describe(self) -> dict[str, Any]:
        """The space as plain data, in the study file's ``search`` format. A space of relation
        terms only leaves out ``family`` and ``method``, one without pairing ``teacher_tap``
        (so study records from before them are unchanged)."""
        features = self.family.contains("feature")
        paired = not (isinstance(self.teacher_tap, Fixed) and self.teacher_tap.value == SAME)
        return _nested([(d.field, self.domains[d.field].describe()) for d in DIMENSIONS
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
                p.search is not None for dim in self._dims(COMPONENT) if dim.family in (None, *families)
                for name in names_of(self.domains[dim.field]) for p in dim.registry.get(name).params):
            problems.append("search.component_params: a grid keeps component parameters at their defaults; "
                            "expected component_params: default")
        kd_possible = self.kd.contains(True)
        for dim in self._dims(TERM_VALUE, TERM_WEIGHT, SWITCHED, VALUE):
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
            for dim in self._term_dims(families[0], TERM_VALUE, COMPONENT, PAIR, TERM_WEIGHT):
                add(dim.param_name(i), self.domains[dim.field])
        for dim in self._dims(SWITCH, SWITCHED, VALUE):
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
