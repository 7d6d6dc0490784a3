"""The search space's table: every search field is one :class:`Dimension` of
:data:`DIMENSIONS`, built from the registries: its study-file field, default, parser,
Optuna parameter name, where its value goes in the config, and its design-choice group.

Validation and :data:`DEFAULT_SEARCH` (:mod:`relkd.study.space`), drawing and the inverse
(:mod:`relkd.study.draws`), ``describe``, ``grid`` and the analysis' choice groups
(:func:`choice_group`) all read the table, so adding a search field is one entry, e.g. a
per-term categorical field::

    Dimension("mix", "avg", names_parser(("avg", "max")), "{term}.mix", "view", role=TERM_VALUE)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..config import KD_TEMPERATURE_RANGE, MAX_WEIGHT
from ..features import FEATURES
from ..fields import FieldChecker
from ..relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS, views_for_every_tap
from ..terms import kind_names
from .domains import Domain, Fixed, bool_domain, free_names, name_domain, numeric_domain, upper

__all__ = ["Dimension", "DIMENSIONS", "DEFAULT_SEARCH", "SECTIONS", "GROUPS", "choice_group", "dims", "term_dims",
           "drawn_kinds",
           "nested", "names_parser", "numbers", "registry_names", "SAME", "COUNT", "FAMILY", "TERM_VALUE",
           "COMPONENT", "COMPONENT_PARAMS", "PAIR", "TERM_WEIGHT", "SWITCH", "SWITCHED", "VALUE"]

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


def parse_view(c: FieldChecker, value: Any, path: str, taps: Sequence[str] | None) -> Domain | None:
    """Views: ``all`` is every view that reads every tap (token-only ones such as ``cls`` are
    searched when listed)."""
    allowed = views_for_every_tap() if value == "all" else VIEWS.list()
    return name_domain(c, value, path, allowed, VIEWS.kind)


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


def drawn_kinds() -> tuple[str, ...]:
    """The term kinds (:func:`relkd.terms.kind_names`, in their order) the search field ``family``
    may draw: those with search fields of their own here; a kind registered without any has
    nothing to draw."""
    return tuple(kind for kind in kind_names() if any(d.family == kind for d in DIMENSIONS))


#: The search space, one row per search field, in the order a trial draws them.
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("terms", {"low": 0, "high": 2}, parse_terms, "n_terms", "terms", role=COUNT),
    Dimension("family", "relation", names_parser(drawn_kinds, "term family"), "{term}.family", "family", role=FAMILY,
              config_key="kind"),
    Dimension("tap", ["last_stage", "pool"], parse_tap, "{term}.tap", "tap", role=TERM_VALUE),
    Dimension("view", ["flatten", "avgpool", "maxpool"], parse_view, "{term}.view", "view",
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


def dims(*roles: str) -> list[Dimension]:
    """The dimensions of :data:`DIMENSIONS` with one of ``roles``, in the order of drawing."""
    return [d for d in DIMENSIONS if d.role in roles]


def term_dims(family: str, *roles: str) -> list[Dimension]:
    """Those of :func:`dims` that a term of ``family`` draws."""
    return [d for d in dims(*roles) if d.family in (None, family)]


def nested(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
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
DEFAULT_SEARCH: dict[str, Any] = nested([(d.field, d.default) for d in DIMENSIONS])
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
