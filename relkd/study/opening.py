"""Create a study or resume it: the setting it was made with checked, the anchors enqueued."""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from ..results.record import (INITS_ATTR, LADDER_ATTR, OBJECTIVES_ATTR, SETTING_ATTR, STUDY_ATTR, VERSION_ATTR,
                              StudyMismatchError, TrialRecord, setting_differences, trial_attrs, versions)
from ..results.pareto import objective_names
from ..setting import comparable_setting, setting_record
from .spec import StudySpec
from .storage import open_storage, redact, resolve_storage

__all__ = ["open_study", "enqueue_anchors"]

log = logging.getLogger(__name__)


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
    directions = spec.size.directions if spec.size is not None else ["maximize"]
    try:
        study = optuna.create_study(directions=directions, load_if_exists=False, **kwargs)
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
        if spec.size is not None:
            study.set_user_attr(OBJECTIVES_ATTR, spec.size.objectives)
        _record_ladder(study, spec)
        enqueue_anchors(study, spec)
        study.set_user_attr(SETTING_ATTR, record)
        log.info("created study %s in %s", spec.study_name, redact(url))
    else:
        stored = _wait_for_setting(study)
        if [d.name.lower() for d in study.directions] != directions:
            raise StudyMismatchError(
                f"study {spec.study_name!r} in {redact(url)} has {len(study.directions)} objective(s) and the study "
                f"file {len(directions)}; a study keeps its objectives: use a new study name")
        if stored is None:
            raise StudyMismatchError(
                f"study {spec.study_name!r} in {redact(url)} has no relkd setting: it was not created by relkd, "
                f"or its creator stopped while creating it; choose another study name (optuna.study_name or "
                f"StudySpec.renamed) or delete it (optuna delete-study)")
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
                f"(optuna.study_name or StudySpec.renamed) or restore the file.")
        log.info("resuming study %s in %s (%d trials so far)", spec.study_name, redact(url), len(study.trials))
        old_search = (study.user_attrs.get(STUDY_ATTR) or {}).get("search")
        if old_search is not None and old_search != spec.document["search"]:
            if spec.sampler[0] == "grid":
                raise StudyMismatchError(f"study {spec.study_name!r}: the search section changed, and a grid study "
                                         f"cannot change its grid; use a new study name")
            log.warning("study %s: the search section differs from the one the study was created with; "
                        "earlier trials were drawn from the old space", spec.study_name)
        study.set_user_attr(STUDY_ATTR, _redacted_document(spec))
        _record_ladder(study, spec)
        if enqueue_missing_anchors:
            enqueue_anchors(study, spec)
    name_metrics(study)
    return study, url, created


def name_metrics(study: optuna.Study) -> None:
    """Name the study's values for Optuna's tools (``study.metric_names``: optuna-dashboard shows
    ``val_accuracy``, not "Objective 0"): :func:`relkd.results.pareto.objective_names`."""
    names = objective_names(study)
    if study.metric_names != names:
        with warnings.catch_warnings():  # marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def _record_ladder(study: optuna.Study, spec: StudySpec) -> None:
    """Keep the ladder's rungs with the study, so readers know the rung each trial reached."""
    if spec.ladder is not None and study.user_attrs.get(LADDER_ATTR) != spec.ladder.record():
        study.set_user_attr(LADDER_ATTR, spec.ladder.record())


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


def enqueue_anchors(study: optuna.Study, spec: StudySpec) -> None:
    """Enqueue each anchor that has no completed, pruned, running or waiting trial. Where the
    anchor's composition lies in the search space its parameters are enqueued too, so the
    sampler learns from it like from any trial."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    def ratio(t: optuna.trial.FrozenTrial) -> float | None:  # an enqueued trial's parameters are fixed_params
        if spec.size is None or spec.size.ratios is None:
            return None
        return t.params.get("ratio", (t.system_attrs.get("fixed_params") or {}).get("ratio"))

    present = {(TrialRecord.of(t).anchor, ratio(t)) for t in study.get_trials(deepcopy=False, states=live)}
    sizes = spec.size.anchor_params() if spec.size is not None else [{}]
    missing = [(name, extra) for name in spec.anchors for extra in sizes if (name, extra.get("ratio")) not in present]
    for name, extra in missing:
        params = spec.space.params_for(spec.setting.preset(name))
        study.enqueue_trial({**(params or {}), **extra},
                            user_attrs=trial_attrs(anchor=name, anchor_in_space=params is not None))
    if missing:
        log.info("enqueued anchors: %s", ", ".join(name + (f" (ratio {extra['ratio']})" if extra else "")
                                                   for name, extra in missing))
