"""Run a study: create or resume it, enqueue the anchors, train one student per trial.

Everything relkd knows about a trial is an ordinary Optuna attribute, so
``optuna.load_study``, the ``optuna`` CLI and optuna-dashboard read it:

- the trial's value is the student's validation accuracy after the last epoch; every epoch
  is reported as an intermediate value (step = epochs trained);
- user attributes: ``objective_config`` (the composition, in the format of
  :func:`relkd.load_config`), ``part_means`` (mean of each loss part), ``wall_seconds``,
  ``seed``, ``versions``, ``val_history``, ``epochs``, ``worker`` (host:pid), ``init_sha256`` (the
  student's init checkpoint, transfer learning only); ``anchor`` (preset name) on the
  known methods; ``invalid_combination`` (the rules a draw broke; pruned without
  training), ``pruned_reason`` (the pruner, or a NaN/inf loss) or ``error`` (a failure);
- study user attributes: ``relkd.setting`` (the setting every trial used), ``relkd.study``
  (the canonical study file) and ``relkd.version``.

``n_trials`` counts the study's finished trials over all workers: completed and pruned
trials that trained, not invalid draws and not failures.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..engine import NonFiniteLossError, TeacherResult, get_teacher, run_trial
from ..objective import build_objective
from ..pretrain import prepare_inits
from ..presets import preset
from .record import (
    INITS_ATTR,
    N_TRIALS_ATTR,
    SETTING_ATTR,
    STUDY_ATTR,
    VERSION_ATTR,
    WORKER,
    StudyMismatchError,
    comparable_setting,
    counted_trials,
    is_counted,
    setting_differences,
    setting_record,
    trial_counts,
    versions,
)
from .spec import StudySpec
from .storage import is_lost_race, open_storage, redact, resolve_storage

__all__ = ["open_study", "run_study", "StudyRun"]

log = logging.getLogger(__name__)

# After this many invalid draws in a row the space is hopeless: stop and say so.
MAX_INVALID_IN_A_ROW = 200
# After this many failed trials in a row something is broken (device, memory, data): stop.
MAX_FAILURES_IN_A_ROW = 5


def open_study(spec: StudySpec, storage: str | None = None, *, enqueue_missing_anchors: bool = False,
               inits: dict[str, str] | None = None) -> tuple[optuna.Study, str, bool]:
    """Create the study or load it; return ``(study, storage_url, created)``.

    A new study gets its anchors enqueued, then the setting as a study attribute (the mark
    other workers wait for). An existing one must have been created with the same setting
    (data, models, budget, seed; the device and data folder may differ per worker), else
    :class:`StudyMismatchError` names what differs. ``enqueue_missing_anchors`` enqueues
    again the anchors that have no finished, running or waiting trial (e.g. interrupted).
    ``inits`` (from :func:`relkd.pretrain.prepare_inits`) are the init checkpoints' hashes:
    stored with a new study, and on resume they must match, wherever the files lie."""
    url = resolve_storage(storage, spec.study_name, spec.storage)
    backend = open_storage(url, heartbeat_interval=spec.heartbeat_interval)
    kwargs = dict(study_name=spec.study_name, storage=backend, sampler=spec.make_sampler(),
                  pruner=spec.make_pruner())
    try:
        study = optuna.create_study(direction="maximize", load_if_exists=False, **kwargs)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
        created = False
    record = setting_record(spec.setting)
    if created:
        study.set_user_attr(VERSION_ATTR, versions()["relkd"])
        study.set_user_attr(STUDY_ATTR, _redacted_document(spec))
        if inits:
            study.set_user_attr(INITS_ATTR, inits)
        _enqueue_anchors(study, spec)
        study.set_user_attr(SETTING_ATTR, record)
        log.info("created study %s in %s", spec.study_name, redact(url))
    else:
        stored = _wait_for_setting(study)
        if stored is None:
            raise StudyMismatchError(
                f"study {spec.study_name!r} in {redact(url)} has no relkd setting: it was not created by relkd, "
                f"or its creator stopped while creating it; choose another study name (optuna.study_name or "
                f"--study-name) or delete it (optuna delete-study)")
        differences = setting_differences(comparable_setting(stored), comparable_setting(record))
        if inits is not None:
            stored_inits = study.user_attrs.get(INITS_ATTR) or {}
            differences += [f"{field}: checkpoint sha256 {stored_inits.get(field)} in the study, {inits.get(field)} "
                            f"here" for field in sorted(set(stored_inits) | set(inits))
                            if stored_inits.get(field) != inits.get(field)]
        if differences:
            raise StudyMismatchError(
                f"study {spec.study_name!r} in {redact(url)} was created with a different setting, so its trials "
                f"would not be comparable: {'; '.join(differences)}. Use a new study name "
                f"(optuna.study_name or --study-name) or restore the file.")
        log.info("resuming study %s in %s (%d trials so far)", spec.study_name, redact(url), len(study.trials))
        old_search = (study.user_attrs.get(STUDY_ATTR) or {}).get("search")
        if old_search is not None and old_search != spec.document["search"]:
            if spec.sampler[0] == "grid":
                raise StudyMismatchError(f"study {spec.study_name!r}: the search section changed, and a grid study "
                                         f"cannot change its grid; use a new study name")
            log.warning("study %s: the search section differs from the one the study was created with; "
                        "earlier trials were drawn from the old space", spec.study_name)
        study.set_user_attr(STUDY_ATTR, _redacted_document(spec))
        if enqueue_missing_anchors:
            _enqueue_anchors(study, spec)
    return study, url, created


def _wait_for_setting(study: optuna.Study, seconds: float = 30.0) -> dict[str, Any] | None:
    """The stored setting; a worker that loads a study another worker has just created
    waits for the creator to store it (after the anchors: slow on a distant database)."""
    deadline = time.monotonic() + seconds
    while True:
        stored = study.user_attrs.get(SETTING_ATTR)
        if stored is not None or time.monotonic() > deadline:
            return stored
        time.sleep(0.2)


def _redacted_document(spec: StudySpec) -> dict[str, Any]:
    document = dict(spec.document)
    document["optuna"] = dict(document["optuna"])
    if document["optuna"].get("storage"):
        document["optuna"]["storage"] = redact(document["optuna"]["storage"])
    return document


def _enqueue_anchors(study: optuna.Study, spec: StudySpec) -> None:
    """Enqueue each anchor that has no completed, pruned, running or waiting trial. Where the
    anchor's composition lies in the search space its parameters are enqueued too, so the
    sampler learns from it like from any trial."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    present = {t.user_attrs.get("anchor") for t in study.get_trials(deepcopy=False, states=live)}
    missing = [name for name in spec.anchors if name not in present]
    for name in missing:
        params = spec.space.params_for(preset(name))
        study.enqueue_trial(params or {}, user_attrs={"anchor": name, "anchor_in_space": params is not None})
    if missing:
        log.info("enqueued anchors: %s", ", ".join(missing))


# ----------------------------------------------------------------------------- the objective


@dataclass
class _TrialObjective:
    spec: StudySpec
    n_trials: int | None
    teacher: TeacherResult | None = None
    heartbeat: float = 0.0  # the storage's heartbeat interval (s); 0: none, so dead workers' trials stay RUNNING
    deadline: float = float("inf")  # time.time() at which the study's timeout ends
    invalid_in_a_row: int = 0
    stop_reason: str = ""  # set when a trial stops the study

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._train(trial)
        except KeyboardInterrupt:  # Optuna marks the trial failed; an anchor or a retry must not be lost
            try:
                if _put_back(trial.study, _frozen(trial)):
                    log.info("trial %d was interrupted; enqueued it again for the next worker", trial.number)
            except Exception as err:  # noqa: BLE001 - the interrupt matters more than the queue
                log.warning("trial %d was interrupted and could not be enqueued again: %s", trial.number, err)
            raise

    def _train(self, trial: optuna.Trial) -> float:
        self._check_room(trial)
        anchor = trial.user_attrs.get("anchor")
        if anchor:
            config = preset(anchor)
            if trial.user_attrs.get("anchor_in_space"):
                self.spec.space.sample(trial)  # replays the enqueued parameters
        else:
            config, problems = self.spec.space.sample(trial)
            if problems:
                self.invalid_in_a_row += 1
                trial.set_user_attr("invalid_combination", problems)
                if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
                    self.stop_reason = (f"{self.invalid_in_a_row} invalid draws in a row: the search space allows "
                                        f"almost no valid combination ({problems[0]})")
                    trial.study.stop()
                raise optuna.TrialPruned(f"invalid combination, not trained: {'; '.join(problems)}")
            self.invalid_in_a_row = 0
        setting = self.spec.setting
        trial.set_user_attr("objective_config", config)
        trial.set_user_attr("seed", setting.seed)
        trial.set_user_attr("versions", versions())
        trial.set_user_attr("worker", WORKER)
        objective = build_objective(config)
        if objective.needs_teacher and self.teacher is None:
            self.teacher = get_teacher(setting)

        def report(epoch: int, accuracy: float) -> bool:
            trial.report(accuracy, epoch + 1)
            return not anchor and trial.should_prune()  # anchors always finish: they are the baseline

        try:
            metrics = run_trial(setting, config, report, teacher=self.teacher)
        except NonFiniteLossError as err:
            trial.set_user_attr("pruned_reason", f"non-finite loss: {err}")
            raise optuna.TrialPruned(f"non-finite loss: {err}") from None
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
        for key in ("part_means", "wall_seconds", "train_seconds", "val_history", "epochs", "samples_per_second",
                    "init_sha256"):
            if key in metrics:
                trial.set_user_attr(key, metrics[key])
        if metrics["stopped_early"]:
            reason = f"pruned by the {self.spec.pruner[0]} pruner after epoch {metrics['epochs']}"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        return float(metrics["val_accuracy"])

    def _check_room(self, trial: optuna.Trial) -> None:
        """With several workers, two may start the last trial at once: the later one is
        pruned before it draws anything (marked ``skipped``, not counted), an enqueued trial
        it took is enqueued again, and its worker stops.

        While the trials of other workers fill the rest of ``n_trials`` but have not finished,
        this worker waits (on storages with a heartbeat): one whose worker died is failed by
        Optuna's heartbeat check and enqueued again, and then this worker trains it. Without
        the wait the last trials of a dead worker would be lost."""
        if self.n_trials is None:
            return
        study = trial.study
        waited = False
        while True:
            trials = study.get_trials(deepcopy=False)
            counted = sum(1 for t in trials if is_counted(t))
            others = [t for t in trials if t.state == TrialState.RUNNING and t.number < trial.number]
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
        _put_back(study, mine)
        full = counted >= self.n_trials or not waited
        trial.set_user_attr("skipped", f"the study already has {self.n_trials} trials" if full
                            else "a retry of another worker's trial goes first")
        if full or time.time() >= self.deadline:
            self.stop_reason = (f"the study has {self.n_trials} trials (other workers finished them)" if full
                                else "timeout while waiting for other workers' trials")
            study.stop()
        raise optuna.TrialPruned(f"not trained: {trial.user_attrs.get('skipped', 'skipped')}")


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of a running trial."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def _put_back(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Enqueue again a trial that was handed to this worker (an anchor or other enqueued
    trial, or Optuna's retry of a dead worker's trial) and that this worker will not finish:
    same parameters, anchor attributes and retry history. Returns whether it was one."""
    system = trial.system_attrs
    if "fixed_params" not in system and "failed_trial" not in system:
        return False  # the sampler's own draw: the next trial draws again
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k in ("anchor", "anchor_in_space")},
        system_attrs={k: v for k, v in system.items() if k in ("fixed_params", "failed_trial", "retry_history")}))
    return True


# ----------------------------------------------------------------------------- running


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
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
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
) -> StudyRun:
    """Create or resume ``spec``'s study and run trials until the study has ``n_trials``
    counted trials (flag, else the study file), ``timeout`` seconds pass (counted from the
    start, teacher training included; a trial in flight finishes), the grid is complete,
    :data:`MAX_FAILURES_IN_A_ROW` trials fail in a row (``error`` says why) or the process
    is interrupted. Finished trials are kept. Workers joining a study pass
    ``enqueue_missing_anchors=False``, so only ``relkd study run`` re-enqueues anchors."""
    n_trials = n_trials if n_trials is not None else spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    inits = prepare_inits(spec.setting, progress=progress)  # a missing init file stops here, before the study
    study, url, created = open_study(spec, storage, enqueue_missing_anchors=enqueue_missing_anchors, inits=inits)
    if n_trials is not None:
        study.set_user_attr(N_TRIALS_ATTR, n_trials)
    start = time.perf_counter()
    done_before = len(counted_trials(study))
    result = StudyRun(study, url, created)
    if n_trials is not None and done_before >= n_trials:
        result.stopped_because = f"the study already has {done_before} of {n_trials} trials"
        result.counts = trial_counts(study)
        return result
    if n_trials is None and timeout is None:
        log.warning("neither n_trials nor timeout is set: running until the sampler is exhausted or interrupted")

    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)()  # None: journal files
    # the same timeout as the optimize loop's, counted from ``start``, as a wall-clock time
    deadline = float("inf") if timeout is None else time.time() + timeout - (time.perf_counter() - start)
    objective = _TrialObjective(spec, n_trials, heartbeat=float(heartbeat or 0), deadline=deadline)
    if _needs_teacher(spec):  # trained (or loaded) before the first trial: it counts against the timeout
        objective.teacher = get_teacher(spec.setting, progress=progress)
    remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 0.0)
    bar = _Progress(progress, n_trials, done_before, _best_value(study))

    failures: list[str] = []  # errors of the failed trials since the last one that trained

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            failures.append(trial.user_attrs.get("error") or trial.system_attrs.get("fail_reason", "unknown error"))
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
            log.info("trial %d %s: %s", trial.number, trial.state.name.lower(),
                     f"{trial.value:.4f}" if trial.value is not None else trial.user_attrs.get("pruned_reason", ""))
        if n_trials is not None and len(counted_trials(study)) >= n_trials and not result.stopped_because:
            result.stopped_because = f"the study has {n_trials} trials"
            study.stop()
        if on_trial is not None:
            on_trial(study, trial)

    try:
        while remaining is None or remaining > 0:
            try:
                study.optimize(objective, timeout=remaining, callbacks=[callback], catch=(Exception,))
                break
            except ValueError as err:
                if not is_lost_race(err) or objective.stop_reason:
                    raise
                log.info("another worker finished the same enqueued trial first; going on")
            remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 0.0)
    finally:
        bar.close()
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
    result.counts = trial_counts(study)
    return result


def _needs_teacher(spec: StudySpec) -> bool:
    """Whether any anchor or any draw of the space uses the teacher."""
    space = spec.space
    kd_possible = space.kd.contains(True)
    terms_possible = any(space.terms.contains(n) for n in range(1, 9))
    return kd_possible or terms_possible or any(build_objective(preset(a)).needs_teacher for a in spec.anchors)
