"""The objective config: schema, validation with field paths, and YAML load/save.

The objective config is relkd's public contract (it is also the export format)::

    relkd_config: 1
    ce_weight: 1.0
    kd: {weight: 0.9, temperature: 4.0}      # or null
    terms:
      - tap: pool
        view: avgpool
        affinity: {name: euclidean}
        normalisation: {name: mean}
        loss: {name: smooth_l1, beta: 1.0}
        weight: 25.0
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
from .registry import short_repr, unknown_name_message
from .relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS, combination_problems

__all__ = [
    "CONFIG_VERSION",
    "ConfigError",
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
_TERM_FIELDS = ("name", "tap", "view", "affinity", "normalisation", "loss", "weight")
_RESERVED_NAMES = ("total", "ce", "kd")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_+\-]*$")


def _check_term(c: FieldChecker, term: Any, path: str) -> dict[str, Any] | None:
    if not c.mapping(term, path, _TERM_FIELDS):
        return None
    n_errors = len(c.errors)
    out: dict[str, Any] = {}
    if "name" in term:
        name = term["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in _RESERVED_NAMES:
            c.error(join_path(path, "name"), f"expected a name of letters, digits, '_', '+' or '-' that is not "
                                         f"{', '.join(_RESERVED_NAMES)}; got {short_repr(name)}")
        out["name"] = name
    tap = term.get("tap")
    if not isinstance(tap, str) or not tap:
        c.error(join_path(path, "tap"),
                f"expected a tap (layer) name such as 'pool' or 'last_stage', got {short_repr(tap)}")
    out["tap"] = tap
    view = term.get("view", "auto")
    if not isinstance(view, str) or view not in VIEWS:
        c.error(join_path(path, "view"), unknown_name_message("view", view, VIEWS.list()))
    out["view"] = view
    if "affinity" not in term:
        c.error(join_path(path, "affinity"), f"missing; choose one of {', '.join(AFFINITIES.list())}")
    else:
        out["affinity"] = c.component(term["affinity"], join_path(path, "affinity"), AFFINITIES)
    out["normalisation"] = c.component(term.get("normalisation", "none"), join_path(path, "normalisation"),
                                       NORMALISATIONS)
    out["loss"] = c.component(term.get("loss", "mse"), join_path(path, "loss"), LOSSES)
    out["weight"] = c.number(term.get("weight", 1.0), join_path(path, "weight"), maximum=MAX_WEIGHT)
    if len(c.errors) > n_errors:
        return None
    for problem in combination_problems(out["affinity"], out["normalisation"], out["loss"]):
        c.error(path, problem)
    return out if len(c.errors) == n_errors else None


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
        c.error("terms", f"expected a list of relation terms, got {short_repr(terms)}")
        terms = []
    for i, term in enumerate(terms):
        out["terms"].append(_check_term(c, term, f"terms[{i}]"))
    names = [t.get("name") for t in out["terms"] if t and t.get("name")]
    for name in {n for n in names if names.count(n) > 1}:
        c.error("terms", f"term name {name!r} is used more than once; term names must be unique")

    if "meta" in config and config["meta"] is not None:
        if not isinstance(config["meta"], Mapping):
            c.error("meta", f"expected a mapping (free-form provenance), got {short_repr(config['meta'])}")
        else:
            out["meta"] = copy.deepcopy(dict(config["meta"]))

    if not c.errors:
        weights = [out["ce_weight"]] + ([out["kd"]["weight"]] if out["kd"] else [])
        weights += [t["weight"] for t in out["terms"]]
        if not any(w > 0 for w in weights):
            c.error("ce_weight", "the objective is empty: ce_weight, kd.weight and every term weight are zero")
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
