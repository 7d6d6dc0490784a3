"""Population training: K students of the setting's architecture, each with its own objective
config, trained at once on the same batches, sharing the teacher's taps per batch.

    results = run_population(setting, ["sp+kd", "rkd", "none"], seed=0,
                             report=lambda member, epoch, acc: False)

Every member is what :func:`relkd.engine.run_trial` would train for its config and seed: the
same initial weights (one seed for all), the same shuffled batches, the same teacher outputs
(from the teacher-output cache exactly as :func:`~relkd.engine.training.fit` gets them, or
the teacher run live once per batch), and its own optimizer state and learning-rate schedule
built by :func:`~relkd.engine.training.make_optimizer`. Each step is fit's own
(:func:`~relkd.engine.training.train_step`), with K students instead of one.

Three engines train the members (``engine``):

- ``fold`` (:mod:`relkd.engine.fold`): the K students as one channel-folded network, every
  convolution grouped K ways; for networks of convolutions, batch norms and linear layers
  (checked on a probe batch before use);
- ``vmap``: the members' parameters and buffers stacked along a first
  dimension of size K and one forward/backward with :func:`torch.vmap` over
:func:`torch.func.functional_call` of the student. BatchNorm in training mode works there
because its running statistics are stacked too (each member updates its own slice in place).
One optimizer over the stacked tensors is the same as one optimizer per member because SGD
(momentum, Nesterov, weight decay) and AdamW act elementwise and every member shares the
recipe, so the same schedule; the parameter groups (``body_lr_scale``) are those of
:func:`~relkd.engine.training.param_groups`. The loss is the sum of the members' totals: each
member's gradient is that of its own loss. A member that leaves (``report`` returns true, or
its loss goes non-finite) is cut out of the stacked parameters, buffers and optimizer state;
the others go on undisturbed;
- ``loop``: K separate models in a Python loop (the baseline), still sharing the data and the
  teacher.

``auto`` (the default) is ``loop`` on the CPU, where benchmarks/population.py measured it
fastest (on 2 cores a training step is arithmetic, not overhead: folded and vmapped
populations were no faster than separate trials, the loop about 1.1x, by sharing the data,
the teacher's outputs and the set-up); on an accelerator it folds where the student folds
and uses ``vmap`` elsewhere (fewer, larger kernels; not yet measured).
"""
from __future__ import annotations

import copy
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..data import DeviceLoader
from ..models import TappedModel
from ..objective import Objective, as_objective
from ..setting import Recipe, Setting, resolve_device
from .build import build_model, load_data
from .device import grad_scaler, tf32
from .fold import FoldedStudents, FoldError
from .result import RunResult
from .curves import Curve, learning_rate
from .teacher import TeacherResult, get_teacher
from .training import (NonFiniteLossError, PartSums, TeacherTaps, check_interval, evaluate, make_optimizer,
                       member_accuracies, optimizer_step, progress_bar, train_loader, train_step)

__all__ = ["PopulationReport", "run_population", "FusedStudents", "LoopStudents", "make_students", "ENGINES"]

log = logging.getLogger(__name__)

#: ``report(member_index, epoch, val_accuracy)``: a truthy return stops that member (a pruner).
PopulationReport = Callable[[int, int, float], Any]

ObjectiveLike = Objective | Mapping[str, Any] | str


class FusedStudents:
    """K copies of ``template`` as stacked parameters and buffers, run with ``vmap``.

    ``template`` gives the structure (and the training mode) only; its own weights are not
    used. The stacked parameters live in ``twin``, a copy of the template whose parameters
    are the stacked leaves, so that :func:`make_optimizer` builds the optimizer (and its
    groups) exactly as for one model."""

    def __init__(self, template: TappedModel, count: int, recipe: Recipe, steps: int, precision: str = "auto"):
        self.template = template
        self.precision = precision
        self.twin = copy.deepcopy(template)
        with torch.no_grad():
            for name, param in template.named_parameters():
                owner, _, leaf = name.rpartition(".")
                stacked = torch.stack([param.detach()] * count).contiguous()
                setattr(self.twin.get_submodule(owner), leaf, nn.Parameter(stacked, requires_grad=param.requires_grad))
            self.buffers = {name: torch.stack([b.detach()] * count).contiguous()
                            for name, b in template.named_buffers()}
        self.opt, self.sched = make_optimizer(self.twin, recipe, steps)
        self.scaler = grad_scaler(self.device, precision)

    def _call(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
              taps: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return functional_call(self.template, (params, buffers), (x,), {"taps": taps})

    def forward(self, x: torch.Tensor, taps: tuple[str, ...]) -> list[dict[str, torch.Tensor]]:
        """Every member's taps for the batch ``x`` (training mode, running statistics updated)."""
        self.template.train()
        params = dict(self.twin.named_parameters())
        out = torch.vmap(self._call, in_dims=(0, 0, None, None), randomness="different")(params, self.buffers, x, taps)
        count = next(iter(out.values())).shape[0]
        return [{t: v[k] for t, v in out.items()} for k in range(count)]

    def step(self, total: torch.Tensor) -> None:
        """One optimizer and schedule step on the sum of the members' losses."""
        optimizer_step(self.opt, self.sched, self.scaler, total)

    def lr(self) -> float:
        """The learning rate now (every member follows the same schedule)."""
        return learning_rate(self.opt)

    def evaluate(self, loader: DeviceLoader) -> list[float]:
        """Top-1 accuracy of every member over ``loader`` (in [0, 1]): one vmapped pass per
        batch on an accelerator; on the CPU each member on its own (measured faster there:
        vmap's layout copies cost more than they save without kernel launches to amortise)."""
        if loader.device.type == "cpu":
            return [evaluate(self.export(k), loader, self.precision) for k in range(self.count)]
        return self.evaluate_fused(loader)

    @property
    def count(self) -> int:
        """Members in the population now."""
        return next(self.twin.parameters()).shape[0]

    def evaluate_fused(self, loader: DeviceLoader) -> list[float]:
        self.template.eval()
        params = {name: p.detach() for name, p in self.twin.named_parameters()}
        vmapped = torch.vmap(self._call, in_dims=(0, 0, None, None), randomness="different")
        try:
            return member_accuracies(loader, lambda x: vmapped(params, self.buffers, x, ("logits",))["logits"],
                                     self.precision)
        finally:
            self.template.train()

    def keep(self, positions: Sequence[int]) -> None:
        """Keep only the members at ``positions``: their slices of the parameters, buffers and
        optimizer state become new leaves (autograd caches a leaf's shape, so a leaf's data
        cannot shrink in place); the schedule goes on where it was."""
        index = torch.as_tensor(list(positions), dtype=torch.long, device=self.device)
        replaced: dict[int, nn.Parameter] = {}
        with torch.no_grad():
            for name, old in list(self.twin.named_parameters()):
                new = nn.Parameter(old.detach().index_select(0, index), requires_grad=old.requires_grad)
                owner, _, leaf = name.rpartition(".")
                setattr(self.twin.get_submodule(owner), leaf, new)
                state = self.opt.state.pop(old, None)
                if state is not None:
                    self.opt.state[new] = {key: value.index_select(0, index)
                                           if isinstance(value, torch.Tensor) and value.shape == old.shape else value
                                           for key, value in state.items()}
                replaced[id(old)] = new
            for group in self.opt.param_groups:
                group["params"] = [replaced.get(id(p), p) for p in group["params"]]
            self.buffers = {name: b.index_select(0, index) for name, b in self.buffers.items()}

    @property
    def device(self) -> torch.device:
        return next(self.twin.parameters()).device

    def export(self, position: int) -> TappedModel:
        """A standalone model with the weights of the member at ``position``."""
        model = copy.deepcopy(self.template)
        state = {name: p.detach()[position].clone() for name, p in self.twin.named_parameters()}
        state.update({name: b[position].clone() for name, b in self.buffers.items()})
        model.load_state_dict(state, strict=False)
        return model


class LoopStudents:
    """The baseline: K separate copies of ``template``, each with its own optimizer and
    schedule, run one after the other on each batch."""

    def __init__(self, template: TappedModel, count: int, recipe: Recipe, steps: int, precision: str = "auto"):
        self.precision = precision
        self.models = [copy.deepcopy(template) for _ in range(count)]
        self.optimizers = [make_optimizer(model, recipe, steps) for model in self.models]
        device = next(template.parameters()).device
        self.scaler = grad_scaler(device, precision)  # one scaler: the members' losses are summed

    def forward(self, x: torch.Tensor, taps: tuple[str, ...]) -> list[dict[str, torch.Tensor]]:
        out = []
        for model in self.models:
            model.train()
            out.append(model(x, taps=taps))
        return out

    def step(self, total: torch.Tensor) -> None:
        for opt, _ in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        for opt, sched in self.optimizers:
            self.scaler.step(opt)
            sched.step()
        self.scaler.update()

    def evaluate(self, loader: DeviceLoader) -> list[float]:
        return [evaluate(model, loader, self.precision) for model in self.models]

    def lr(self) -> float:
        return learning_rate(self.optimizers[0][0])

    def keep(self, positions: Sequence[int]) -> None:
        self.models = [self.models[p] for p in positions]
        self.optimizers = [self.optimizers[p] for p in positions]

    def export(self, position: int) -> TappedModel:
        return self.models[position]


@dataclass(eq=False)
class _Member:
    """One member's objective and what it has done so far (its loss parts in ``parts``)."""

    index: int
    objective: Objective
    parts: PartSums
    history: list[float] = field(default_factory=list)
    stopped: str | None = None
    stopped_early: bool = False
    error: str | None = None
    left_at: float | None = None
    model: TappedModel | None = None
    curve: Curve = field(init=False)

    def __post_init__(self) -> None:
        self.curve = Curve(self.parts)

    def fail(self, err: NonFiniteLossError) -> None:
        """Record why the loss went non-finite (the part ``err`` names)."""
        self.stopped, self.error = f"non-finite: {err.part}", str(err)


def _teacher_taps(members: Sequence[_Member]) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for m in members:
        if m.objective.needs_teacher:
            names.update(dict.fromkeys(m.objective.teacher_taps))
    return tuple(names)


ENGINES = ("auto", "fold", "vmap", "loop")


def _on_cpu(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device.type == "cpu"


def make_students(engine: str, template: TappedModel, count: int, recipe: Recipe, steps: int,
                  precision: str = "auto") -> FusedStudents | FoldedStudents | LoopStudents:
    """The members' engine (see the module)."""
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto" and _on_cpu(template):
        engine = "loop"
    if engine in ("auto", "fold"):
        try:
            return FoldedStudents(template, count, recipe, steps, precision)
        except FoldError as err:
            if engine == "fold":
                raise
            log.debug("population: %s; using vmap", err)
    if engine == "loop":
        return LoopStudents(template, count, recipe, steps, precision)
    return FusedStudents(template, count, recipe, steps, precision)


def _with_tf32(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run(setting, ...)`` with the setting's TensorFloat-32 choice on its device."""
    @functools.wraps(run)
    def wrapped(setting: Setting, *args: Any, **kwargs: Any) -> Any:
        with tf32(resolve_device(setting.device), setting.tf32):
            return run(setting, *args, **kwargs)
    return wrapped


@_with_tf32
def run_population(
    setting: Setting,
    configs: Sequence[ObjectiveLike],
    *,
    seed: int | None = 0,
    report: PopulationReport | None = None,
    teacher: TeacherResult | None = None,
    progress: bool = False,
    engine: str = "auto",
    teacher_cache: bool = True,
    return_models: bool = False,
) -> list[RunResult]:
    """Train one student per objective config at once and return one result per config.

    ``seed`` (``None``: the setting's) seeds every member's initial weights and the batch
    order, as :func:`relkd.engine.run_trial` does. After each epoch ``report(member_index,
    epoch, val_accuracy)`` is called for every member still training; a truthy return stops
    that member. A member whose loss becomes NaN or inf leaves with its reason; the others
    go on. ``engine``: ``auto``, ``fold``, ``vmap`` or ``loop`` (see the module).

    Each :class:`RunResult` has ``member``, ``objective_config``, ``seed``, ``val_accuracy`` (last epoch,
    ``None`` if it left before one), ``val_history``, ``epochs``, ``stopped`` (``None``,
    ``"pruned"`` or ``"non-finite: PART"``), ``stopped_early``, ``error`` (the full message of
    a non-finite loss), ``part_means``, ``train_seconds`` and ``wall_seconds`` (from the start
    of the population until the member left), ``samples_per_second``, ``population`` (K) and,
    when the student starts from a checkpoint, ``init_sha256``; with ``return_models``,
    ``model`` (its weights when it left).
    """
    start = time.perf_counter()
    if not configs:
        return []
    seed = setting.seed if seed is None else seed
    objectives = [as_objective(c) for c in configs]
    trainable = [i for i, o in enumerate(objectives) if o.trainable]
    if trainable:
        raise ValueError(f"run_population: the objectives of members {trainable} have feature terms with parts "
                         f"that train with the student or need sample indices; train them with run_trial")
    labels_only = [i for i, o in enumerate(objectives) if not o.needs_teacher]
    if setting.data.labelled is not None and labels_only:
        raise ValueError(f"run_population: with data.labelled the members {labels_only} without a teacher train on "
                         f"the labelled samples only, on their own loader; train them with run_trial")
    device = resolve_device(setting.device)
    members = [_Member(i, o, PartSums(o, check_interval(device))) for i, o in enumerate(objectives)]
    data = load_data(setting)
    teacher_taps = _teacher_taps(members)
    if teacher_taps and teacher is None:
        teacher = get_teacher(setting, device=device)
    template = build_model(setting.student, data, seed, device)
    student_taps = tuple(dict.fromkeys(t for m in members for t in m.objective.student_taps))
    template.resolve_taps(student_taps)  # a tap the student lacks is an error now, not mid-epoch
    if teacher_taps:
        teacher.model.resolve_taps(teacher_taps)
        teacher.model.eval()
    budget = setting.budget
    augment = setting.augment
    batch_size = setting.batch_size
    loader = train_loader(data, batch_size, device, seed=seed, augment=augment)
    val_loader = data.eval_loader("val", batch_size=setting.data.eval_batch_size, device=device)
    cache_key = (teacher.key, teacher.sha256, data.fingerprint()) if (teacher is not None and teacher_cache) else None
    students = make_students(engine, template, len(members), budget, budget.epochs * len(loader), setting.precision)
    active = list(members)
    source = TeacherTaps(teacher.model, teacher_taps, loader, cache_key, setting.precision) if teacher_taps else None

    def forward(x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return students.forward(x, student_taps)

    train_start = time.perf_counter()
    desc = f"population of {len(members)} {setting.student.model} seed {seed}"

    def leave(leaving: list[_Member]) -> None:
        nonlocal active
        if not leaving:
            return
        now = time.perf_counter()
        for m in leaving:
            m.left_at = now
            if return_models:
                m.model = students.export(active.index(m))
        positions = [i for i, m in enumerate(active) if m not in leaving]
        if positions:
            students.keep(positions)
        active = [active[i] for i in positions]

    for epoch in progress_bar(range(budget.epochs), progress, desc):
        if source is not None:
            source.start_epoch(epoch, needed=any(m.objective.needs_teacher for m in active))
        lr, epoch_start = students.lr(), time.perf_counter()
        for m in active:
            m.curve.start_epoch(lr)
        for batch in loader.epoch(epoch, with_indices=True):
            if not active:
                break
            failed = []
            for position, parts in train_step(batch, forward, [m.objective for m in active], source, students.step,
                                              [m.parts for m in active], device, setting.precision):
                m = active[position]
                m.fail(m.parts.error(parts, epoch))
                failed.append(m)
            leave(failed)
        if not active:
            break
        seconds = time.perf_counter() - epoch_start
        accuracies = students.evaluate(val_loader)
        leaving = []
        for m, acc in zip(active, accuracies):
            m.history.append(acc)
            log.info("%s member %d epoch %d/%d: val accuracy %.4f", desc, m.index, epoch + 1, budget.epochs, acc)
            if (error := m.parts.sums_error(epoch)) is not None:  # no point of a non-finite epoch, as in fit
                m.fail(error)
                leaving.append(m)
                continue
            m.curve.end_epoch(epoch, acc, seconds=seconds)
            if report is not None and report(m.index, epoch, acc):
                m.stopped_early = epoch + 1 < budget.epochs
                m.stopped = "pruned" if m.stopped_early else None
                leaving.append(m)
        leave(leaving)
    leave(list(active))
    summaries = [_summary(m, seed, len(members), start, train_start) for m in members]
    if getattr(template, "init_sha256", None):  # the student's init checkpoint, as run_trial records it
        for s in summaries:
            s.init_sha256 = template.init_sha256
    return summaries


def _summary(m: _Member, seed: int, population: int, start: float, train_start: float) -> RunResult:
    left_at = m.left_at if m.left_at is not None else time.perf_counter()
    train_seconds = left_at - train_start
    return RunResult(
        member=m.index, objective_config=m.objective.to_config(), seed=seed,
        val_accuracy=m.history[-1] if m.history else None, val_history=m.history, epochs=len(m.history),
        stopped=m.stopped, stopped_early=m.stopped_early or m.stopped is not None, error=m.error,
        part_means=m.parts.means(), curves=m.curve.points, train_seconds=train_seconds,
        samples_per_second=m.parts.samples / max(train_seconds, 1e-9), wall_seconds=left_at - start,
        population=population, model=m.model,
    )
