"""Term kinds are registered (relkd.terms.TERM_KINDS): a third kind is one module. A throw-away
kind registered in a fixture (and gone after it) is validated, built into an objective whose
loss is finite, and labelled, with no other change to relkd."""
from __future__ import annotations

import math
from typing import Any, Mapping

import pytest
import torch

from relkd.config import validate_config
from relkd.fields import ConfigError, FieldChecker, join_path
from relkd.objective import build_objective
from relkd.results.pareto import composition_summary
from relkd.study.dimensions import drawn_kinds
from relkd.terms import DEFAULT_KIND, TERM_KINDS, TermKind, kind_names, register_kind, term_summary


class GramTerm:
    """The toy kind's term: the mean squared difference of the two sides' (B, B) Gram matrices."""

    def __init__(self, tap: str, scale: float, weight: float, name: str | None):
        self.tap, self.scale, self.weight, self.name = tap, scale, weight, name

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, t = student.flatten(1), teacher.flatten(1)
        return self.scale * (s @ s.T / s.shape[1] - t @ t.T / t.shape[1]).pow(2).mean()

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"kind": "gram"}
        if self.name is not None:
            cfg["name"] = self.name
        cfg.update(tap=self.tap, scale=self.scale, weight=self.weight)
        return cfg


@pytest.fixture
def gram_kind(monkeypatch):
    """The kind ``gram`` (one field, ``scale``), registered for one test."""
    monkeypatch.setattr(TERM_KINDS, "_entries", dict(TERM_KINDS._entries))  # the registry as it was, afterwards

    @register_kind("gram", order=9)
    class GramKind(TermKind):
        """Gram terms: the samples' Gram matrices compared (a throw-away kind for the tests)."""

        fields = ("scale",)
        key = "scale"

        def check(self, c: FieldChecker, term: Mapping[str, Any], path: str, out: dict[str, Any]) -> None:
            out["scale"] = c.number(term.get("scale", 1.0), join_path(path, "scale"), strict=True)

        def build(self, term: Mapping[str, Any], tap: str) -> GramTerm:
            return GramTerm(tap, term["scale"], term["weight"], term.get("name"))

        def summary(self, term: Mapping[str, Any]) -> str:
            return f"gram x{term.get('scale')}"

    return GramKind


def test_the_shipped_kinds_are_registered_in_order():
    assert kind_names() == ("relation", "feature")
    assert DEFAULT_KIND == kind_names()[0]
    assert drawn_kinds() == ("relation", "feature")
    for name in kind_names():
        kind = TERM_KINDS.get(name).obj
        assert isinstance(kind, TermKind) and kind.name == name and kind.key in kind.fields


def test_a_third_kind_is_validated_built_and_labelled(gram_kind):
    config = {"terms": [{"kind": "gram", "tap": "pool", "scale": 2, "weight": 0.5}], "kd": {"weight": 1.0}}
    canonical = validate_config(config)
    assert canonical["terms"] == [{"kind": "gram", "tap": "pool", "scale": 2.0, "weight": 0.5}]
    assert kind_names() == ("relation", "feature", "gram")

    objective = build_objective(canonical)
    assert objective.to_config() == canonical
    assert objective.taps == ("logits", "pool")
    gen = torch.Generator().manual_seed(0)
    student = {"logits": torch.randn(4, 3, generator=gen), "pool": torch.randn(4, 8, generator=gen, requires_grad=True)}
    teacher = {"logits": torch.randn(4, 3, generator=gen), "pool": torch.randn(4, 16, generator=gen)}
    parts = objective(student, teacher, torch.tensor([0, 1, 2, 0]))
    assert set(parts) >= {"total", "ce", "kd", "term0", "term0.weighted"}
    assert all(math.isfinite(float(v.detach())) for v in parts.values())
    parts["total"].backward()
    assert student["pool"].grad is not None and torch.isfinite(student["pool"].grad).all()

    assert term_summary(canonical["terms"][0]) == "gram x2.0"
    assert composition_summary(canonical) == "kd + gram x2.0"
    # the search space draws only the kinds it has fields for
    assert drawn_kinds() == ("relation", "feature")


def test_a_third_kinds_fields_are_checked_with_their_paths(gram_kind):
    with pytest.raises(ConfigError) as err:
        validate_config({"terms": [{"kind": "gram", "tap": "pool", "scale": -1.0}]})
    assert "terms[0].scale" in str(err.value)
    with pytest.raises(ConfigError, match=r"terms\[0\]\.method: unknown field; allowed fields: kind, name, tap, "
                                          r"scale, weight"):
        validate_config({"terms": [{"kind": "gram", "tap": "pool", "method": "at"}]})
    with pytest.raises(ConfigError, match="a term with a scale .* is a gram term; add kind: gram"):
        validate_config({"terms": [{"tap": "pool", "scale": 1.0}]})
    with pytest.raises(ConfigError, match=r"expected one of relation, feature, gram \(relation when left out\)"):
        validate_config({"terms": [{"kind": "grams", "tap": "pool"}]})


def test_the_kind_is_gone_after_its_test():
    assert "gram" not in TERM_KINDS
    with pytest.raises(ConfigError, match=r"expected one of relation, feature \(relation when left out\), got 'gram'"):
        validate_config({"terms": [{"kind": "gram", "tap": "pool", "scale": 1.0}]})
