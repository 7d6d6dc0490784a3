"""Term kinds: the registry :data:`TERM_KINDS` of the kinds of term an objective sums beside CE
and KD (``relation``, the default, and ``feature``), and what every term shares: its taps.

A kind is one module: a :class:`TermKind` registered with :func:`register_kind` says which
config fields its terms have and how to check them (:func:`relkd.validate_config`), the rules
a term of valid fields may still break, how to build the term (:func:`relkd.build_objective`)
and how to name it in a few words (labels). ``relkd/relation/term.py`` and
``relkd/features/term.py`` register the two kinds relkd ships::

    @register_kind("feature", order=1)
    class FeatureKind(TermKind):
        '''Feature terms: a method on the features themselves (relkd.features).'''
        fields = ("method",)
        key = "method"
        def check(self, c, term, path, out): ...
        def build(self, term, tap): ...

In an objective config a term names its kind under ``kind``; a term without one is of
:data:`DEFAULT_KIND`, and the canonical form leaves the key out for it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .fields import FieldChecker
from .registry import Registry

__all__ = ["TERM_KINDS", "DEFAULT_KIND", "VECTOR_TAPS", "TermKind", "register_kind", "kind_names", "term_kind",
           "kind_of", "term_problems", "term_summary", "tap_pairs"]

#: The kinds of term, one :class:`TermKind` each (its ``obj``), in the order of their ``order`` property.
TERM_KINDS = Registry("term kind", bind=False)
#: The kind of a term that names none.
DEFAULT_KIND = "relation"
#: Taps every model gives as vectors (B, D), never feature maps.
VECTOR_TAPS = ("pool", "logits")


class TermKind:
    """What validation, building and labels ask of a kind of term. A kind subclasses it, sets
    :attr:`fields` and :attr:`key`, and overrides :meth:`check`, :meth:`build` and
    :meth:`summary` (and :meth:`problems` when it has rules across its fields)."""

    #: the name it is registered under (set by :func:`register_kind`)
    name: str = ""
    #: its own config fields, in canonical order: a term is ``kind, name, tap, *fields, weight``
    fields: tuple[str, ...] = ()
    #: the field that marks a term of this kind: a term with it but no ``kind`` (and without the
    #: default kind's own key) is told to add ``kind: <name>``
    key: str = ""

    def check(self, c: FieldChecker, term: Mapping[str, Any], path: str, out: dict[str, Any]) -> None:
        """Check the kind's own fields of ``term`` (a mapping of allowed fields) into ``out`` in
        canonical form; ``out`` holds ``name`` and ``tap`` already (``tap`` ``None`` when it is
        invalid). Errors go to ``c`` with their field paths."""
        raise NotImplementedError

    def problems(self, term: Mapping[str, Any]) -> list[str]:
        """The rules a term whose fields are each valid still breaks (empty: none)."""
        return []

    def build(self, term: Mapping[str, Any], tap: str) -> Any:
        """The term of a canonical ``term`` config; ``tap`` is its tap in words (what its messages
        call it). The term has ``name``, ``weight`` and ``to_config()`` (the canonical config
        less ``tap``), and ``term(student, teacher)`` is its unweighted loss."""
        raise NotImplementedError

    def summary(self, term: Mapping[str, Any]) -> str:
        """A term in a few words for labels (``euclidean/mean/smooth_l1``, ``fitnet``); ``term``
        may be a stored mapping that was never validated: a missing field shows, never raises."""
        raise NotImplementedError


def register_kind(name: str, *, order: int) -> Callable[[type[TermKind]], type[TermKind]]:
    """Register an instance of the decorated :class:`TermKind` subclass in :data:`TERM_KINDS` as
    ``name`` (its description: the class docstring's first line); ``order`` places it in
    :func:`kind_names`."""

    def decorator(cls: type[TermKind]) -> type[TermKind]:
        kind = cls()
        kind.name = name
        TERM_KINDS.add(name, kind, order=order)  # type: ignore[arg-type]
        return cls

    return decorator


def kind_names() -> tuple[str, ...]:
    """The registered kinds' names in their ``order`` (``relation``, ``feature``)."""
    return tuple(sorted(TERM_KINDS.list(), key=lambda name: TERM_KINDS.get(name).property("order", default=0)))


def term_kind(term: Mapping[str, Any]) -> Any:
    """The ``kind`` a term config names (:data:`DEFAULT_KIND` when it names none)."""
    return term.get("kind", DEFAULT_KIND)


def kind_of(term: Mapping[str, Any]) -> TermKind:
    """The :class:`TermKind` of a valid term config."""
    return TERM_KINDS.get(term_kind(term)).obj  # type: ignore[return-value]


def term_problems(term: Mapping[str, Any]) -> list[str]:
    """The rules a term whose fields are each valid still breaks (:meth:`TermKind.problems`)."""
    return kind_of(term).problems(term)


def term_summary(term: Mapping[str, Any]) -> str:
    """A term config in a few words (:meth:`TermKind.summary`); a stored term of a kind not
    registered is read as one of :data:`DEFAULT_KIND`."""
    kind = term_kind(term)
    known = isinstance(kind, str) and kind in TERM_KINDS
    return TERM_KINDS.get(kind if known else DEFAULT_KIND).obj.summary(term)  # type: ignore[attr-defined]


def tap_pairs(tap: Any) -> list[tuple[str, str]]:
    """The (student layer, teacher layer) pairs of a canonical ``tap``."""
    if isinstance(tap, list):
        return [pair for t in tap for pair in tap_pairs(t)]
    if isinstance(tap, Mapping):
        return [(tap["student"], tap["teacher"])]
    return [(tap, tap)]
