"""The worker loop: run a study's trials until it has ``n_trials`` (over all workers), the
timeout passes or something is broken, and wait for other workers' last trials. What the
study produced (the best composition, the plots) is written by the caller
(:func:`relkd.analysis.outputs.write_outputs`; ``relkd study run`` does).

``n_trials`` counts the study's finished trials over all workers: completed and pruned
trials that trained, not invalid draws and not failures.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..engine import TeacherResult, get_teacher
from ..engine.calibrate import best_population
from ..engine.tracking import open_tracker
from ..objective import build_objective
from ..presets import preset
from ..adapt import resolve_student
from ..pretrain import prepare_inits, resolve_inits
from ..setting import Setting
from .opening import open_study
from .population import optimize_population
from ..tuning import Tuning, headroom_line, resolve_recipe
from ..results.record import (N_TRIALS_ATTR, RECIPE_ATTR, WORKER, TrialRecord, counted_trials, is_copy, is_counted,
                              set_study_document, study_document, trial_attrs, trial_counts)
from .seeds import enqueue_reruns
from ..results.ranking import record_best, search_verdict
from .spec import LABELLED_SINGLE_RUNS, StudySpec, population_or_error
from .storage import RACE_ERRORS, is_lost_race
from .trial import MAX_INVALID_IN_A_ROW, TrialRunner

__all__ = ["run_study", "StudyRun", "MAX_FAILURES_IN_A_ROW"]

log = logging.getLogger(__name__)

#: Rounds of re-runs at the end of a search: the leaders are looked at again after each round.
RERUN_ROUNDS = 3
#: The environment variable that sets the population size where no flag does (over the study file's).
POPULATION_ENV = "RELKD_POPULATION"
# After this many failed trials in a row something is broken (device, memory, data): stop.
MAX_FAILURES_IN_A_ROW = 5


@dataclass
class StudyRun:
    """What :func:`run_study` did."""

    study: optuna.Study
    storage: str
    created: bool
    trials_run: int = 0
    seconds: float = 0.0
    stopped_because: str = ""
    error: str | None = None  # set when the study stopped because something is broken
    counts: dict[str, int] = field(default_factory=dict)
    best_config: Path | None = None  # the exported best composition (best.yaml): set by write_outputs
    plot_dir: Path | None = None  # where the plots went (write_outputs)
    plots: list[Path] = field(default_factory=list)  # the plot files written
    reruns: int = 0  # re-runs of the leading compositions with more seeds this process trained
    verdict: dict | None = None  # whether the search beat the best anchor (relkd.results.ranking.search_verdict)
    population: int = 1  # trials this process trained together
    tuning: Tuning | None = None  # the tuned learning rate and the headroom (relkd.tuning), with a tune section


class _Progress:
    """A tqdm bar over the study's counted trials with the best value so far."""

    def __init__(self, enabled: bool, total: int | None, initial: int, best: float | None):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="trials", unit="trial", dynamic_ncols=True)
            self.show(best)

    def show(self, best: float | None) -> None:
        if self.bar is not None and best is not None:
            self.bar.set_postfix(best=f"{best:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _best_value(study: optuna.Study) -> float | None:
    """The best validation accuracy so far (the first objective of a multi-objective study)."""
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def run_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
    enqueue_missing_anchors: bool = True,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    population: int | str | None = None,
    log_to: str | None = None,
) -> StudyRun:
    """Create or resume ``spec``'s study and run trials until the study has ``n_trials``
    counted trials (flag, else the study file), ``timeout`` seconds pass (counted from the
    start, teacher training included; a trial in flight finishes), the grid is complete,
    :data:`MAX_FAILURES_IN_A_ROW` trials fail in a row (``error`` says why) or the process
    is interrupted. Finished trials are kept. Workers joining a study pass
    ``enqueue_missing_anchors=False``, so only ``relkd study run`` re-enqueues anchors.
    It writes no files: :func:`relkd.analysis.outputs.write_outputs` exports the best
    composition and writes the plots (``relkd study run`` calls it; workers do not).

    ``population`` (flag, else ``$RELKD_POPULATION``, else the study file's
    ``optuna.population``): how many trials this process trains together
    (:mod:`relkd.study.population`); ``"auto"`` measures the best size for this device once
    (:func:`relkd.engine.calibrate.best_population`). Re-runs train one at a time.
    ``log_to``: log each trial's parameters and per-epoch curves to a tracker
    (:mod:`relkd.engine.tracking`: ``tensorboard:DIR`` or ``mlflow:URI``)."""
    tracker = open_tracker(log_to, spec.study_name)  # a missing tracker package stops here, before anything trains
    n_trials = n_trials if n_trials is not None else spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    # resolved before anything trains, so a population the study cannot train stops here
    asked = 1 if spec.size is not None else _population_asked(spec, population)
    inits = prepare_inits(spec.setting, progress=progress)  # a missing init file stops here, before the study
    # cached by now: the checkpoint files the runs start from; an adapted student is made here, unless
    # each trial searches its size (then each trial adapts it to its ratio, relkd.study.sizes)
    setting = resolve_inits(spec.setting) if spec.size is not None else resolve_student(spec.setting,
                                                                                         progress=progress)
    study, url, created = open_study(spec, storage, enqueue_missing_anchors=enqueue_missing_anchors, inits=inits)
    if n_trials is not None:
        study.set_user_attr(N_TRIALS_ATTR, n_trials)
    start = time.perf_counter()
    done_before = len(counted_trials(study))
    result = StudyRun(study, url, created)
    teacher = get_teacher(setting, progress=progress) if _needs_teacher(spec) or setting.tune else None
    setting, result.tuning = _tuned_setting(study, setting, teacher, progress)  # counts against the timeout
    if n_trials is not None and done_before >= n_trials:
        result.stopped_because = f"the study already has {done_before} of {n_trials} trials"
        if spec.rerun is not None:  # the re-runs an earlier run did not finish
            result.reruns = _rerun_phase(study, spec, TrialRunner(spec, n_trials, setting,
                                                                        tracker=tracker))  # teacher: lazily
        result.counts = trial_counts(study)
        result.verdict = search_verdict(study)
        record_best(study)
        return result
    if n_trials is None and timeout is None:
        log.warning("neither n_trials nor timeout is set: running until the sampler is exhausted or interrupted")

    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)()  # None: journal files
    # the same timeout as the optimize loop's, counted from ``start``, as a wall-clock time
    deadline = float("inf") if timeout is None else time.time() + timeout - (time.perf_counter() - start)
    # the teacher: trained or loaded above, within the timeout
    objective = TrialRunner(spec, n_trials, setting, teacher=teacher, heartbeat=float(heartbeat or 0),
                            deadline=deadline, tracker=tracker)
    size = _population_size(setting, asked)
    result.population = size
    remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 0.0)
    bar = _Progress(progress, n_trials, done_before, _best_value(study))

    failures: list[str] = []  # errors of the failed trials since the last one that trained

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            failures.append(TrialRecord.of(trial).error or trial.system_attrs.get("fail_reason", "unknown error"))
            log.warning("trial %d failed: %s", trial.number, failures[-1])
            if len(failures) >= MAX_FAILURES_IN_A_ROW:
                result.error = f"{len(failures)} trials failed in a row; the last one: {failures[-1]}"
                result.stopped_because = result.error
                study.stop()
        elif is_counted(trial):
            failures.clear()
        if is_counted(trial):
            result.trials_run += 1
            if bar.bar is not None:
                bar.bar.update(1)
            bar.show(_best_value(study))
            values = None if trial.values is None else ", ".join(  # accuracy, then a size (multi-objective)
                [f"{trial.values[0]:.4f}", *(f"{v:.0f}" for v in trial.values[1:])])
            log.info("trial %d %s: %s", trial.number, trial.state.name.lower(),
                     values if values is not None else TrialRecord.of(trial).pruned_reason or "")
        if n_trials is not None and len(counted_trials(study)) >= n_trials and not result.stopped_because:
            result.stopped_because = f"the study has {n_trials} trials"
            study.stop()
        if on_trial is not None:
            on_trial(study, trial)

    try:
        while remaining is None or remaining > 0:
            try:
                if size > 1:
                    optimize_population(study, objective, size, timeout=remaining, callback=callback)
                else:
                    study.optimize(objective, timeout=remaining, callbacks=[callback], catch=(Exception,))
                break
            except RACE_ERRORS as err:
                if not is_lost_race(err) or objective.stop_reason:
                    raise
                log.info("another worker finished the same enqueued trial first; going on")
            remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 0.0)
    finally:
        bar.close()
    if spec.rerun is not None and not result.error:
        result.reruns = _rerun_phase(study, spec, objective)
    if objective.stop_reason and not result.stopped_because:
        result.stopped_because = objective.stop_reason
        if objective.invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
            result.error = objective.stop_reason
    if not result.stopped_because:
        elapsed = time.perf_counter() - start
        if timeout is not None and elapsed >= timeout:
            result.stopped_because = f"timeout of {timeout:g} s"
        elif spec.sampler[0] == "grid":
            result.stopped_because = "every cell of the grid has been run"
        else:
            result.stopped_because = "the sampler stopped the study"
    result.seconds = time.perf_counter() - start
    if enqueue_missing_anchors:  # relkd study run: the study's own process, which enqueues what is missing
        complete = n_trials is not None and len(counted_trials(study)) >= n_trials
        retire_waiting(study, result.stopped_because, keep_copies=not complete)
    result.counts = trial_counts(study)
    result.verdict = search_verdict(study)
    record_best(study)  # relkd's ranking where Optuna's tools show it
    return result


def retire_waiting(study: optuna.Study, why: str, *, keep_copies: bool = False) -> int:
    """When the study stops with trials still waiting (anchors past ``n_trials``, trials put back
    at the timeout) and no process trains any: mark them failed, ``skipped`` with the reason,
    so a finished study leaves nothing WAITING in Optuna's tools. They were never trained; the
    next ``relkd study run`` enqueues the anchors and plans the re-runs again. ``keep_copies``
    (a study short of its trials): copies of trials stopped while training (put back on
    SIGTERM, Optuna's retries) stay waiting for the next worker or run, since nothing would
    enqueue them again (a grid counts the stopped trial's cell as done). Returns how many."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):  # another worker is at work: it may take them
        return 0
    waiting = [t for t in trials if t.state == TrialState.WAITING and not (keep_copies and is_copy(t.system_attrs))]
    storage = study._storage
    attrs = trial_attrs(skipped=f"not trained: the study stopped ({why}) before it; the next relkd study run "
                                f"enqueues the anchors and re-runs again")
    for t in waiting:
        for key, value in attrs.items():
            storage.set_trial_user_attr(t._trial_id, key, value)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if waiting:
        log.info("%d waiting trials were not trained before the study stopped; marked skipped", len(waiting))
    return len(waiting)


def _tuned_setting(study: optuna.Study, setting: Setting, teacher: TeacherResult | None,
                   progress: bool) -> tuple[Setting, Tuning | None]:
    """``setting`` at the study's tuned learning rate, with its tuning: the one the study
    records (every worker trains at the same rate), else tuned here (or read from the cache)
    and recorded. Unchanged without a ``tune`` section."""
    recorded = study_document(study, RECIPE_ATTR)
    setting, tuning = resolve_recipe(setting, teacher=teacher, progress=progress, recorded=recorded)
    if tuning is not None:
        if recorded is None:
            set_study_document(study, RECIPE_ATTR, tuning.record())
        log.info("study %s: %s", study.study_name, headroom_line(tuning))
    return setting, tuning


def _waiting_reruns(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if TrialRecord.of(t).rerun is not None)


def _mine(study: optuna.Study) -> int:
    """How many re-runs this process has completed."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if (r := TrialRecord.of(t)).rerun is not None and r.worker == WORKER)


def _rerun_phase(study: optuna.Study, spec: StudySpec, objective: TrialRunner) -> int:
    """Once the search has ended: enqueue the re-runs of the leaders with more seeds (only
    those no process has made or taken yet) and train waiting re-runs, of this process or
    others, until none waits. A re-run can change the ranking (a leader that one lucky seed
    put first falls back), so the leaders are looked at again, for at most
    :data:`RERUN_ROUNDS` rounds. Returns how many re-runs this process trained."""
    objective.reruns_only, stop_reason = True, objective.stop_reason
    before = _mine(study)
    try:
        for _ in range(RERUN_ROUNDS):
            added = enqueue_reruns(study, spec.rerun, spec.setting.seed)
            if not added and not _waiting_reruns(study):
                break
            log.info("re-running the leading compositions and anchors with more seeds: %d runs", added)
            while _waiting_reruns(study):
                try:
                    study.optimize(objective, n_trials=1, catch=(Exception,))
                except RACE_ERRORS as err:
                    if not is_lost_race(err):
                        raise
    finally:
        objective.reruns_only, objective.stop_reason = False, stop_reason
    trained = _mine(study) - before
    return trained


def _population_size(setting: Setting, asked: int | str) -> int:
    """The population size this process trains with (``asked``: :func:`_population_asked`, 1
    for a multi-objective study); ``auto`` is measured for this device (cached per machine). A
    study with ``data.labelled`` trains one trial at a time."""
    if setting.data.labelled is not None:  # CE alone trains on another loader there (relkd.engine.training.fit)
        return 1
    if asked == "auto":
        return best_population(setting)
    return int(asked)


def _population_asked(spec: StudySpec, population: int | str | None) -> int | str:
    """The population asked for: the flag, else ``$RELKD_POPULATION``, else the study file's.
    A number above 1 for a study with ``data.labelled`` is an error naming where it came from."""
    field, value = "population", population
    if value is None and os.environ.get(POPULATION_ENV):
        text = os.environ[POPULATION_ENV]
        field, value = POPULATION_ENV, int(text) if text.strip().isdigit() else text
    if value is None:
        field, value = "optuna.population", spec.population
    value = population_or_error(value, field, _raise_value_error)
    if spec.setting.data.labelled is not None and value not in ("auto", 1):
        raise ValueError(f"{field}: {value}: {LABELLED_SINGLE_RUNS}")
    return value


def _raise_value_error(field: str, message: str) -> None:
    raise ValueError(f"{field}: {message}")


def _needs_teacher(spec: StudySpec) -> bool:
    """Whether any anchor or any draw of the space uses the teacher."""
    space = spec.space
    kd_possible = space.kd.contains(True)
    terms_possible = any(space.terms.contains(n) for n in range(1, 9))
    return kd_possible or terms_possible or any(build_objective(preset(a)).needs_teacher for a in spec.anchors)
