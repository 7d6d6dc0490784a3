"""Drawing a composition from an Optuna trial, and the inverse: the functions behind
:meth:`SearchSpace.sample <relkd.study.space.SearchSpace.sample>`, ``sample_term`` and
``params_for``, reading the table of :mod:`relkd.study.dimensions`.

Parameter names are stable and readable, so that importance and plots read well:
``n_terms``, ``term0.family``, ``term0.tap``, ``term0.view``, ``term0.affinity``, ``term0.rbf.gamma`` (a
component's own parameter, named after the component), ``term0.normalisation``,
``term0.loss``, ``term0.method`` (a feature term's), ``term0.teacher_tap``, ``term0.weight``, ``kd``,
``kd.temperature``, ``kd.weight``, ``ce_weight``. A term draws the fields of its family only (a relation term its
view, affinity, normalisation and loss; a feature term its method), so a space that mixes the
families is conditional: TPE, random and brute-force search walk it; a grid does not.

:func:`draw_config` draws a config through an Optuna trial and returns it with the rules it
breaks (:func:`relkd.combination_problems`); the driver never trains an invalid draw.
:func:`config_params` is the inverse: the parameters under which a given config (e.g. a preset)
lies in the space, or ``None``. ``space`` is a :class:`~relkd.study.space.SearchSpace`.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config import validate_config
from ..terms import DEFAULT_KIND, term_kind, term_problems
from .dimensions import (COMPONENT, COMPONENT_PARAMS, COUNT, FAMILY, PAIR, SAME, SWITCH, SWITCHED, TERM_VALUE,
                         TERM_WEIGHT, VALUE, Dimension, dims, term_dims)
from .domains import Domain, Fixed, Range

__all__ = ["draw_config", "draw_term", "config_params", "own_params"]


def own_params(space: Any, dim: Dimension, name: str) -> list[tuple[Any, Domain]]:
    """A component's own parameters with the domain each takes in ``space``."""
    out = []
    for param in dim.registry.get(name).params:
        if space.search_component_params and param.search is not None:
            integer = param.type is int
            out.append((param, Range(param.search[0], param.search[1], param.log and not integer, integer)))
        else:
            out.append((param, Fixed(param.default)))
    return out


def draw_config(space: Any, trial: Any) -> tuple[dict[str, Any], list[str]]:
    """Draw a config through ``trial`` (an ``optuna.Trial``); return it in canonical form
    with the rules it breaks. An invalid draw stops at the first invalid term, so no
    parameter is drawn that the config does not use."""
    (count,) = dims(COUNT)
    n_terms = int(space.domains[count.field].suggest(trial, count.param))
    terms = []
    for i in range(n_terms):
        term, problems = space.sample_term(trial, i)
        if problems:
            return {}, [f"term{i}: {problem}" for problem in problems]
        terms.append(term)
    config: dict[str, Any] = {"relkd_config": 1, "terms": terms}
    for dim in dims(SWITCH, SWITCHED, VALUE):
        if dim.role == SWITCHED:
            section = dim.field.split(".")[0]
            if config[section] is not None:
                config[section][dim.key] = float(space.domains[dim.field].suggest(trial, dim.param))
        elif dim.role == SWITCH:
            config[dim.key] = {} if bool(space.domains[dim.field].suggest(trial, dim.param)) else None
        else:
            config[dim.key] = float(space.domains[dim.field].suggest(trial, dim.param))
    return validate_config(config), []


def draw_term(space: Any, trial: Any, i: int) -> tuple[dict[str, Any], list[str]]:
    """Draw term ``i`` (parameters ``term<i>.*``; its family first, then that family's
    fields); return it with the rules it breaks (then without its weight: nothing more
    is drawn for an invalid term)."""
    (family_dim,) = dims(FAMILY)
    family = space.domains[family_dim.field].suggest(trial, family_dim.param_name(i))
    term: dict[str, Any] = {} if family == DEFAULT_KIND else {"kind": family}
    (params_dim,) = dims(COMPONENT_PARAMS)
    for dim in term_dims(family, TERM_VALUE, COMPONENT):
        value = space.domains[dim.field].suggest(trial, dim.param_name(i))
        if dim.role == COMPONENT:
            spec = {"name": value}
            for param, domain in own_params(space, dim, value):
                if isinstance(domain, Range):
                    spec[param.name] = domain.suggest(trial, params_dim.param_name(i, value, param.name))
            value = spec
        term[dim.key] = value
    (pair_dim,) = dims(PAIR)
    teacher = space.domains[pair_dim.field].suggest(trial, pair_dim.param_name(i))
    if teacher not in (SAME, term["tap"]):
        term["tap"] = {"student": term["tap"], "teacher": teacher}
    problems = term_problems(term)
    if problems:
        return term, problems
    for dim in dims(TERM_WEIGHT):
        term[dim.key] = float(space.domains[dim.field].suggest(trial, dim.param_name(i)))
    return term, []


def config_params(space: Any, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Optuna parameters under which ``config`` lies in ``space`` (only the searched
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

    (count,) = dims(COUNT)
    (params_dim,) = dims(COMPONENT_PARAMS)
    if not put(space.domains[count.field], count.param, len(cfg["terms"])):
        return None
    (family_dim,) = dims(FAMILY)
    for i, term in enumerate(cfg["terms"]):
        family = term_kind(term)
        if not put(space.domains[family_dim.field], family_dim.param_name(i), family):
            return None
        tap = term["tap"]
        if isinstance(tap, list):  # the space draws one layer pair per term
            return None
        (pair_dim,) = dims(PAIR)
        pair = space.domains[pair_dim.field]
        if isinstance(tap, Mapping):
            student, teacher = tap["student"], tap["teacher"]
        else:  # the same layer: "same", or the layer's own name when "same" is not offered
            student, teacher = tap, SAME if pair.contains(SAME) else tap
        if not put(pair, pair_dim.param_name(i), teacher):
            return None
        for dim in term_dims(family, TERM_VALUE, COMPONENT, TERM_WEIGHT):
            value = student if dim.field == "tap" else term[dim.key]
            name = value["name"] if dim.role == COMPONENT else value
            if not put(space.domains[dim.field], dim.param_name(i), name):
                return None
            if dim.role == COMPONENT:
                for param, domain in own_params(space, dim, name):
                    if not put(domain, params_dim.param_name(i, name, param.name), value[param.name]):
                        return None
    for dim in dims(SWITCH, SWITCHED, VALUE):
        if dim.role == SWITCH:
            ok = put(space.domains[dim.field], dim.param, cfg[dim.key] is not None)
        elif dim.role == SWITCHED:
            section = cfg[dim.field.split(".")[0]]
            ok = section is None or put(space.domains[dim.field], dim.param, section[dim.key])
        else:
            ok = put(space.domains[dim.field], dim.param, cfg[dim.key])
        if not ok:
            return None
    return params
