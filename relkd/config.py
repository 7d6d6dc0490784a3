"""The objective config: schema, validation with field paths, and YAML load/save.

The objective config is relkd's public contract (it is also the export format)::

    relkd_config: 1
    ce_weight: 1.0
    kd: {weight: 0.9, temperature: 4.0}      # or null
    terms:
      - tap: pool                             # or {student: stage2, teacher: stage3}, or a list of those
        view: avgpool
        affinity: {name: euclidean}
        normalisation: {name: mean}
        loss: {name: smooth_l1, beta: 1.0}
        weight: 25.0
      - kind: feature                         # a feature term (relkd.features): FitNets, AT, NST, VID, CRD
        tap: stage2
        method: {name: at, p: 2.0}
        weight: 1000.0
    meta: {...}                               # optional, ignored by build_objective

:func:`validate_config` returns the *canonical* form: defaults filled in, every component
parameter spelled out, keys in a fixed order. ``build_objective(cfg).to_config()`` equals
``validate_config(cfg)``. Every error names the field path, e.g.
``terms[1].affinity.name: unknown affinity 'cosin'; did you mean 'cosine'? ...``.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Mapping

from .fields import ConfigError, FieldChecker, join_path, read_yaml_file, yaml_dump
from .files import write_text
from .registry import short_repr
# the term kinds relkd ships register as their modules load (relkd.terms.TERM_KINDS)
from .features.term import FeatureKind, feature_problems  # noqa: F401
from .relation.term import RelationKind  # noqa: F401
from .terms import DEFAULT_KIND, TERM_KINDS, kind_names, tap_pairs

__all__ = [
    "CONFIG_VERSION",
    "ConfigError",
    "feature_problems",
    "tap_pairs",
    "tap_label",
    "validate_config",
    "load_config",
    "save_config",
]

CONFIG_VERSION = 1
#: The largest weight (CE, KD, a term's): a weighted loss stays far from float32's limit
#: (3.4e38), and no published method comes near (SP: 3000).
MAX_WEIGHT = 1e8
#: KD temperatures from MIN to MAX: beyond, logits / T or the T^2 factor leave float32's range.
KD_TEMPERATURE_RANGE = (0.01, 1000.0)

_TOP_FIELDS = ("relkd_config", "ce_weight", "kd", "terms", "meta")
_KD_FIELDS = ("weight", "temperature")
#: The two sides of a tap pair.
TAP_SIDES = ("student", "teacher")
_RESERVED_NAMES = ("total", "ce", "kd")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_+\-]*$")


def _check_term(c: FieldChecker, term: Any, path: str) -> dict[str, Any] | None:
    """A term of any registered kind (:data:`relkd.terms.TERM_KINDS`): the fields every term has
    (``kind``, ``name``, ``tap``, ``weight``) here, the kind's own ones by the kind."""
    kind_name = term.get("kind", DEFAULT_KIND) if isinstance(term, Mapping) else DEFAULT_KIND
    if not isinstance(kind_name, str) or kind_name not in TERM_KINDS:
        c.error(join_path(path, "kind"), f"expected one of {', '.join(kind_names())} ({DEFAULT_KIND} when left "
                                         f"out), got {short_repr(kind_name)}")
        return None
    kind = TERM_KINDS.get(kind_name).obj
    if kind_name == DEFAULT_KIND and isinstance(term, Mapping) and kind.key not in term:
        for other in kind_names():
            key = TERM_KINDS.get(other).obj.key
            if other != kind_name and key in term:
                c.error(join_path(path, "kind"), f"missing: a term with a {key} ({short_repr(term[key])}) is a "
                                                 f"{other} term; add kind: {other}")
                return None
    if not c.mapping(term, path, ("kind", "name", "tap", *kind.fields, "weight")):
        return None
    n_errors = len(c.errors)
    out: dict[str, Any] = {} if kind_name == DEFAULT_KIND else {"kind": kind_name}
    if "name" in term:
        name = term["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in _RESERVED_NAMES:
            c.error(join_path(path, "name"), f"expected a name of letters, digits, '_', '+' or '-' that is not "
                                         f"{', '.join(_RESERVED_NAMES)}; got {short_repr(name)}")
        out["name"] = name
    out["tap"] = _check_tap(c, term.get("tap"), join_path(path, "tap"))
    kind.check(c, term, path, out)
    out["weight"] = c.number(term.get("weight", 1.0), join_path(path, "weight"), maximum=MAX_WEIGHT)
    if len(c.errors) > n_errors:
        return None
    for problem in kind.problems(out):
        c.error(path, problem)
    return out if len(c.errors) == n_errors else None


_TAP_HINT = ("a tap (layer) name such as 'pool' or 'last_stage', a pair {student: stage2, teacher: stage3}, or a "
             "list of them")


def _tap_name(c: FieldChecker, value: Any, path: str) -> str | None:
    if not isinstance(value, str) or not value:
        c.error(path, f"expected a tap (layer) name such as 'pool' or 'last_stage', got {short_repr(value)}")
        return None
    return value


def _check_tap(c: FieldChecker, value: Any, path: str) -> Any:
    """A term's ``tap``: one name (the same layer on both models), a pair ``{student: ...,
    teacher: ...}`` or a list of those (the term summed over the pairs). Canonical form: a
    pair with one name on both sides is that name, a list of one is its element."""
    if isinstance(value, list):
        if not value:
            c.error(path, f"expected {_TAP_HINT}; got an empty list")
            return None
        taps = [_check_tap_pair(c, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if None in taps:
            return None
        keys = ["{} -> {}".format(*tap_pairs(t)[0]) for t in taps]
        for key in {k for k in keys if keys.count(k) > 1}:
            c.error(path, f"the layer pair {key} is listed more than once; expected each pair at most once")
        return taps[0] if len(taps) == 1 else taps
    return _check_tap_pair(c, value, path)


def _check_tap_pair(c: FieldChecker, value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        if not c.mapping(value, path, TAP_SIDES):
            return None
        missing = [side for side in TAP_SIDES if side not in value]
        for side in missing:
            c.error(join_path(path, side), "missing; a tap pair names the student's and the teacher's layer")
        if missing:
            return None
        student, teacher = (_tap_name(c, value[side], join_path(path, side)) for side in TAP_SIDES)
        if student is None or teacher is None:
            return None
        return student if student == teacher else {"student": student, "teacher": teacher}
    if isinstance(value, str) and value:
        return value
    c.error(path, f"expected {_TAP_HINT}; got {short_repr(value)}")
    return None


def tap_label(tap: Any) -> str:
    """A canonical ``tap`` in words: ``pool``, ``stage2->stage3`` (student -> teacher),
    ``stage1 + stage2`` (a list)."""
    return " + ".join(s if s == t else f"{s}->{t}" for s, t in tap_pairs(tap))


def validate_config(config: Any, source: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check an objective config and return its canonical form (a new dict).

    Raises :class:`ConfigError` listing every problem with its field path."""
    c = FieldChecker()
    if not c.mapping(config, "", _TOP_FIELDS):
        raise ConfigError(c.errors, source)
    version = config.get("relkd_config", CONFIG_VERSION)
    if version != CONFIG_VERSION or isinstance(version, bool):
        c.error("relkd_config", f"unsupported version {short_repr(version)}; this relkd reads version {CONFIG_VERSION}")
    out: dict[str, Any] = {"relkd_config": CONFIG_VERSION}
    out["ce_weight"] = c.number(config.get("ce_weight", 1.0), "ce_weight", maximum=MAX_WEIGHT)

    kd = config.get("kd")
    out["kd"] = None
    if kd is not None and c.mapping(kd, "kd", _KD_FIELDS):
        out["kd"] = {
            "weight": c.number(kd.get("weight", 1.0), "kd.weight", maximum=MAX_WEIGHT),
            "temperature": c.number(kd.get("temperature", 4.0), "kd.temperature",
                                    minimum=KD_TEMPERATURE_RANGE[0], maximum=KD_TEMPERATURE_RANGE[1]),
        }

    terms = config.get("terms", [])
    out["terms"] = []
    if terms is None:
        terms = []
    if not isinstance(terms, list):
        c.error("terms", f"expected a list of terms (relation or feature), got {short_repr(terms)}")
        terms = []
    for i, term in enumerate(terms):
        out["terms"].append(_check_term(c, term, f"terms[{i}]"))
    names = [t.get("name") for t in out["terms"] if t and t.get("name")]
    for name in {n for n in names if names.count(n) > 1}:
        c.error("terms", f"term name {name!r} is used more than once; term names must be unique")
    for i, term in enumerate(out["terms"]):  # an unnamed term's part is called term<index>
        name = term.get("name") if term else None
        if isinstance(name, str) and re.fullmatch(r"term\d+", name) and name != f"term{i}":
            c.error(f"terms[{i}].name", f"{name!r} is the name an unnamed term at another position gets; "
                                        f"choose another name (term<N> is allowed only at position N)")

    if "meta" in config and config["meta"] is not None:
        if not isinstance(config["meta"], Mapping):
            c.error("meta", f"expected a mapping (free-form provenance), got {short_repr(config['meta'])}")
        else:
            out["meta"] = copy.deepcopy(dict(config["meta"]))

    if not c.errors:
        weights = [out["ce_weight"]] + ([out["kd"]["weight"]] if out["kd"] else [])
        weights += [t["weight"] for t in out["terms"]]
        if not any(w > 0 for w in weights):
            c.error("ce_weight", "the objective is empty: ce_weight, kd.weight and every term weight are zero; "
                                 "at least one must be > 0")
    if c.errors:
        raise ConfigError(c.errors, source)
    return out


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read an objective config from a YAML file (safe loading) and validate it."""
    return validate_config(read_yaml_file(path), path)


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate ``config`` and write its canonical form as YAML (atomically)."""
    canonical = validate_config(config)
    return write_text(path, "# relkd objective config: relkd.build_objective(relkd.load_config(path))\n"
                      + yaml_dump(canonical))
