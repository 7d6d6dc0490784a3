"""One trial of a study: draw a composition (or take an anchor's), train the student, report
each epoch, prune, and record everything as ordinary Optuna attributes.

What a trial stores (``optuna.load_study``, the ``optuna`` CLI and optuna-dashboard read it):

- the trial's value is the student's validation accuracy after the last epoch; every epoch
  is reported as an intermediate value (step = epochs trained);
- user attributes: :data:`relkd.results.record.TRIAL_ATTRS` (``objective_config``,
  ``part_means``, ``wall_seconds``, ``seed``, ``versions``, ``val_history``, ``epochs``,
  ``worker``, ``init_sha256``; ``anchor`` on the known methods; ``refined_from`` on
  refinements of an anchor (:mod:`relkd.study.refine`); ``rerun`` on re-runs of a
  composition with another seed (:mod:`relkd.study.seeds`); ``invalid_combination``,
  ``pruned_reason``, ``skipped`` or ``error``).

Anchors and re-runs always train to the end (they are the baseline and the seeds of a
ranking); searched trials may be stopped by the pruner or the fidelity ladder.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

import optuna
import torch
from optuna.trial import TrialState

from ..adapt import resolve_student, with_ratio
from ..engine import (NonFiniteLossError, RunResult, TeacherResult, free_device_memory, get_teacher, load_data,
                      run_trial)
from ..engine.memory import memory_problems
from ..engine.tracking import Tracker
from ..fields import ConfigError
from ..objective import Objective, build_objective
from ..setting import Setting, resolve_device
from ..results.record import (WORKER, TrialRecord, is_copy, is_counted, replays, set_trial_attrs,
                              trial_attrs, versions)
from ..results.ranking import compositions
from .artifacts import upload_text
from .spec import StudySpec
from .tuned_anchors import searched_index

__all__ = ["TrialRunner", "Draw", "Preempted", "preempt_on_sigterm", "put_back", "put_back_stopped", "frozen",
           "MAX_INVALID_IN_A_ROW"]

log = logging.getLogger(__name__)

# After this many invalid draws in a row the space is hopeless: stop and say so.
MAX_INVALID_IN_A_ROW = 200
#: The user attributes that define what a trial trains; a trial put back carries them to its copy.
RUN_FIELDS = ("anchor", "anchor_in_space", "rerun", "tuned_anchor", "refined_from", "config", "seed", "student")


class Preempted(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``; ``relkd study run|worker|confirm`` raise it):
    it stops the process as Ctrl-C does, and the running trial is put back with the same
    parameters, also a draw of the sampler, so that another worker (or the next run) trains it
    (:func:`put_back_stopped`). Ctrl-C puts back only enqueued trials (anchors, re-runs, retries)."""


def preempt_on_sigterm() -> Any:
    """Make SIGTERM (what schedulers send to preempt a job, and ``kill``) end a study like Ctrl-C,
    raising :class:`Preempted`: the running trial is put back with the same parameters for
    another worker (or the next run) and marked failed and ``skipped``; a run queue's running
    run (confirm, compare, ablate) goes back to its queue. Finished trials stay, and running the
    study again resumes it. A second SIGTERM while the first one is being handled is ignored, so
    the put-back is not cut short (SIGKILL still stops the process at once). Call it in the main
    thread; returns the handler it replaces (tests put it back)."""
    import signal

    received: list[int] = []

    def preempt(signum: int, frame: Any) -> None:
        if received:
            log.warning("signal %d again: already stopping (the running trial is being put back)", signum)
            return
        received.append(signum)
        raise Preempted(f"signal {signum}")

    return signal.signal(signal.SIGTERM, preempt)


@dataclass
class Draw:
    """What one trial trains: its composition (built) and seed; anchors and re-runs are
    never pruned (the baseline and the seeds of a ranking)."""

    trial: optuna.Trial
    objective: Objective
    seed: int
    anchor: str | None = None
    rerun: dict | None = None
    tuned: str | None = None  # the preset whose hyperparameters this trial tunes (relkd.study.tuned_anchors)
    reported: set[int] = field(default_factory=set)  # the steps reported so far (a population retrains after a split)
    setting: Setting | None = None  # this trial's setting when it differs from the study's (a searched size)

    @property
    def prunable(self) -> bool:
        return not self.anchor and not self.rerun and not self.tuned


@dataclass
class TrialRunner:
    """The callable Optuna calls once per trial (Optuna's "objective"; relkd keeps that word for
    the distillation objective, docs/architecture.md); ``setting`` is the spec's with its inits
    resolved."""

    spec: StudySpec
    n_trials: int | None
    setting: Setting | None = None  # the spec's setting with its init checkpoints resolved (default: as it is)
    teacher: TeacherResult | None = None
    heartbeat: float = 0.0  # the storage's heartbeat interval (s); 0: none, so dead workers' trials stay RUNNING
    deadline: float = float("inf")  # time.time() at which the study's timeout ends
    invalid_in_a_row: int = 0
    stop_reason: str = ""  # set when a trial stops the study
    reruns_only: bool = False  # the re-run phase: a trial the sampler draws afresh is put back untrained
    tracker: Tracker | None = None  # where each trained trial's parameters and curves are logged (--log-to)

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._train(trial)
        except KeyboardInterrupt as err:  # Optuna marks the trial failed; an anchor or a retry must not be lost
            put_back_stopped(trial, "preempted" if isinstance(err, Preempted) else "interrupted",
                             draws=isinstance(err, Preempted))
            raise

    def _train(self, trial: optuna.Trial) -> float:
        return self.train_draw(self.prepare(trial))

    def train_draw(self, draw: Draw) -> float | list[float]:
        """Train a prepared draw as a single trial and return its value, or ``[accuracy,
        size]`` in a multi-objective study (raises as :meth:`failed`)."""
        try:  # the objective is built once, not validated again
            result = run_trial(draw.setting or self.setting or self.spec.setting, draw.objective,
                               self.reporter(draw), seed=draw.seed, teacher=self.teacher)
        except Exception as err:
            self.failed(draw.trial, err)  # raises
        value = self.finish(draw, result)
        if self.spec.size is not None:
            return [value, float(result.size(self.spec.size.measure))]
        return value

    def prepare(self, trial: optuna.Trial, batch: tuple[int, ...] = ()) -> Draw:
        """What ``trial`` trains: a re-run, an anchor or a draw of the space, recorded as the
        trial's attributes (the teacher is loaded once a composition needs it). Raises
        :class:`optuna.TrialPruned` for a draw that breaks the rules or a trial that is not
        trained (no room left, or only re-runs now). ``batch``: the trials this worker has
        asked for along with this one (a population), which leave room for each other."""
        record = TrialRecord.of(trial)
        rerun = record.rerun
        if self.reruns_only and not rerun:
            set_trial_attrs(trial, skipped="the search has ended: only re-runs are trained now")
            put_back(trial.study, frozen(trial))
            trial.study.stop()
            raise optuna.TrialPruned("not trained: the search has ended")
        system = trial.study._storage.get_trial_system_attrs(trial._trial_id)
        if is_copy(system):
            self._check_copy_is_new(trial, system)
        if not rerun:
            self._check_room(trial, batch)
        anchor = record.anchor
        setting = self.setting or self.spec.setting
        seed, built = setting.seed, None
        if rerun:
            self._check_rerun_is_new(trial, rerun)
            original = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == rerun["of"])
            first = TrialRecord.of(original)
            config, seed, anchor = first.config, int(rerun["seed"]), first.anchor
        elif anchor:
            config = setting.preset(anchor)  # the layers of this setting's models
            if record.anchor_in_space:
                self.spec.space.sample(trial)  # replays the enqueued parameters
        else:
            # a copy of a trial that stopped while training (put back, or Optuna's retry) trains the same
            # composition in the same role (tuned anchor, refinement), not a draw of its own
            config, problems = (record.config, []) if replays(record, system) else self._draw(trial)
            if not problems:  # built once: the memory check and the run use the same objective
                built = build_objective(config)
                problems = self._memory_problems(built)
            if problems:
                self.invalid_in_a_row += 1
                set_trial_attrs(trial, invalid_combination=problems)
                if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
                    self.stop_reason = (f"{self.invalid_in_a_row} invalid draws in a row: the search space allows "
                                        f"almost no valid combination ({problems[0]})")
                    trial.study.stop()
                raise optuna.TrialPruned(f"invalid combination, not trained: {'; '.join(problems)}")
            self.invalid_in_a_row = 0
        trial_setting = self._sized(trial, setting) if self.spec.size is not None else None
        set_trial_attrs(trial, student=(trial_setting or setting).student.to_dict(), config=config, seed=seed,
                        versions=versions(), worker=WORKER)
        objective = built if built is not None else build_objective(config)
        if objective.needs_teacher and self.teacher is None:
            self.teacher = get_teacher(setting)
        tuned = TrialRecord.of(trial).tuned_anchor  # read again: _draw may have just set it
        return Draw(trial, objective, seed, anchor, rerun, tuned, setting=trial_setting)

    def _sized(self, trial: optuna.Trial, setting: Setting) -> Setting:
        """The setting with the student adapted to the trial's ratio (made, or found in the
        cache); a ratio the student cannot reach prunes the trial with the reason."""
        ratio = self.spec.size.suggest(trial)
        sized = with_ratio(setting, ratio, measure=self.spec.size.measure)
        try:
            return resolve_student(sized)
        except ConfigError as err:
            set_trial_attrs(trial, invalid_combination=list(err.errors))
            raise optuna.TrialPruned(f"invalid size, not trained: {'; '.join(err.errors)}") from None

    @staticmethod
    def reporter(draw: Draw) -> Callable[[int, float], bool]:
        """The per-epoch report of ``draw``'s run: its value at step ``epoch + 1``, and
        whether the pruner (or the ladder) stops it; anchors and re-runs always finish.
        A multi-objective trial (``draw.setting`` sized) reports nothing: Optuna prunes one
        objective only."""

        def report(epoch: int, accuracy: float) -> bool:
            if draw.setting is not None:
                return False
            if epoch + 1 not in draw.reported:
                draw.trial.report(accuracy, epoch + 1)
                draw.reported.add(epoch + 1)
            return draw.prunable and draw.trial.should_prune()

        return report

    @staticmethod
    def failed(trial: optuna.Trial, err: BaseException) -> NoReturn:
        """What an error while training means for the trial: a non-finite loss or running
        out of device memory prunes it with the reason; anything else fails it."""
        if isinstance(err, NonFiniteLossError):
            set_trial_attrs(trial, pruned_reason=f"non-finite loss: {err}")
            raise optuna.TrialPruned(f"non-finite loss: {err}") from None
        if isinstance(err, torch.OutOfMemoryError):  # a composition too big for the device: not a broken study
            free_device_memory()
            first = (str(err).strip().splitlines() or [""])[0][:200]
            reason = (f"out of device memory ({first}); pruned, not failed: this composition needs more memory "
                      f"than the device has (a smaller batch, another tap or view may fit)")
            set_trial_attrs(trial, pruned_reason=reason)
            raise optuna.TrialPruned(reason) from None
        set_trial_attrs(trial, error=f"{type(err).__name__}: {err}")
        raise err

    def finish(self, draw: Draw, result: RunResult) -> float:
        """Record a run's result on its trial (:meth:`RunResult.trial_attrs`) and return the
        trial's value; a run the pruner stopped (or, in a population, whose loss went
        non-finite) raises :class:`optuna.TrialPruned` with the reason."""
        trial = draw.trial
        set_trial_attrs(trial, **result.trial_attrs())
        self.track(draw, result)
        if result.error:  # a population member's non-finite loss
            reason = f"non-finite loss: {result.error}"
            set_trial_attrs(trial, pruned_reason=reason)
            raise optuna.TrialPruned(reason)
        if result.stopped_early:
            by = "the fidelity ladder" if self.spec.ladder else f"the {self.spec.pruner[0]} pruner"
            reason = f"pruned by {by} after epoch {result.epochs}"
            set_trial_attrs(trial, pruned_reason=reason)
            raise optuna.TrialPruned(reason)
        return float(result.val_accuracy)

    def track(self, draw: Draw, result: RunResult) -> None:
        """Keep the trained trial's curves (pruned ones too) as its artifact ``curves.json``
        (where the study has a store; optuna-dashboard shows it on the trial) and log the trial
        to the tracker, if any: the objective config, seed and the sampler's parameters, its
        curves, and its last accuracy."""
        trial = draw.trial
        if result.curves:
            upload_text(trial.study, "curves.json", json.dumps(result.curves, indent=1), trial=trial)
        if self.tracker is None:
            return
        params = {"objective": draw.objective.to_config(), "seed": draw.seed, "trial": trial.number,
                  "params": dict(trial.params)} | ({"anchor": draw.anchor} if draw.anchor else {})
        self.tracker.log_run(f"trial-{trial.number}", params=params, curves=result.curves,
                             summary={"val_accuracy": result.val_accuracy})

    @staticmethod
    def _check_rerun_is_new(trial: optuna.Trial, rerun: dict) -> None:
        """Two workers may enqueue the same re-run at once: the later trial is skipped."""
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number != trial.number and TrialRecord.of(t).rerun == rerun and (
                    t.state == TrialState.COMPLETE or t.number < trial.number):
                set_trial_attrs(trial, skipped=f"re-run {rerun} is {t.state.name.lower()} in trial {t.number}")
                raise optuna.TrialPruned("not trained: the same re-run is in another trial")

    @staticmethod
    def _check_copy_is_new(trial: optuna.Trial, system: dict) -> None:
        """A trial that stopped is trained again once: a second copy of it (put back, and retried
        by Optuna's heartbeat too when the worker could not mark it failed; or copies of copies,
        compared by the first trial of their chain) is skipped while another one has trained it
        or is training it (an earlier trial). A copy that goes on clears the outcome it inherited
        (Optuna's retry copies every user attribute, the stopped trial's ``skipped`` too)."""
        of = system.get("failed_trial")
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.RUNNING)):
            if t.number == trial.number or t.system_attrs.get("failed_trial") != of:
                continue
            record = TrialRecord.of(t)
            untrained = record.skipped is not None or record.invalid_combination is not None
            if (t.state == TrialState.RUNNING and t.number < trial.number) or (
                    t.state != TrialState.RUNNING and not untrained):
                set_trial_attrs(trial, skipped=f"trial {of} is trained again in trial {t.number} "
                                               f"({t.state.name.lower()})")
                raise optuna.TrialPruned(f"not trained: trial {of} is trained again in another trial")
        inherited = TrialRecord.of(trial)
        if any(v is not None for v in (inherited.skipped, inherited.error, inherited.pruned_reason)):
            set_trial_attrs(trial, skipped=None, error=None, pruned_reason=None)

    def _memory_problems(self, objective: Objective) -> list[str]:
        """The draw's terms that the device could not hold (:mod:`relkd.engine.memory`)."""
        setting = self.setting or self.spec.setting
        data = load_data(setting)
        return memory_problems(objective, setting, resolve_device(setting.device),
                               tuple(data.train_images.shape[1:]), data.num_classes)

    def _draw(self, trial: optuna.Trial) -> tuple[dict, list[str]]:
        """A drawn composition: an anchor's hyperparameters tuned (the study's first searched
        trials, when it tunes its anchors), a refinement of a best anchor (for the share of
        trials the study's ``refine`` gives, once an anchor has completed) or a draw of the
        open space."""
        bases = [(c.anchor, c.record.config)
                 for c in compositions(trial.study) if c.anchor is not None]
        tuning = self.spec.tune_anchors
        if tuning is not None:
            name = tuning.choose(searched_index(trial.study, trial.number), bases, self.spec.anchors)
            if name is not None:
                set_trial_attrs(trial, tuned_anchor=name)
                base = dict(bases).get(name) or (self.setting or self.spec.setting).preset(name)
                return tuning.sample(trial, name, base), []
        refine = self.spec.refine
        if refine is not None and refine.chooses(self.spec.seed, trial.number) and bases:
            return refine.sample(trial, bases[:refine.anchors], self.spec.space, structural_only=tuning is not None)
        return self.spec.space.sample(trial)

    def _check_room(self, trial: optuna.Trial, batch: tuple[int, ...] = ()) -> None:
        """With several workers, two may start the last trial at once: the later one is
        pruned before it draws anything (marked ``skipped``, not counted), an enqueued trial
        it took is enqueued again, and its worker stops.

        While the trials of other workers fill the rest of ``n_trials`` but have not finished,
        this worker waits (on storages with a heartbeat): one whose worker died is failed by
        Optuna's heartbeat check and enqueued again, and then this worker trains it. Without
        the wait the last trials of a dead worker would be lost. The trials in ``batch`` (this
        worker's population) are not waited for."""
        if self.n_trials is None:
            return
        study = trial.study
        waited = False
        while True:
            trials = study.get_trials(deepcopy=False)
            counted = sum(1 for t in trials if is_counted(t))
            others = [t for t in trials if t.state == TrialState.RUNNING and t.number < trial.number
                      and t.number not in batch]
            if counted + len(others) < self.n_trials:
                if waited and any(t.state == TrialState.WAITING for t in trials):
                    break  # a retry of a dead worker's trial waits: skip this one so the retry goes first
                return
            if counted >= self.n_trials or not self.heartbeat or time.time() >= self.deadline:
                break
            if not waited:
                log.info("waiting for %d running trials of other workers (the study's last ones)", len(others))
                waited = True
            time.sleep(min(5.0, self.heartbeat))
            with warnings.catch_warnings():  # marked experimental, like the heartbeat itself
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed and enqueued again
        mine = next(t for t in trials if t.number == trial.number)
        put_back(study, mine)
        full = counted >= self.n_trials or not waited
        set_trial_attrs(trial, skipped=f"the study already has {self.n_trials} trials" if full
                        else "a retry of another worker's trial goes first")
        if full or time.time() >= self.deadline:
            self.stop_reason = (f"the study has {self.n_trials} trials (other workers finished them)" if full
                                else "timeout while waiting for other workers' trials")
            study.stop()
        raise optuna.TrialPruned(f"not trained: {TrialRecord.of(trial).skipped or 'skipped'}")


def frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of a running trial."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def put_back(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, interrupted: bool = False,
             draws: bool = False) -> int | None:
    """Enqueue again a trial that this worker will not finish: an enqueued trial (an anchor, a
    re-run) or a copy (Optuna's retry of a dead worker's trial, an earlier put-back), and with
    ``draws`` also a draw of the sampler once it has drawn its composition. The copy has the
    same parameters (so the sampler sees the same point; a grid cell stays taken), the user
    attributes that define the run (:data:`RUN_FIELDS`) and the system attributes.
    ``interrupted``: the trial stopped while training and fails; the copy then records it as
    Optuna's retries do (``failed_trial``, ``retry_history``), so that it replays the trial
    (:func:`replays`) and is trained once (:meth:`TrialRunner._check_copy_is_new`). Returns the
    copy's number, ``None`` for a draw that is not put back (the next trial draws again)."""
    system = trial.system_attrs
    record = TrialRecord.of(trial)
    enqueued = "fixed_params" in system or is_copy(system)
    if not enqueued and not (draws and record.config is not None):
        return None  # the sampler's own draw (or one that has not drawn yet): the next trial draws again
    if interrupted:
        history = [*system.get("retry_history", []), trial.number]
        system = {**system, "failed_trial": system.get("failed_trial", trial.number), "retry_history": history}
    kept = {name: getattr(record, name) for name in RUN_FIELDS}
    copy = optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=trial_attrs(**{k: v for k, v in kept.items() if v is not None}),
        # not the trial's artifacts (Optuna keeps their metadata as system attributes): the copy
        # uploads its own, and one of the same name would write over the stopped trial's file
        system_attrs={k: v for k, v in system.items() if k != "fail_reason" and not k.startswith("artifacts:")})
    storage = study._storage
    return storage.get_trial_number_from_id(storage.create_new_trial(study._study_id, template_trial=copy))


def put_back_stopped(trial: optuna.Trial, why: str, *, draws: bool = False) -> int | None:
    """A running trial that stopped while training (``why``: interrupted, preempted, or the
    error that stopped its population): put it back (:func:`put_back`, ``interrupted``; a draw
    of the sampler too with ``draws``, as SIGTERM does: :class:`Preempted`), and mark it
    ``skipped`` with the copy's number before it is failed, so that it is counted once (as
    skipped, not failed) and its copy trains it. Errors of the storage are logged, not raised:
    what stopped the trial matters more. Returns the copy's number, or ``None``."""
    try:
        stopped = frozen(trial)
        if stopped.state != TrialState.RUNNING:  # told already (a population stopped between two tells)
            return None
        number = put_back(trial.study, stopped, interrupted=True, draws=draws)
        if number is None:
            return None
        set_trial_attrs(trial, skipped=f"{why} while training: put back as trial {number} with the same "
                                       f"parameters")
    except Exception as err:  # noqa: BLE001 - what stopped the trial matters more than the queue
        log.warning("trial %d was %s and could not be enqueued again: %s", trial.number, why, err)
        return None
    log.info("trial %d was %s; enqueued it again as trial %d for the next worker", trial.number, why, number)
    return number


def __getattr__(name: str):
    """``TrialObjective``, the old name of :class:`TrialRunner`: a deprecated alias for one release."""
    if name == "TrialObjective":
        warnings.warn("relkd.study.trial.TrialObjective is deprecated; use TrialRunner", DeprecationWarning,
                      stacklevel=2)
        return TrialRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
