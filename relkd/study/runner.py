"""Run a study: create or resume it, enqueue the anchors, train one student per trial.

Everything relkd knows about a trial is an ordinary Optuna attribute, so
``optuna.load_study``, the ``optuna`` CLI and optuna-dashboard read it:

- the trial's value is the student's validation accuracy after the last epoch; every epoch
  is reported as an intermediate value (step = epochs trained);
- user attributes: ``objective_config`` (the composition, in the format of
  :func:`relkd.load_config`), ``part_means`` (mean of each loss part), ``wall_seconds``,
  ``seed``, ``versions``, ``val_history``, ``epochs``; ``anchor`` (preset name) on the
  known methods; ``invalid_combination`` (the rules a draw broke; pruned without
  training), ``pruned_reason`` (the pruner, or a NaN/inf loss) or ``error`` (a failure);
- study user attributes: ``relkd.setting`` (the setting every trial used), ``relkd.study``
  (the canonical study file) and ``relkd.version``.

``n_trials`` counts the study's finished trials over all workers: completed and pruned
trials that trained, not invalid draws and not failures.
"""
from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..engine import NonFiniteLossError, TeacherResult, get_teacher, run_trial
from ..objective import build_objective
from ..relation.presets import preset
from .spec import StudySpec
from .storage import open_storage, redact, resolve_storage

__all__ = ["open_study", "run_study", "StudyRun", "counted_trials", "is_counted", "versions", "StudyMismatchError",
           "SETTING_ATTR", "STUDY_ATTR"]

log = logging.getLogger(__name__)

SETTING_ATTR = "relkd.setting"
STUDY_ATTR = "relkd.study"
VERSION_ATTR = "relkd.version"
# After this many invalid draws in a row the space is hopeless: stop and say so.
MAX_INVALID_IN_A_ROW = 200


class StudyMismatchError(ValueError):
    """The study exists with a different setting than the study file's."""


def versions() -> dict[str, str]:
    import torch

    from .. import __version__

    return {"relkd": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def is_counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A finished trial that trained: completed or pruned, not an invalid draw or a skip."""
    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state == TrialState.PRUNED and not {"invalid_combination", "skipped"} & set(trial.user_attrs)


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if is_counted(t)]


def _setting_differences(stored: dict[str, Any], current: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(current)):
        where = f"{path}.{key}" if path else key
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_setting_differences(a, b, where))
        elif a != b:
            out.append(f"{where}: {a!r} in the study, {b!r} in the file")
    return out


def _setting_record(spec: StudySpec) -> dict[str, Any]:
    """The part of the study file that every trial must share (not search / optuna)."""
    return {k: v for k, v in spec.setting.to_dict().items() if k not in ("search", "optuna", "name")}


def open_study(spec: StudySpec, storage: str | None = None) -> tuple[optuna.Study, str, bool]:
    """Create the study or load it; return ``(study, storage_url, created)``.

    A new study gets the setting as study attributes and the anchors enqueued. An existing
    one must have been created with the same setting (data, models, budget, seed), else
    :class:`StudyMismatchError` names what differs."""
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
    record = _setting_record(spec)
    if created:
        study.set_user_attr(SETTING_ATTR, record)
        study.set_user_attr(VERSION_ATTR, versions()["relkd"])
        _enqueue_anchors(study, spec)
        log.info("created study %s in %s", spec.study_name, redact(url))
    else:
        stored = _wait_for_setting(study)
        if stored is None:
            raise StudyMismatchError(f"study {spec.study_name!r} in {redact(url)} was not created by relkd; "
                                     f"choose another study name (optuna.study_name or --study-name)")
        differences = _setting_differences(stored, record)
        if differences:
            raise StudyMismatchError(
                f"study {spec.study_name!r} in {redact(url)} was created with a different setting, so its trials "
                f"would not be comparable: {'; '.join(differences)}. Use a new study name "
                f"(optuna.study_name or --study-name) or restore the file.")
        log.info("resuming study %s in %s (%d trials so far)", spec.study_name, redact(url), len(study.trials))
    study.set_user_attr(STUDY_ATTR, _redacted_document(spec))
    return study, url, created


def _wait_for_setting(study: optuna.Study, seconds: float = 10.0) -> dict[str, Any] | None:
    """The stored setting; a worker that loads a study another worker has just created
    waits a moment for the creator to store it."""
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
    """Enqueue each anchor once. Where the anchor's composition lies in the search space its
    parameters are enqueued too, so the sampler learns from it like from any trial."""
    present = {t.user_attrs.get("anchor") for t in study.get_trials(deepcopy=False)}
    for name in spec.anchors:
        if name in present:
            continue
        params = spec.space.params_for(preset(name))
        study.enqueue_trial(params or {}, user_attrs={"anchor": name, "anchor_in_space": params is not None})
    log.info("enqueued anchors: %s", ", ".join(spec.anchors) or "none")


# ----------------------------------------------------------------------------- the objective


@dataclass
class _TrialObjective:
    spec: StudySpec
    n_trials: int | None
    teacher: TeacherResult | None = None
    invalid_in_a_row: int = 0

    def __call__(self, trial: optuna.Trial) -> float:
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
                    raise ValueError(f"{self.invalid_in_a_row} invalid draws in a row; the search space allows "
                                     f"almost no valid combination: {problems[0]}")
                raise optuna.TrialPruned(f"invalid combination, not trained: {'; '.join(problems)}")
            self.invalid_in_a_row = 0
        self._check_room(trial)
        setting = self.spec.setting
        trial.set_user_attr("objective_config", config)
        trial.set_user_attr("seed", setting.seed)
        trial.set_user_attr("versions", versions())
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
        for key in ("part_means", "wall_seconds", "train_seconds", "val_history", "epochs", "samples_per_second"):
            trial.set_user_attr(key, metrics[key])
        if metrics["stopped_early"]:
            reason = f"pruned by the {self.spec.pruner[0]} pruner after epoch {metrics['epochs']}"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        return float(metrics["val_accuracy"])

    def _check_room(self, trial: optuna.Trial) -> None:
        """With several workers, two may start the last trial at once: the later one is
        pruned untrained (marked ``skipped``, not counted) and its worker stops."""
        if self.n_trials is None:
            return
        study = trial.study
        taken = len(counted_trials(study)) + sum(
            1 for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < trial.number)
        if taken >= self.n_trials:
            trial.set_user_attr("skipped", f"the study already has {self.n_trials} trials")
            study.stop()
            raise optuna.TrialPruned(f"not trained: the study already has {self.n_trials} trials")


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
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> StudyRun:
    """Create or resume ``spec``'s study and run trials until the study has ``n_trials``
    counted trials (flag, else the study file), ``timeout`` seconds pass (counted from the
    start, teacher training included; a trial in flight finishes), the sampler has nothing
    left (brute force) or the process is interrupted. Completed trials are kept."""
    n_trials = n_trials if n_trials is not None else spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    study, url, created = open_study(spec, storage)
    if n_trials is not None:
        study.set_user_attr("relkd.n_trials", n_trials)
    start = time.perf_counter()
    done_before = len(counted_trials(study))
    result = StudyRun(study, url, created)
    if n_trials is not None and done_before >= n_trials:
        result.stopped_because = f"the study already has {done_before} of {n_trials} trials"
        result.counts = trial_counts(study)
        return result
    if n_trials is None and timeout is None:
        log.warning("neither n_trials nor timeout is set: running until the sampler is exhausted or interrupted")

    objective = _TrialObjective(spec, n_trials)
    if _needs_teacher(spec):  # trained (or loaded) before the first trial: it counts against the timeout
        objective.teacher = get_teacher(spec.setting, progress=progress)
    remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 0.0)
    bar = _Progress(progress, n_trials, done_before, _best_value(study))

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_counted(trial):
            result.trials_run += 1
            if bar.bar is not None:
                bar.bar.update(1)
            bar.show(_best_value(study))
            log.info("trial %d %s: %s", trial.number, trial.state.name.lower(),
                     f"{trial.value:.4f}" if trial.value is not None else trial.user_attrs.get("pruned_reason", ""))
        if n_trials is not None and len(counted_trials(study)) >= n_trials:
            result.stopped_because = f"the study has {n_trials} trials"
            study.stop()
        if on_trial is not None:
            on_trial(study, trial)

    try:
        if remaining is None or remaining > 0:
            study.optimize(objective, timeout=remaining, callbacks=[callback], catch=(Exception,))
    finally:
        bar.close()
    if not result.stopped_because:
        elapsed = time.perf_counter() - start
        result.stopped_because = (f"timeout of {timeout:g} s" if timeout is not None and elapsed >= timeout
                                  else "the sampler has no more combinations")
    result.seconds = time.perf_counter() - start
    result.counts = trial_counts(study)
    return result


def _needs_teacher(spec: StudySpec) -> bool:
    """Whether any anchor or any draw of the space uses the teacher."""
    space = spec.space
    kd_possible = space.kd.contains(True)
    terms_possible = any(space.terms.contains(n) for n in range(1, 9))
    return kd_possible or terms_possible or any(build_objective(preset(a)).needs_teacher for a in spec.anchors)


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, with the pruned ones split into pruned-after-training and invalid draws."""
    counts = {state.name.lower(): 0 for state in TrialState}
    counts["invalid_draws"] = 0
    counts["skipped"] = 0
    for t in study.get_trials(deepcopy=False):
        if "invalid_combination" in t.user_attrs:
            counts["invalid_draws"] += 1
        elif "skipped" in t.user_attrs:
            counts["skipped"] += 1
        else:
            counts[t.state.name.lower()] += 1
    return counts


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
