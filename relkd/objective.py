"""The distillation objective: CE + KD + a weighted sum of terms (relation and feature terms).

    total = ce_weight * CE(logits, y) + kd.weight * KD + sum_i weight_i * term_i

>>> objective = build_objective(load_config("best.yaml"))      # or a dict, or preset("rkd")
>>> parts = objective(student_taps, teacher_taps, targets)      # taps: {tap name: tensor}
>>> parts["total"].backward()

``parts`` holds ``"total"`` and, for every part (``ce``, ``kd`` and each term by name,
``term0``, ``term1``, ... when unnamed), the unweighted value under its name and the
weighted value under ``"<name>.weighted"`` (as in mdistiller: log every part).
The taps every model must produce are :attr:`Objective.taps`, so training loops derive
their hooks from the objective and never declare a layer twice.

Feature terms (:mod:`relkd.features`) may have parts that train with the student (FitNets'
regressor, VID's, CRD's heads and memory banks). Build them for the models' actual taps once,
then give their parameters to the optimizer; CRD also needs each sample's index::

    objective.bind(student(x0), teacher(x0), num_samples=len(train_set))
    optimizer = torch.optim.SGD([*student.parameters(), *objective.parameters()], lr=0.05)
    parts = objective(student(x), teacher(x), y, index=i)
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from .fields import ConfigError
from .files import not_a_file

from .config import load_config, tap_label, tap_pairs, validate_config
from .registry import did_you_mean
from .features import FeatureTerm
from .relation import RelationTerm
from .terms import kind_of

__all__ = ["Objective", "build_objective", "as_objective", "kd_loss", "labelled_cross_entropy", "probe_objective"]

Taps = Mapping[str, torch.Tensor]


def labelled_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled samples of a batch; a target of -1 marks an
    unlabelled one (``data.labelled``). A batch without any label gives 0 and no gradient.
    With every sample labelled it is ``F.cross_entropy(logits, targets)`` exactly, and it
    never waits for the device."""
    some = (targets >= 0).any()
    safe = torch.where(some, targets, targets.clamp(min=0))  # no NaN (0/0) when nothing is labelled
    return F.cross_entropy(logits, safe, ignore_index=-1) * some


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
        self.terms: list[RelationTerm | FeatureTerm] = [_term(t) for t in cfg["terms"]]
        self._part_names = [t.name or f"term{i}" for i, t in enumerate(self.terms)]
        self._taps = [t["tap"] for t in cfg["terms"]]  # canonical: a name, a pair or a list
        #: each term's (student layer, teacher layer) pairs; the term's value sums over them
        self.pairs: list[list[tuple[str, str]]] = [tap_pairs(t) for t in self._taps]
        #: the feature terms' methods (a list over a term's pairs): trainable parts and state, under
        #: ``t<i>_<part name>`` (``t1_fitnet``): the index keeps keys apart, the prefix off Module's attributes
        self.modules = torch.nn.ModuleDict({
            f"t{i}_{name}": t.methods[0] if len(t.methods) == 1 else torch.nn.ModuleList(t.methods)
            for i, (name, t) in enumerate(zip(self._part_names, self.terms)) if isinstance(t, FeatureTerm)
        })

    @property
    def student_taps(self) -> tuple[str, ...]:
        """Tap names the student must produce (always includes ``logits``)."""
        return tuple(dict.fromkeys(["logits"] + [s for pairs in self.pairs for s, _ in pairs]))

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        """Tap names the teacher must produce (always includes ``logits``)."""
        return tuple(dict.fromkeys(["logits"] + [t for pairs in self.pairs for _, t in pairs]))

    @property
    def taps(self) -> tuple[str, ...]:
        """Every tap name either model reads (:attr:`student_taps` and :attr:`teacher_taps`
        together; the same names when no term pairs different layers)."""
        return tuple(dict.fromkeys(self.student_taps + self.teacher_taps))

    @property
    def needs_teacher(self) -> bool:
        return self.kd is not None or bool(self.terms)

    def _feature_methods(self) -> Iterator[tuple[str, FeatureTerm, int, tuple[str, str]]]:
        """``(part name, term, pair index, (student tap, teacher tap))`` of every feature term's
        method, one per layer pair (``term.methods[pair index]``)."""
        for name, term, pairs in zip(self._part_names, self.terms, self.pairs):
            if isinstance(term, FeatureTerm):
                for i, pair in enumerate(pairs):
                    yield name, term, i, pair

    @property
    def trainable(self) -> bool:
        """Whether a term has parts that train with the student (see :meth:`bind`), or state
        (CRD's banks, SRM's dictionary): such an objective trains alone, never in a population."""
        return any(term.trainable for _, term, _, _ in self._feature_methods())

    @property
    def needs_index(self) -> bool:
        """Whether a term needs each sample's index in the training set (``index=`` in a call)."""
        return any(term.method.needs_index for _, term, _, _ in self._feature_methods())

    @property
    def bound(self) -> bool:
        """Whether every term's parts are built (:meth:`bind`); always true without trainable parts."""
        return all(term.methods[i].built for _, term, i, _ in self._feature_methods())

    def bind(self, student_taps: Taps, teacher_taps: Taps, num_samples: int | None = None) -> "Objective":
        """Build the feature terms' parts for the models' actual taps (example outputs of both
        models; only shapes and the device are read). ``num_samples``: the training set's size
        (CRD's memory banks). Terms already built are left as they are. Returns ``self``."""
        for name, term, i, (s, t) in self._feature_methods():
            term.build(_tap(student_taps, s, "student", name), _tap(teacher_taps, t, "teacher", name), num_samples,
                       pair=i)
        return self

    @property
    def needs_stage(self) -> bool:
        """Whether a term has a stage to run on the teacher's features before the student trains
        (SRM's dictionary; see :meth:`prepare_stages`)."""
        return any(term.method.needs_stage for _, term, _, _ in self._feature_methods())

    def prepare_stages(self, teacher_batches: Callable[[str], Callable[[], Iterator[torch.Tensor]]],
                       teacher_key: str | None = None) -> None:
        """Run the stages of the bound terms that have one (SRM learns its dictionary):
        ``teacher_batches(tap)()`` yields the teacher's features at ``tap`` over the training
        set; ``teacher_key`` (the teacher checkpoint and its data, hashed) makes each stage a
        cache entry, ``None`` runs it uncached."""
        for _, term, i, (_, t_tap) in self._feature_methods():
            method = term.methods[i]
            if not method.staged:
                key = method.stage_key(teacher_key, t_tap) if teacher_key is not None else None
                method.stage(teacher_batches(t_tap), key)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters of the terms (give them to the student's optimizer)."""
        return list(self.modules.parameters())

    def train(self, mode: bool = True) -> "Objective":
        """Train or eval mode of the terms' parts (CRD's banks move only in train mode)."""
        self.modules.train(mode)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The terms' trained parts and state (saved beside the student's weights)."""
        return self.modules.state_dict()

    @property
    def part_names(self) -> tuple[str, ...]:
        """Names of the parts in the returned dict, in order (``ce``, ``kd``, then the terms)."""
        return ("ce",) + (("kd",) if self.kd is not None else ()) + tuple(self._part_names)

    def __call__(
        self, student_taps: Taps, teacher_taps: Taps | None = None, targets: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
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
            add("ce", labelled_cross_entropy(s_logits, targets), self.ce_weight)
        if self.needs_teacher and teacher_taps is None:
            raise ValueError("this objective uses KD or relation terms, so it needs the teacher's taps")
        if self.kd is not None:
            t_logits = _tap(teacher_taps, "logits", "teacher").detach()
            add("kd", kd_loss(s_logits, t_logits, self.kd["temperature"]), self.kd["weight"])
        for name, term, pairs in zip(self._part_names, self.terms, self.pairs):
            values = []
            for i, (s_tap, t_tap) in enumerate(pairs):
                s = _tap(student_taps, s_tap, "student", name)
                t = _tap(teacher_taps, t_tap, "teacher", name).detach()
                values.append(term(s, t, index, pair=i) if isinstance(term, FeatureTerm) else term(s, t))
            add(name, values[0] if len(values) == 1 else torch.stack(values).sum(), term.weight)
        parts["total"] = torch.stack(weighted).sum() if len(weighted) > 1 else weighted[0]
        return parts

    def to_config(self) -> dict[str, Any]:
        """The canonical config this objective was built from (round-trips exactly)."""
        cfg: dict[str, Any] = {
            "relkd_config": 1,
            "ce_weight": self.ce_weight,
            "kd": dict(self.kd) if self.kd is not None else None,
            "terms": [{**t.to_config(), "tap": copy.deepcopy(tap)} for t, tap in zip(self.terms, self._taps)],
        }
        if self.meta is not None:
            cfg["meta"] = copy.deepcopy(self.meta)
        return cfg

    def __repr__(self) -> str:
        kd = f", kd={self.kd}" if self.kd else ""
        terms = "".join(f"\n  {t!r}" for t in self.terms)
        return f"Objective(ce_weight={self.ce_weight:g}{kd}){terms}"


def _term(t: Mapping[str, Any]) -> RelationTerm | FeatureTerm:
    """The term of a canonical term config, built by its kind (:data:`relkd.terms.TERM_KINDS`)."""
    return kind_of(t).build(t, tap_label(t["tap"]))  # the tap in words: what messages call it


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
    (B, C) for the others. Feature terms' trainable parts are built for these features (and
    a training set of 4 B samples, the batch its first). A quick check that a config builds
    and gives finite values."""
    objective = build_objective(config)
    gen = torch.Generator().manual_seed(seed)

    def taps(width: int, grad: bool) -> dict[str, torch.Tensor]:
        out = {}
        for tap in (objective.student_taps if grad else objective.teacher_taps):
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
    samples = 4 * batch_size  # a training set for CRD's memory banks; the batch is its first rows
    objective.bind(student, teacher, samples)
    objective.prepare_stages(lambda tap: lambda: iter([teacher[tap]]))  # SRM: a dictionary of this batch
    parts = objective(student, teacher, targets, index=torch.arange(batch_size))
    parts["total"].backward()
    grad_sq = sum(float(t.grad.pow(2).sum()) for t in student.values() if t.grad is not None)
    result = {k: float(v.detach()) for k, v in parts.items()}
    result["grad_norm"] = grad_sq**0.5
    return result
