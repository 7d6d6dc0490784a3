"""Anchor-seeded refinement: search around the best known methods as well as the open space.

The best anchors mark where the space is known to be good (on the quick study, ``sp+kd`` is
not even inside the open space: it uses a flattened tap the space leaves out). A share of the
searched trials therefore starts from one of the ``anchors`` best completed anchors (by mean
validation accuracy over seeds) and changes it locally:

- each term's weight times ``10**u``, ``u`` in ``[-weight_decades, weight_decades]``
  (parameter ``refine.term<i>.scale``, log scale around the anchor's own weight);
- each relation term's tap and view: kept, or one the space allows (``refine.term<i>.tap`` / ``.view``;
  ``keep`` is one of the choices), except for triplet (``angle``) terms, whose cost grows with
  the width;
- KD's temperature (times 1/4 .. 4) and weight (times 1/3 .. 3) when the anchor has KD
  (``refine.kd.temperature``, ``refine.kd.weight``), and the CE weight (times 1/10 .. 10,
  ``refine.ce_weight``);
- with ``extra_term``, maybe one more relation term drawn from the open space
  (``refine.extra`` and ``refine.extra.term0.*``).

All of them are Optuna parameters of the trial, so the sampler learns the refinement like any
other part of the space, and the anchor a trial started from is its user attribute
``refined_from``. Whether a searched trial refines is decided by a hash of the study's seed
and the trial's number (``share`` of them, once an anchor has completed), so a resumed or
distributed study makes the same decision for the same trial. Every draw passes the same
validity rules as the open space (:func:`relkd.combination_problems`). In a study file::

    optuna:
      refine: {share: 0.5, anchors: 2, weight_decades: 1.0, extra_term: true}
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import validate_config
from ..fields import FieldChecker, join_path
from ..results.record import set_trial_attrs
from ..terms import term_kind, term_problems
from .space import SearchSpace

__all__ = ["Refinement", "validate_refine", "REFINE_FIELDS", "PrefixedTrial", "KEEP", "scale_term", "scale_kd_and_ce"]

REFINE_FIELDS = ("share", "anchors", "weight_decades", "extra_term")
KEEP = "keep"
#: Factors around the anchor's own values: (low, high), log-uniform.
KD_TEMPERATURE_SCALE = (0.25, 4.0)
KD_WEIGHT_SCALE = (1 / 3, 3.0)
CE_WEIGHT_SCALE = (0.1, 10.0)


def scale_term(trial: Any, term: dict[str, Any], name: str, decades: float) -> None:
    """The term's weight times ``10**u``, ``u`` in ``[-decades, decades]`` (parameter ``name``)."""
    term["weight"] *= trial.suggest_float(name, 10.0 ** -decades, 10.0 ** decades, log=True)


def scale_kd_and_ce(trial: Any, config: dict[str, Any], prefix: str) -> None:
    """KD's temperature and weight (when the config has KD) and CE's weight, each times a factor
    of :data:`KD_TEMPERATURE_SCALE`, :data:`KD_WEIGHT_SCALE` and :data:`CE_WEIGHT_SCALE`
    (parameters ``<prefix>kd.temperature``, ``<prefix>kd.weight``, ``<prefix>ce_weight``)."""
    if config.get("kd"):
        config["kd"]["temperature"] *= trial.suggest_float(f"{prefix}kd.temperature", *KD_TEMPERATURE_SCALE, log=True)
        config["kd"]["weight"] *= trial.suggest_float(f"{prefix}kd.weight", *KD_WEIGHT_SCALE, log=True)
    config["ce_weight"] *= trial.suggest_float(f"{prefix}ce_weight", *CE_WEIGHT_SCALE, log=True)


class PrefixedTrial:
    """An Optuna trial whose parameter names get a prefix (``term0.loss`` -> ``refine.extra.term0.loss``),
    so the open space's term draw can serve the refinement without clashing with its names."""

    def __init__(self, trial: Any, prefix: str):
        self.trial = trial
        self.prefix = prefix

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.trial.suggest_categorical(self.prefix + name, choices)

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> float:
        return self.trial.suggest_float(self.prefix + name, low, high, **kwargs)

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> int:
        return self.trial.suggest_int(self.prefix + name, low, high, **kwargs)


@dataclass(frozen=True)
class Refinement:
    """How much of the search refines the best anchors, and how far it may move."""

    share: float = 0.5
    anchors: int = 2
    weight_decades: float = 1.0
    extra_term: bool = True

    def describe(self) -> dict[str, Any]:
        return {"share": self.share, "anchors": self.anchors, "weight_decades": self.weight_decades,
                "extra_term": self.extra_term}

    def chooses(self, seed: int, number: int) -> bool:
        """Whether trial ``number`` refines (the same answer in every process)."""
        digest = hashlib.sha256(f"relkd.refine:{seed}:{number}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64 < self.share

    def sample(self, trial: Any, bases: Sequence[tuple[str, dict[str, Any]]],
               space: SearchSpace, *, structural_only: bool = False) -> tuple[dict[str, Any], list[str]]:
        """Draw a refinement of one of ``bases`` (the best anchors, best first: ``(name,
        config)``) through ``trial``; return the config with the rules it breaks.
        ``structural_only`` (a study that tunes its anchors): a draw that changes no tap, view
        or term breaks a rule, since its anchor's own tuning covers hyperparameter moves."""
        index = int(trial.suggest_categorical("refine.base", list(range(self.anchors))))
        name, base = bases[min(index, len(bases) - 1)]
        set_trial_attrs(trial, refined_from=name)
        config = copy.deepcopy(validate_config(base))
        taps = [KEEP, *(t for t in space.choices("tap") if t != KEEP)]
        views = [KEEP, *(v for v in space.choices("view") if v != KEEP)]
        structural = False
        for i, term in enumerate(config["terms"]):
            scale_term(trial, term, f"refine.term{i}.scale", self.weight_decades)
            if term_kind(term) != "relation":  # tap and view moves are a relation term's: others, the weight only
                continue
            if term["affinity"]["name"] == "angle":  # B^3 x width: a wider view could take minutes
                continue
            tap = trial.suggest_categorical(f"refine.term{i}.tap", taps)
            view = trial.suggest_categorical(f"refine.term{i}.view", views)
            structural |= (tap != KEEP and tap != term["tap"]) or (view != KEEP and view != term["view"])
            term["tap"] = term["tap"] if tap == KEEP else tap
            term["view"] = term["view"] if view == KEEP else view
        scale_kd_and_ce(trial, config, "refine.")
        if self.extra_term and trial.suggest_categorical("refine.extra", [False, True]):
            term, problems = space.sample_term(PrefixedTrial(trial, "refine.extra."), 0)
            if problems:
                return {}, [f"refine.extra: {problem}" for problem in problems]
            config["terms"].append(term)
            structural = True
        if structural_only and not structural:
            return {}, [f"refine: no structural change to {name} (another tap, view or term): moves of its "
                        f"hyperparameters alone are its tuned anchor's (optuna.tune_anchors)"]
        problems = [f"term{i}: {p}" for i, t in enumerate(config["terms"]) for p in term_problems(t)]
        if problems:
            return {}, problems
        config.pop("meta", None)
        for term in config["terms"]:
            term.pop("name", None)
        return validate_config(config), []


def validate_refine(c: FieldChecker, value: Any, path: str) -> Refinement | None:
    """Check an ``optuna.refine`` section; errors go to ``c`` with their field paths."""
    if not c.mapping(value, path, REFINE_FIELDS):
        return None
    share = c.number(value.get("share", 0.5), join_path(path, "share"), minimum=0.0, maximum=1.0)
    anchors = c.integer(value.get("anchors", 2), join_path(path, "anchors"), minimum=1)
    decades = c.number(value.get("weight_decades", 1.0), join_path(path, "weight_decades"), minimum=0.0,
                       strict=True, maximum=6.0)
    extra = c.boolean(value.get("extra_term", True), join_path(path, "extra_term"))
    if None in (share, anchors, decades, extra):
        return None
    return Refinement(float(share), int(anchors), float(decades), bool(extra))
