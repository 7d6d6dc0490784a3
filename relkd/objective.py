"""The distillation objective: CE + KD + a weighted sum of relation terms.

    total = ce_weight * CE(logits, y) + kd.weight * KD + sum_i weight_i * term_i

>>> objective = build_objective(load_config("best.yaml"))      # or a dict, or preset("rkd")
>>> parts = objective(student_taps, teacher_taps, targets)      # taps: {tap name: tensor}
>>> parts["total"].backward()

``parts`` holds ``"total"`` and, for every part (``ce``, ``kd`` and each term by name,
``term0``, ``term1``, ... when unnamed), the unweighted value under its name and the
weighted value under ``"<name>.weighted"`` (as in mdistiller: log every part).
The taps every model must produce are :attr:`Objective.taps`, so training loops derive
their hooks from the objective and never declare a layer twice.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .fields import ConfigError
from .files import not_a_file

from .config import load_config, validate_config
from .registry import did_you_mean
from .relation import RelationTerm

__all__ = ["Objective", "build_objective", "as_objective", "kd_loss", "probe_objective"]

Taps = Mapping[str, torch.Tensor]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, mean over the batch."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"kd: the student's logits have shape {tuple(student_logits.shape)} and the teacher's "
                         f"{tuple(teacher_logits.shape)}; expected the same samples and classes on both sides")
    t = temperature
    if student_logits.dtype in (torch.float16, torch.bfloat16):  # softmax statistics in float32
        student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


class Objective:
    """A built objective config. Build it with :func:`build_objective`."""

    def __init__(self, config: Mapping[str, Any]):
        cfg = validate_config(config)
        self.ce_weight: float = cfg["ce_weight"]
        self.kd: dict[str, float] | None = cfg["kd"]
        self.meta: dict[str, Any] | None = cfg.get("meta")
        self.terms: list[RelationTerm] = [
            RelationTerm(
                t["tap"], t["affinity"], t["normalisation"], t["loss"],
                view=t["view"], weight=t["weight"], name=t.get("name"),
            )
            for t in cfg["terms"]
        ]
        self._part_names = [t.name or f"term{i}" for i, t in enumerate(self.terms)]

    @property
    def taps(self) -> tuple[str, ...]:
        """Tap names the student and teacher must both produce (always includes ``logits``)."""
        names = ["logits"] + [t.tap for t in self.terms]
        return tuple(dict.fromkeys(names))

    @property
    def needs_teacher(self) -> bool:
        return self.kd is not None or bool(self.terms)

    @property
    def part_names(self) -> tuple[str, ...]:
        """Names of the parts in the returned dict, in order (``ce``, ``kd``, then the terms)."""
        return ("ce",) + (("kd",) if self.kd is not None else ()) + tuple(self._part_names)

    def __call__(
        self, student_taps: Taps, teacher_taps: Taps | None = None, targets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        s_logits = _tap(student_taps, "logits", "student")
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []

        def add(name: str, value: torch.Tensor, weight: float) -> None:
            parts[name] = value
            parts[f"{name}.weighted"] = value * weight
            weighted.append(parts[f"{name}.weighted"])

        if targets is None:
            if self.ce_weight > 0:
                raise ValueError("the objective has ce_weight > 0, so it needs targets (class labels)")
        else:
            add("ce", F.cross_entropy(s_logits, targets), self.ce_weight)
        if self.needs_teacher and teacher_taps is None:
            raise ValueError("this objective uses KD or relation terms, so it needs the teacher's taps")
        if self.kd is not None:
            t_logits = _tap(teacher_taps, "logits", "teacher").detach()
            add("kd", kd_loss(s_logits, t_logits, self.kd["temperature"]), self.kd["weight"])
        for name, term in zip(self._part_names, self.terms):
            s = _tap(student_taps, term.tap, "student", name)
            t = _tap(teacher_taps, term.tap, "teacher", name).detach()
            add(name, term(s, t), term.weight)
        parts["total"] = torch.stack(weighted).sum() if len(weighted) > 1 else weighted[0]
        return parts

    def to_config(self) -> dict[str, Any]:
        """The canonical config this objective was built from (round-trips exactly)."""
        cfg: dict[str, Any] = {
            "relkd_config": 1,
            "ce_weight": self.ce_weight,
            "kd": dict(self.kd) if self.kd is not None else None,
            "terms": [t.to_config() for t in self.terms],
        }
        if self.meta is not None:
            cfg["meta"] = copy.deepcopy(self.meta)
        return cfg

    def __repr__(self) -> str:
        kd = f", kd={self.kd}" if self.kd else ""
        terms = "".join(f"\n  {t!r}" for t in self.terms)
        return f"Objective(ce_weight={self.ce_weight:g}{kd}){terms}"


def _tap(taps: Taps | None, tap: str, side: str, term: str | None = None) -> torch.Tensor:
    try:
        return taps[tap]  # type: ignore[index]
    except KeyError:
        who = f"term {term!r} needs" if term else "the objective needs"
        have = ", ".join(taps) if taps else "none"
        hint = did_you_mean(tap, list(taps or ())) or "."
        raise ValueError(f"{who} tap {tap!r} from the {side}{hint} The {side}'s taps are: {have}") from None


def build_objective(config: Mapping[str, Any] | str | os.PathLike) -> Objective:
    """Build an :class:`Objective` from a config dict, a YAML file path, or a preset name."""
    if isinstance(config, Mapping):
        return Objective(config)
    from .presets import PRESETS, preset

    if isinstance(config, str) and config in PRESETS:
        return Objective(preset(config))
    if Path(config).is_file():
        return Objective(load_config(config))
    presets = ", ".join(PRESETS.list())
    if Path(config).exists() or Path(config).suffix in (".yaml", ".yml") or os.sep in str(config):
        raise ConfigError([f"{not_a_file(config)}; expected an objective config file or a preset ({presets})"])
    raise ConfigError(
        [f"{str(config)!r} is neither a config file nor a preset{did_you_mean(str(config), PRESETS.list()) or '.'} "
         f"Expected a config file or one of the presets: {presets}"]
    )


def as_objective(objective: Objective | Mapping[str, Any] | str | os.PathLike) -> Objective:
    """``objective`` itself when it is already built, else :func:`build_objective` of it:
    callers that pass a built objective down are not validated again."""
    return objective if isinstance(objective, Objective) else build_objective(objective)


def probe_objective(
    config: Mapping[str, Any] | str | os.PathLike,
    batch_size: int = 64,
    student_width: int = 64,
    teacher_width: int = 256,
    num_classes: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Evaluate an objective on random features (student and teacher of different widths),
    run its backward pass, and return every part as a float plus ``grad_norm``.

    Feature maps (B, C, 7, 7) are made for taps named ``stage*`` or ``last_stage``, vectors
    (B, C) for the others. A quick check that a config builds and gives finite values."""
    objective = build_objective(config)
    gen = torch.Generator().manual_seed(seed)

    def taps(width: int, grad: bool) -> dict[str, torch.Tensor]:
        out = {}
        for tap in objective.taps:
            if tap == "logits":
                shape: tuple[int, ...] = (batch_size, num_classes)
            elif tap.startswith("stage") or tap == "last_stage":
                shape = (batch_size, width, 7, 7)
            else:
                shape = (batch_size, width)
            out[tap] = torch.randn(shape, generator=gen).requires_grad_(grad)
        return out

    student, teacher = taps(student_width, True), taps(teacher_width, False)
    targets = torch.randint(num_classes, (batch_size,), generator=gen)
    parts = objective(student, teacher, targets)
    parts["total"].backward()
    grad_sq = sum(float(t.grad.pow(2).sum()) for t in student.values() if t.grad is not None)
    result = {k: float(v.detach()) for k, v in parts.items()}
    result["grad_norm"] = grad_sq**0.5
    return result
