"""A feature term: a tap, a feature method (:data:`relkd.features.FEATURES`) and a weight.

In an objective config a feature term is marked ``kind: feature``; it names its tap and
weight as a relation term does::

    - kind: feature
      name: crd
      tap: pool
      method: {name: crd, feat_dim: 128, negatives: 16384, temperature: 0.07, momentum: 0.5}
      weight: 0.8

Feature methods compare vectors (B, D) or maps (B, C, H, W): a transformer's token features
(B, N, D) are read as their mean over tokens (B, D), so map-only methods (AT, ...) refuse them
with the tap named. Like relation terms, feature terms compute in float32 with autocast off whatever the
features' dtype. :class:`FeatureKind` registers them as the term kind ``feature``
(:data:`relkd.terms.TERM_KINDS`): their config fields, validation and building.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..fields import FieldChecker, join_path
from ..registry import split_spec
from ..relation.term import TOKENS_RANK, in_float32
from ..terms import VECTOR_TAPS, TermKind, register_kind, tap_pairs
from .methods import FEATURES, FeatureMethod

__all__ = ["FeatureTerm", "FeatureKind", "MAP_TAPS_HINT", "feature_problems"]

MAP_TAPS_HINT = "a stage tap such as stage2 or last_stage"


class FeatureTerm:
    """One feature-level loss term.

    >>> term = FeatureTerm("stage2", {"name": "at"}, weight=1000.0)
    >>> loss = term(student_features, teacher_features)   # unweighted scalar

    A method with trainable parts (FitNets, VID, CRD) is built for the actual shapes with
    :meth:`build` before its first call; its module is :attr:`method`.
    """

    kind = "feature"

    def __init__(self, tap: str, method: str | Mapping[str, Any], *, weight: float = 1.0, name: str | None = None,
                 pairs: int = 1):
        self.tap = tap
        self.name = name
        self.weight = float(weight)
        method_name, params = split_spec(method)
        self.entry = FEATURES.get(method_name)
        self.params = self.entry.resolve_params(params)
        #: one method (with its own trainable parts) per layer pair the term reads
        self.methods: list[FeatureMethod] = [self.entry.obj(**self.params) for _ in range(max(pairs, 1))]

    @property
    def method(self) -> FeatureMethod:
        """The method of the first (or only) layer pair."""
        return self.methods[0]

    @property
    def label(self) -> str:
        where = f"at tap {self.tap!r}"
        return f"term {self.name!r} {where}" if self.name else f"the {self.entry.name} term {where}"

    @property
    def trainable(self) -> bool:
        """Whether the method has parts that train with the student (and must join its optimizer)."""
        return self.method.has_parts()

    def build(self, student: torch.Tensor, teacher: torch.Tensor, num_samples: int | None = None,
              pair: int = 0) -> None:
        """Make the parts of layer pair ``pair``'s method for these example features (no-op once built)."""
        method = self.methods[pair]
        if method.built:
            return
        student, teacher = as_features(student), as_features(teacher)
        self._check(student, teacher)
        try:
            method.build(student.detach().float(), teacher.detach().float(), num_samples)
        except ValueError as err:
            raise ValueError(f"{self.label}: {err}") from None

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, index: torch.Tensor | None = None,
                 pair: int = 0) -> torch.Tensor:
        """Unweighted loss between the student's and the teacher's features (of layer pair ``pair``)."""
        student, teacher = as_features(student), as_features(teacher)
        self._check(student, teacher)
        method = self.methods[pair]
        if not method.built:
            raise RuntimeError(f"{self.label}: the {self.entry.name} method has trainable parts; build them for "
                               f"the models first (objective.bind(student_taps, teacher_taps, num_samples)) and "
                               f"give objective.parameters() to the optimizer")
        try:
            return in_float32(method, student, teacher, index)
        except ValueError as err:
            raise ValueError(f"{self.label}: {err}") from None

    def _check(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        if student.dim() == 0 or teacher.dim() == 0 or student.shape[0] != teacher.shape[0]:
            raise ValueError(f"{self.label}: the student's features have shape {tuple(student.shape)} and the "
                             f"teacher's {tuple(teacher.shape)}; expected the same samples (B, ...) on both sides")
        if self.method.needs_map and (student.dim() != 4 or teacher.dim() != 4):
            raise ValueError(f"{self.label}: {self.entry.name} compares feature maps (B, C, H, W); the student's "
                             f"tap gave {tuple(student.shape)} and the teacher's {tuple(teacher.shape)}; use "
                             f"{MAP_TAPS_HINT}")

    def to_config(self) -> dict[str, Any]:
        """This term in the config format (canonical: every parameter spelled out)."""
        cfg: dict[str, Any] = {"kind": "feature"}
        if self.name is not None:
            cfg["name"] = self.name
        cfg.update(tap=self.tap, method={"name": self.entry.name, **self.params}, weight=self.weight)
        return cfg

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (f"FeatureTerm({self.name or ''} tap={self.tap!r}, {self.entry.name}({params}), "
                f"weight={self.weight:g})")


def as_features(x: torch.Tensor) -> torch.Tensor:
    """What a feature method reads of a tap: token features (B, N, D) as their mean over tokens
    (B, D); vectors and maps as they are."""
    return x.mean(dim=1) if x.dim() == TOKENS_RANK else x


def feature_problems(method: str, tap: Any) -> list[str]:
    """Why feature method ``method`` cannot read ``tap`` (a name, pair or list; empty: it can)."""
    pairs = tap_pairs(tap)
    if FEATURES.get(method).property("map"):
        flat = sorted({name for pair in pairs for name in pair if name in VECTOR_TAPS})
        return [f"{method} compares feature maps (B, C, H, W); tap {name!r} has no spatial dimensions (it is "
                f"(B, D)); use {MAP_TAPS_HINT}" for name in flat]
    return [f"{method} compares a student tap with a teacher tap of the same kind; {s!r} and {t!r} are one a "
            f"vector (B, D) and one a feature map" for s, t in pairs if (s in VECTOR_TAPS) != (t in VECTOR_TAPS)]


@register_kind("feature", order=1)
class FeatureKind(TermKind):
    """Feature terms: a method on the features themselves (relkd.features), marked kind: feature."""

    fields = ("method",)
    key = "method"

    def check(self, c: FieldChecker, term: Mapping[str, Any], path: str, out: dict[str, Any]) -> None:
        if "method" not in term:
            c.error(join_path(path, "method"), f"missing; choose one of {', '.join(FEATURES.list())}")
            return
        out["method"] = method = c.component(term["method"], join_path(path, "method"), FEATURES)
        if method is not None and out["tap"] is not None:
            for problem in feature_problems(method["name"], out["tap"]):
                c.error(join_path(path, "tap"), problem)

    def problems(self, term: Mapping[str, Any]) -> list[str]:
        return feature_problems(term["method"]["name"], term["tap"])

    def build(self, term: Mapping[str, Any], tap: str) -> FeatureTerm:
        return FeatureTerm(tap, term["method"], weight=term["weight"], name=term.get("name"),
                           pairs=len(tap_pairs(term["tap"])))

    def summary(self, term: Mapping[str, Any]) -> str:
        return str(term.get("method", {}).get("name"))
