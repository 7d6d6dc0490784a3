"""Worker populations: a worker asks Optuna for up to K trials at once (ask/tell), trains
their students together with :func:`relkd.engine.run_population`, and tells each result as
its own trial.

Everything else is as for single trials (:meth:`optuna.Study.optimize` with
:class:`~relkd.study.trial.TrialRunner`):

- every member is prepared by :meth:`TrialRunner.prepare` (anchor, re-run, refinement or
  draw; an invalid draw is told pruned at once and another trial is asked for instead), and
  its result recorded by :meth:`TrialRunner.finish`;
- each member reports its epochs as its own intermediate values and is pruned on its own
  (pruner or fidelity ladder); it leaves the population, the others go on;
- each member's trial has its own heartbeat, so a worker killed mid-population leaves K
  running trials that Optuna's stale-trial check fails and enqueues again (every member
  retried, none lost); interrupted (Ctrl-C), enqueued members are put back as a single
  trial would be;
- ``n_trials``: a worker asks for another member only while the study has room for it; a
  grid study's population stops growing when the grid has no untaken cell (the trial that
  got a taken cell is skipped, not counted);
- an error in a population (out of device memory included) is not blamed on every member:
  the population is split in halves and trained again, so a member alone ends as a single
  trial would (pruned for memory or a non-finite loss, failed for anything else); an epoch a
  member reported before the split is not reported again;
- anything that stops the loop (Ctrl-C, a storage error) fails every trial it has not told,
  enqueued ones put back first, so none is left running;
- members share one seed (initial weights and batch order); trials of another seed (re-runs)
  are trained in a population of their own.

Stopping: :meth:`optuna.Study.stop` is allowed only inside Optuna's optimize loop (a callback,
the objective, or GridSampler once the grid is done). This loop is that loop, asking K trials
instead of one, so it raises the same flag Optuna's loop raises while it runs
(``study._thread_local.in_optimize_loop``) and reads the stop flag ``study.stop()`` sets.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from typing import Callable, Iterator

import optuna
import torch
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from ..engine import free_device_memory, run_population
from ..results.record import is_counted, set_trial_attrs
from .trial import Draw, Preempted, TrialRunner, put_back_stopped

__all__ = ["optimize_population"]

log = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, FrozenTrial], None]


@contextlib.contextmanager
def _optimize_loop(study: optuna.Study) -> Iterator[None]:
    """What Optuna's optimize loop sets while it runs, so ``study.stop()`` works."""
    local = study._thread_local
    if local.in_optimize_loop:
        raise RuntimeError("a population cannot run inside another optimize loop")
    local.in_optimize_loop, study._stop_flag = True, False
    try:
        yield
    finally:
        local.in_optimize_loop = False


def _stopped(study: optuna.Study) -> bool:
    return bool(study._stop_flag)


class _Batch:
    """The trials this worker has asked for and not told yet, each with its heartbeat."""

    def __init__(self, study: optuna.Study, callback: Callback | None):
        self.study, self.callback = study, callback
        self.draws: list[Draw] = []  # the asked trials that are ready to train
        self.asked: dict[int, optuna.Trial] = {}  # every asked trial not told yet
        self.beats: dict[int, contextlib.ExitStack] = {}

    def ask(self) -> optuna.Trial:
        trial = self.study.ask()
        self.asked[trial.number] = trial
        stack = contextlib.ExitStack()
        stack.enter_context(get_heartbeat_thread(trial._trial_id, self.study._storage))
        self.beats[trial.number] = stack
        return trial

    def tell(self, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None,
             why: str = "") -> None:
        beat = self.beats.pop(trial.number, None)
        if beat is not None:
            beat.close()
        told = self.study.tell(trial, value, state=state, skip_if_finished=True)
        self.asked.pop(trial.number, None)
        self.draws = [d for d in self.draws if d.trial.number != trial.number]
        if told.state == TrialState.PRUNED:
            log.info("trial %d pruned. %s", told.number, why)
        elif told.state == TrialState.FAIL:
            log.warning("trial %d failed: %s", told.number, why)
        if self.callback is not None:
            self.callback(self.study, told)

    def abandon(self, why: str, *, draws: bool = False) -> None:
        """Something stopped the population (Ctrl-C, SIGTERM, a storage error): every trial not
        told yet is failed, an enqueued one (with ``draws``, SIGTERM's, a drawn one too) put back
        first, as a single interrupted trial is (:func:`relkd.study.trial.put_back_stopped`);
        none is left running with a live heartbeat."""
        for trial in list(self.asked.values()):
            put_back_stopped(trial, why, draws=draws)
            try:
                self.tell(trial, state=TrialState.FAIL, why=why)
            except Exception as err:  # noqa: BLE001 - leave it to the heartbeat, but stop beating
                log.warning("trial %d was %s and could not be marked failed: %s", trial.number, why, err)
        for beat in self.beats.values():
            beat.close()
        self.beats.clear()


def optimize_population(study: optuna.Study, objective: TrialRunner, size: int, *,
                        timeout: float | None = None, callback: Callback | None = None) -> None:
    """Run ``study``'s trials ``size`` at a time until ``study.stop()`` is called (by the
    callback, the objective or the sampler) or ``timeout`` seconds pass (checked before each
    population; a population in flight finishes). ``callback(study, frozen_trial)`` is called
    after each trial is told, as :meth:`optuna.Study.optimize` calls its callbacks."""
    if size < 1:
        raise ValueError(f"size: expected a population of at least 1, got {size}")
    start = time.perf_counter()
    with _optimize_loop(study):
        while not _stopped(study) and (timeout is None or time.perf_counter() - start < timeout):
            batch = _Batch(study, callback)
            try:
                if is_heartbeat_enabled(study._storage):
                    with warnings.catch_warnings():  # marked experimental, like the heartbeat itself
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        optuna.storages.fail_stale_trials(study)  # a dead worker's trials: failed, enqueued again
                _fill(batch, objective, size)
                for seed in dict.fromkeys(d.seed for d in batch.draws):
                    _train(batch, objective, [d for d in batch.draws if d.seed == seed])
            except BaseException as err:
                batch.abandon("preempted" if isinstance(err, Preempted) else
                              "interrupted" if isinstance(err, KeyboardInterrupt) else
                              f"stopped by {type(err).__name__}: {err}", draws=isinstance(err, Preempted))
                raise


def _room(study: optuna.Study, n_trials: int | None) -> bool:
    """Whether the study has room for one more trial beside the finished and running ones."""
    if n_trials is None:
        return True
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if is_counted(t) or t.state == TrialState.RUNNING) < n_trials


def _fill(batch: _Batch, objective: TrialRunner, size: int) -> None:
    """Ask for trials until ``size`` are ready to train, the study has no room or it stops."""
    study = batch.study
    while len(batch.draws) < size and not _stopped(study):
        if batch.draws and not _room(study, objective.n_trials):
            return
        trial = None
        try:
            trial = batch.ask()
            if _same_cell(trial, batch.draws):  # the grid has no cell left that nobody trains
                set_trial_attrs(trial, skipped="its grid cell is in this population already")
                batch.tell(trial, state=TrialState.PRUNED, why="not trained: its grid cell is trained already")
                return
            batch.draws.append(objective.prepare(trial, tuple(d.trial.number for d in batch.draws)))
        except optuna.TrialPruned as pruned:  # an invalid draw or a trial that is not trained
            batch.tell(trial, state=TrialState.PRUNED, why=str(pruned))
        except Exception as err:  # noqa: BLE001 - a failed trial, as Study.optimize(catch=(Exception,)) has it
            if trial is None:
                raise
            with contextlib.suppress(Exception):  # the storage may refuse it too: the trial fails all the same
                set_trial_attrs(trial, error=f"{type(err).__name__}: {err}")
            batch.tell(trial, state=TrialState.FAIL, why=f"{type(err).__name__}: {err}")


def _grid_cell(trial: optuna.Trial) -> int | None:
    return trial.study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")


def _same_cell(trial: optuna.Trial, draws: list[Draw]) -> bool:
    """Whether GridSampler gave ``trial`` a cell a member of the population has (it does once
    every cell is taken, as with parallel workers)."""
    cell = _grid_cell(trial)
    return cell is not None and any(_grid_cell(d.trial) == cell for d in draws)


def _train(batch: _Batch, objective: TrialRunner, draws: list[Draw]) -> None:
    """Train ``draws`` (one seed) as one population and tell each; on an error, train each
    half again, down to single members, which end as single trials do. The halves are
    trained after the failed population's frames are gone (its traceback dropped), so an
    out-of-memory error gives its memory back first. A composition whose terms have parts
    that train with the student (feature terms) trains as a single trial."""
    alone = [d for d in draws if d.objective.trainable]
    for draw in alone:
        _end(batch, draw, functools.partial(objective.train_draw, draw))
    draws = [d for d in draws if d not in alone]
    if not draws:
        return
    reports = [objective.reporter(d) for d in draws]
    setting = objective.setting or objective.spec.setting
    failure: Exception | None = None
    try:
        results = run_population(setting, [d.objective for d in draws], seed=draws[0].seed,
                                   report=lambda member, epoch, acc: reports[member](epoch, acc),
                                   teacher=objective.teacher)
    except Exception as err:  # noqa: BLE001 - split, or end the single member as a single trial ends
        failure = err.with_traceback(None)
    if failure is None:
        for draw, result in zip(draws, results):
            _end(batch, draw, functools.partial(objective.finish, draw, result))
        return
    if len(draws) == 1:  # ends as a single trial ends (failed() gives an out-of-memory error's memory back)
        _end(batch, draws[0], functools.partial(objective.failed, draws[0].trial, failure))
        return
    if isinstance(failure, torch.OutOfMemoryError):
        free_device_memory()
    log.warning("a population of %d failed (%s: %s); training its halves again", len(draws),
                type(failure).__name__, (str(failure).splitlines() or [""])[0])
    half = len(draws) // 2
    _train(batch, objective, draws[:half])
    _train(batch, objective, draws[half:])


def _end(batch: _Batch, draw: Draw, result: Callable[[], float]) -> None:
    """Tell ``draw``'s trial what ``result()`` returns or raises."""
    try:
        value = result()
    except optuna.TrialPruned as pruned:
        batch.tell(draw.trial, state=TrialState.PRUNED, why=str(pruned))
    except Exception as err:  # noqa: BLE001 - the trial fails; the study's callback counts failures
        batch.tell(draw.trial, state=TrialState.FAIL, why=f"{type(err).__name__}: {err}")
    else:
        batch.tell(draw.trial, value)
