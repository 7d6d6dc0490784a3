"""A queue of fixed runs on an Optuna storage: each run trains once, resumes after an
interruption, and is shared by every process that opens the queue.

A run queue is an ordinary Optuna study: each :class:`Run` is a trial enqueued with the
run in its user attributes (:data:`relkd.results.record.RUN_ATTR`: id, key, label, seed,
epochs; ``objective_config``) and its parameters, if it has any (:attr:`Run.params`), so
``optuna.load_study`` and optuna-dashboard read it. A trial's value is the student's
validation accuracy; ``test_accuracy``, ``wall_seconds``, ``part_means``, ``val_history``
and ``epochs`` are user attributes::

    from relkd.study.queue import Run, RunQueue
    queue = RunQueue.open("my_runs", "sqlite:///runs/my_runs/optuna.db")
    runs = [Run("kd", preset("kd"), seed) for seed in (0, 1, 2)]
    results = queue.run(runs, setting)            # {run.id: FrozenTrial}, trains only what is missing

Resume and sharing, the guarantees of ``relkd compare`` and of the study workers:

- a run with a completed trial is never trained again (also when it was enqueued twice);
- a failed run (an error, Ctrl-C) is enqueued again by the next :meth:`RunQueue.add`; an
  interrupted one is put back at once, for the other processes;
- a run left RUNNING by a dead process is failed and enqueued again: on RDB storages by
  Optuna's heartbeat, and at once when the process ran on this host (its ``worker``
  attribute, host:pid, names a process that no longer exists; journal files have no heartbeat);
- several processes (``storage`` on a shared database) take the waiting runs one at a time,
  then wait while the others train the runs they still miss, and take the retries of dead ones.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..engine import RunResult, TeacherResult, get_teacher, run_trial
from ..engine.tracking import Tracker
from ..objective import build_objective
from ..setting import Setting
from ..results.record import WORKER, TrialRecord, set_trial_attrs, trial_attrs, versions
from .storage import RACE_ERRORS, is_lost_race, open_storage

__all__ = ["Run", "RunQueue", "run_id", "completed_runs", "DEFAULT_PATIENCE"]

log = logging.getLogger(__name__)

#: The least time (seconds) a process waits for runs other processes are training.
DEFAULT_PATIENCE = 600.0
#: How a trial written before run queues (e.g. a compare trial with parameters
#: ``method``/``seed``) maps to its run, or ``None``.
Legacy = Callable[[FrozenTrial], "Run | None"]


@dataclass(frozen=True)
class Run:
    """One fixed run: an objective config trained with one seed for ``epochs`` epochs
    (``None``: the setting's budget). ``key`` names what is trained (a preset name, a
    config hash); ``label`` is what logs and tables call it. ``params`` are Optuna
    parameters its trial records too (e.g. compare's ``method`` and ``seed``), each drawn
    from the queue's ``choices``, so Optuna's tools can group the runs by them."""

    key: str
    config: Mapping[str, Any] = field(compare=False, hash=False)
    seed: int = 0
    epochs: int | None = None
    label: str = ""
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        """``<key>/seed=<seed>``, with ``/epochs=<epochs>`` when set: the run's identity."""
        text = f"{self.key}/seed={self.seed}"
        return text if self.epochs is None else f"{text}/epochs={self.epochs}"

    def record(self) -> dict[str, Any]:
        """The run as stored in :data:`RUN_ATTR` (its config goes to ``objective_config``)."""
        return {"id": self.id, "key": self.key, "label": self.label or self.key, "seed": self.seed,
                "epochs": self.epochs}

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> Run | None:
        """The run a queue trial holds (also waiting or running), or ``None``."""
        record = TrialRecord.of(trial).run
        if not isinstance(record, dict) or "key" not in record:
            return None
        return cls(record["key"], TrialRecord.of(trial).config or {}, record["seed"],
                   record.get("epochs"), record.get("label", ""),
                   trial.params or trial.system_attrs.get("fixed_params") or {})


def run_id(trial: FrozenTrial, legacy: Legacy | None = None) -> str | None:
    """The id of the run a trial holds, also before it has started; ``legacy`` reads trials
    written before run queues."""
    record = TrialRecord.of(trial).run
    if isinstance(record, dict) and "id" in record:
        return record["id"]
    run = legacy(trial) if legacy is not None else None
    return run.id if run is not None else None


def completed_runs(study: optuna.Study, legacy: Legacy | None = None) -> dict[str, FrozenTrial]:
    """The first completed trial of each run id, in trial order."""
    out: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = run_id(t, legacy)
        if key is not None and key not in out:
            out[key] = t
    return out


def _process_is_dead(worker: str) -> bool:
    """Whether ``host:pid`` names a process of this host that no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process: alive
        return False
    return False


class RunQueue:
    """Fixed runs in one Optuna study; open it with :meth:`open`. ``choices`` are the
    categorical choices of the runs' ``params`` (Optuna needs the same ones in every trial)."""

    def __init__(self, study: optuna.Study, url: str, *, legacy: Legacy | None = None,
                 choices: Mapping[str, Sequence[Any]] | None = None):
        self.study = study
        self.url = url
        self.legacy = legacy
        self.choices = dict(choices or {})
        self.teacher: TeacherResult | None = None  # fetched once, for the first run that needs it

    @classmethod
    def open(cls, name: str, url: str, *, seed: int = 0, heartbeat_interval: int = 60,
             legacy: Legacy | None = None, choices: Mapping[str, Sequence[Any]] | None = None) -> RunQueue:
        """Create the queue's study ``name`` in the storage ``url``, or load it."""
        storage = open_storage(url, heartbeat_interval=heartbeat_interval)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=seed))
        return cls(study, url, legacy=legacy, choices=choices)

    # ------------------------------------------------------------------ reading

    def run_of(self, trial: FrozenTrial) -> Run | None:
        return Run.from_trial(trial) or (self.legacy(trial) if self.legacy is not None else None)

    def results(self, runs: Iterable[Run] | None = None) -> dict[str, FrozenTrial]:
        """The completed trial of each run (of ``runs``, default all), by run id."""
        done = completed_runs(self.study, self.legacy)
        if runs is None:
            return done
        return {r.id: done[r.id] for r in runs if r.id in done}

    def missing(self, runs: Iterable[Run]) -> list[Run]:
        """The runs that have no completed trial."""
        done = completed_runs(self.study, self.legacy)
        return [r for r in runs if r.id not in done]

    def _ids(self, *states: TrialState) -> set[str | None]:
        return {run_id(t, self.legacy) for t in self.study.get_trials(deepcopy=False, states=states)}

    # ------------------------------------------------------------------ writing

    def enqueue(self, run: Run) -> None:
        self.study.enqueue_trial(dict(run.params),
                                 user_attrs=trial_attrs(run=run.record(), config=dict(run.config)))

    def add(self, runs: Iterable[Run]) -> int:
        """Enqueue every run that is not completed, running or waiting (failed and
        interrupted runs are enqueued again); return how many trials wait now."""
        taken = set(completed_runs(self.study, self.legacy)) | self._ids(TrialState.RUNNING, TrialState.WAITING)
        for run in runs:
            if run.id not in taken:
                self.enqueue(run)
                taken.add(run.id)
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def record(self, run: Run, metrics: Mapping[str, Any], **fields: Any) -> None:
        """Store a run finished elsewhere (e.g. read from an older file) as completed:
        ``metrics`` has ``val_accuracy`` and what of a :class:`RunResult` it knows (its trial
        attributes are stored as a trained run's are)."""
        attrs = {**trial_attrs(run=run.record(), config=dict(run.config), seed=run.seed),
                 **RunResult.from_dict(metrics).trial_attrs(), **trial_attrs(**fields)}
        self.study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE,
                                                       value=float(metrics["val_accuracy"]), user_attrs=attrs))

    def reap(self) -> int:
        """Fail the running trials of dead processes of this host and enqueue their runs
        again; return how many. (Other hosts' dead trials are failed by the heartbeat.)"""
        reaped = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run = self.run_of(t)
            if run is None or not _process_is_dead(str(TrialRecord.of(t).worker or "")):
                continue
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except ValueError:  # another process failed it first and enqueues it
                continue
            log.info("run %s: its process %s is gone; enqueued it again", run.id, TrialRecord.of(t).worker)
            self.enqueue(run)
            reaped += 1
        return reaped

    # ------------------------------------------------------------------ training

    def run(self, runs: Sequence[Run], setting: Setting, *, eval_test: bool = True, progress: bool = False,
            catch: tuple[type[Exception], ...] = (), train: Callable[..., RunResult] | None = None,
            on_start: Callable[[Run], None] | None = None, patience: float | None = None,
            poll: float = 2.0, tracker: Tracker | None = None) -> dict[str, FrozenTrial]:
        """Enqueue the missing ``runs``, train waiting runs (of any process) one at a time,
        then wait while other processes train the runs still missing; return the completed
        trial of each run (a run that did not finish is absent).

        ``setting`` trains every run (with the run's epochs when set). ``train`` is
        :func:`relkd.engine.run_trial` or a function with its signature; ``on_start(run)``
        is called before each run trains. Errors of ``catch`` fail their run and the queue
        goes on; others (and Ctrl-C, after the run is put back) stop it. The wait lasts at
        most ``patience`` seconds (default: three times the longest finished run, at
        least :data:`DEFAULT_PATIENCE`) after the last run this process trained. ``tracker``:
        where each run this process trains is logged (:mod:`relkd.engine.tracking`)."""
        train = train or run_trial
        self.add(runs)
        wanted = {r.id for r in runs}

        def objective(trial: optuna.Trial) -> float:
            return self._train(trial, setting, eval_test=eval_test, progress=progress, train=train,
                               on_start=on_start, catch=catch, tracker=tracker)

        deadline: float | None = None
        while True:
            self.reap()
            if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                deadline = None
                try:
                    self.study.optimize(objective, n_trials=1, catch=catch)
                except RACE_ERRORS as err:
                    if not is_lost_race(err):
                        raise
                    log.info("another process finished the same run first; going on")
                continue
            open_runs = wanted - set(completed_runs(self.study, self.legacy))
            running = self._ids(TrialState.RUNNING) & open_runs
            if not running:
                break
            if deadline is None:
                deadline = time.monotonic() + (patience if patience is not None else self._patience())
                log.info("waiting for %d runs that other processes are training", len(running))
            if time.monotonic() >= deadline:
                break
            time.sleep(poll)
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)  # a dead process's run: failed, enqueued again
        return self.results(runs)

    def _patience(self) -> float:
        longest = max((TrialRecord.of(t).wall_seconds or 0.0
                       for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), default=0.0)
        return max(DEFAULT_PATIENCE, 3 * longest)

    def _skip_reason(self, trial: optuna.Trial, run: Run | None) -> str | None:
        """Why this trial must not train: no run (another process took the last waiting
        one), or its run is completed or running in an earlier trial (enqueued twice)."""
        if run is None:
            return "no queued run was left for it"
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number != trial.number and run_id(t, self.legacy) == run.id and (
                    t.state == TrialState.COMPLETE or t.number < trial.number):
                return f"run {run.id} is {t.state.name.lower()} in trial {t.number}"
        return None

    def _train(self, trial: optuna.Trial, setting: Setting, *, eval_test: bool, progress: bool,
               train: Callable[..., RunResult], on_start: Callable[[Run], None] | None,
               catch: tuple[type[Exception], ...], tracker: Tracker | None = None) -> float:
        mine = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        run = self.run_of(mine)
        reason = self._skip_reason(trial, run)
        if reason is not None:
            set_trial_attrs(trial, skipped=reason)
            raise optuna.TrialPruned(f"not trained: {reason}")
        assert run is not None
        try:
            for name, value in run.params.items():  # replays the enqueued parameters
                if value in self.choices.get(name, ()):
                    trial.suggest_categorical(name, list(self.choices[name]))
            set_trial_attrs(trial, run=run.record())  # a retry of this trial carries it
            set_trial_attrs(trial, config=dict(run.config), seed=run.seed, worker=WORKER, versions=versions())
            objective = build_objective(dict(run.config))
            if objective.needs_teacher and self.teacher is None:
                self.teacher = get_teacher(setting, progress=progress)
            if run.epochs is not None and run.epochs != setting.budget.epochs:
                setting = setting.with_budget(epochs=run.epochs)
            if on_start is not None:
                on_start(run)
            result = train(setting, objective, seed=run.seed, eval_test=eval_test, teacher=self.teacher,
                            progress=progress)
        except KeyboardInterrupt:  # Optuna fails the trial; the run goes back for the other processes
            try:
                self.enqueue(run)
            except Exception as err:  # noqa: BLE001 - the interrupt matters more than the queue
                log.warning("run %s was interrupted and could not be enqueued again: %s", run.id, err)
            raise
        except Exception as err:
            set_trial_attrs(trial, error=f"{type(err).__name__}: {err}")
            if isinstance(err, catch):  # the queue goes on: say which run failed
                log.warning("run %s failed: %s: %s", run.id, type(err).__name__, err)
            raise
        set_trial_attrs(trial, **result.trial_attrs())
        if tracker is not None:
            tracker.log_run(run.id, params={"objective": dict(run.config), "seed": run.seed, "run": run.record()},
                            curves=result.curves,
                            summary={"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy})
        return float(result.val_accuracy)
