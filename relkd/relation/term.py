"""A relation term: tap -> view -> affinity -> normalisation -> loss, with a weight.

Applied to the student's and the teacher's features at the same tap (layer name). The
relation matrices are B x B (or B x B x B), so student and teacher widths never need to
match. Relations are computed in float32 (with autocast off) whatever the features'
dtype: they are small and their logarithms and divisions need the precision.

:class:`RelationKind` registers relation terms as the term kind ``relation`` (the default kind,
:data:`relkd.terms.TERM_KINDS`): their config fields, validation and building.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..fields import FieldChecker, join_path
from ..registry import Component, Registry, unknown_name_message
from ..terms import TermKind, register_kind
from .affinity import AFFINITIES
from .loss import LOSSES
from .normalise import NORMALISATIONS
from .rules import combination_problems

VIEWS = Registry("view", bind=True)

#: The rank of a transformer's token features (B, N, D): N tokens (a class token first, where the
#: model has one) of width D. Feature maps are (B, C, H, W), vectors (B, D).
TOKENS_RANK = 3


@VIEWS.register("flatten")
def flatten(x: torch.Tensor) -> torch.Tensor:
    """Each sample flattened to a vector (SP on feature maps). (B, ...) -> (B, prod(...))."""
    return x.flatten(1)


@VIEWS.register("avgpool")
def avgpool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool over positions: maps (B, C, H, W) -> (B, C); tokens (B, N, D) -> (B, D),
    the mean over tokens; (B, D) unchanged."""
    if x.dim() == TOKENS_RANK:
        return x.mean(dim=1)
    return x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x


@VIEWS.register("maxpool")
def maxpool(x: torch.Tensor) -> torch.Tensor:
    """Global max pool over positions: maps (B, C, H, W) -> (B, C); tokens (B, N, D) -> (B, D),
    the maximum over tokens; (B, D) unchanged."""
    if x.dim() == TOKENS_RANK:
        return x.amax(dim=1)
    return x.flatten(2).amax(dim=2) if x.dim() > 2 else x


@VIEWS.register("auto")
def auto(x: torch.Tensor) -> torch.Tensor:
    """Chosen by rank: (B, D) -> (B, D) as it is; feature maps (B, C, H, W) -> (B, C) average-pooled;
    token features (B, N, D) -> (B, D), the mean over tokens."""
    return avgpool(x)


@VIEWS.register("cls", tokens=True)
def cls(x: torch.Tensor) -> torch.Tensor:
    """A transformer's class token: tokens (B, N, D) -> (B, D), the first token (a ViT's ``[CLS]``);
    maps and vectors as ``auto`` (so a ViT teacher's class token meets a CNN student's pooled
    map). It differs from ``auto`` only on token features, so a search's ``view: all`` leaves it
    out: list it to search it on a transformer."""
    return x[:, 0] if x.dim() == TOKENS_RANK else auto(x)


def views_for_every_tap() -> list[str]:
    """The views a search's ``view: all`` means: all but those that differ from another only on
    token features (``cls``)."""
    return [n for n in VIEWS.list() if not VIEWS.get(n).property("tokens")]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def in_float32(fn: Callable[..., torch.Tensor], student: torch.Tensor, teacher: torch.Tensor,
               *args: Any) -> torch.Tensor:
    """``fn(student, teacher, *args)`` in float32 with autocast off when either side is half
    precision or autocast is on (a term's logarithms and divisions need the precision); as
    it is otherwise. Relation and feature terms both compute through it."""
    device_type = student.device.type
    if student.dtype in _LOW_PRECISION or teacher.dtype in _LOW_PRECISION or torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(student.float(), teacher.float(), *args)
    return fn(student, teacher, *args)


class RelationTerm:
    """One relation-matching loss term.

    >>> term = RelationTerm("pool", "euclidean", "mean", {"name": "smooth_l1", "beta": 1.0}, weight=25.0)
    >>> loss = term(student_features, teacher_features)   # unweighted scalar

    Components are registry names or ``{"name": ..., **params}`` mappings. Building an
    invalid combination raises ``ValueError`` naming the term and the broken rule.
    """

    def __init__(
        self,
        tap: str,
        affinity: str | Mapping[str, Any],
        normalisation: str | Mapping[str, Any] = "none",
        loss: str | Mapping[str, Any] = "mse",
        *,
        view: str = "auto",
        weight: float = 1.0,
        name: str | None = None,
    ):
        self.tap = tap
        self.name = name
        self.weight = float(weight)
        self.view: Component = VIEWS.create(view)
        self.affinity: Component = AFFINITIES.from_spec(affinity)
        self.normalisation: Component = NORMALISATIONS.from_spec(normalisation)
        self.loss: Component = LOSSES.from_spec(loss)
        problems = combination_problems(
            self.affinity.to_config(), self.normalisation.to_config(), self.loss.to_config()
        )
        if problems:
            raise ValueError(f"relation term {name or tap!r}: " + "; ".join(problems))

    def relation(self, features: torch.Tensor) -> torch.Tensor:
        """The normalised relation matrix of a batch of features at this term's tap."""
        if features.dim() < 2:
            raise ValueError(
                f"relation term {self.name or self.tap!r}: tap {self.tap!r} gave a tensor of shape "
                f"{tuple(features.shape)}; a tap must be at least (B, D)"
            )
        return self.normalisation(self.affinity(self.view(features)))

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Unweighted loss between the student's and the teacher's relations."""
        self._check_batches(student, teacher)
        return in_float32(lambda s, t: self.loss(self.relation(s), self.relation(t)), student, teacher)

    def _check_batches(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        """Relations compare the same samples on both sides: same batch, at least 2 samples."""
        where = f"term {self.name!r} at tap {self.tap!r}" if self.name else f"the term at tap {self.tap!r}"
        if student.dim() == 0 or teacher.dim() == 0:
            raise ValueError(f"{where}: expected batched features (B, ...), got a scalar")
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f"{where}: the student's batch has {student.shape[0]} samples and the teacher's "
                             f"{teacher.shape[0]}; expected the same samples on both sides")
        if student.shape[0] < 2:
            raise ValueError(f"{where}: a batch of {student.shape[0]} sample(s); relations between samples "
                             f"expected a batch of at least 2")

    def to_config(self) -> dict[str, Any]:
        """This term in the config format (canonical: every parameter spelled out)."""
        cfg: dict[str, Any] = {} if self.name is None else {"name": self.name}
        cfg.update(
            tap=self.tap,
            view=self.view.name,
            affinity=self.affinity.to_config(),
            normalisation=self.normalisation.to_config(),
            loss=self.loss.to_config(),
            weight=self.weight,
        )
        return cfg

    def __repr__(self) -> str:
        return (
            f"RelationTerm({self.name or ''} tap={self.tap!r}, view={self.view.name}, {self.affinity!r}, "
            f"{self.normalisation!r}, {self.loss!r}, weight={self.weight:g})"
        )


@register_kind("relation", order=0)
class RelationKind(TermKind):
    """Relation terms: tap -> view -> affinity -> normalisation -> loss on a B x B matrix (the default kind)."""

    fields = ("view", "affinity", "normalisation", "loss")
    key = "affinity"

    def check(self, c: FieldChecker, term: Mapping[str, Any], path: str, out: dict[str, Any]) -> None:
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

    def problems(self, term: Mapping[str, Any]) -> list[str]:
        return combination_problems(term["affinity"], term["normalisation"], term["loss"])

    def build(self, term: Mapping[str, Any], tap: str) -> RelationTerm:
        return RelationTerm(tap, term["affinity"], term["normalisation"], term["loss"], view=term["view"],
                            weight=term["weight"], name=term.get("name"))

    def summary(self, term: Mapping[str, Any]) -> str:
        return "/".join(str(term.get(k, {}).get("name")) for k in ("affinity", "normalisation", "loss"))
