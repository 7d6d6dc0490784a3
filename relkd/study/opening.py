"""Create a study or resume it: the setting it was made with checked, the anchors enqueued."""
from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from ..fields import yaml_dump
from ..results.record import (ARTIFACTS_ATTR, DOCUMENT_FILES, INITS_ATTR, LADDER_ATTR, OBJECTIVES_ATTR, SETTING_ATTR,
                              STUDY_ATTR, VERSION_ATTR, WORKER, StudyMismatchError, TrialRecord, set_study_document,
                              setting_differences, study_document, trial_attrs, versions)
from ..results.pareto import objective_names
from ..setting import comparable_setting, setting_record
from .artifacts import NONE, Artifacts, attach_artifacts, upload_text
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
    if spec.artifacts not in (None, NONE):  # a store that cannot be opened (no boto3) stops before the study exists
        Artifacts(spec.artifacts, "optuna.artifacts").store  # noqa: B018
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
    artifacts = attach_artifacts(study, url, spec.artifacts, field="optuna.artifacts", writing=True)
    if artifacts is not None:
        artifacts.store  # noqa: B018 - opened now (one the study recorded): a store that cannot be stops here
    recorded = study.user_attrs.get(ARTIFACTS_ATTR)
    if spec.artifacts is not None and recorded is None:
        study.set_user_attr(ARTIFACTS_ATTR, spec.artifacts)  # readers without the study file find it
    elif spec.artifacts is not None and recorded != spec.artifacts:  # one worker's flag does not move the store
        log.warning("study %s keeps its artifacts in %s; this process writes its own to %s (optuna.artifacts / "
                    "--artifacts), where other commands will not look", spec.study_name, recorded, spec.artifacts)
    if created:
        study.set_user_attr(VERSION_ATTR, versions()["relkd"])
        set_study_document(study, STUDY_ATTR, _redacted_document(spec))
        if inits:
            study.set_user_attr(INITS_ATTR, inits)
        if spec.size is not None:
            study.set_user_attr(OBJECTIVES_ATTR, spec.size.objectives)
        _record_ladder(study, spec)
        enqueue_anchors(study, spec)
        _upload_documents(study, _redacted_document(spec), record)  # before the mark: its waiters find them
        set_study_document(study, SETTING_ATTR, record)  # the mark other workers wait for
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
        # the file's seed would replay the draws of the process that started with it: a sampler
        # seeded anew for each process that joins (and for each resume, from the study's state);
        # not the grid's, whose seed orders its cells, the same in every process
        if spec.sampler[0] != "grid":
            study.sampler = spec.make_sampler(joining_seed(spec.seed, len(study.trials),
                                                           None if enqueue_missing_anchors else WORKER))
        old_search = (study_document(study, STUDY_ATTR) or {}).get("search")
        if old_search is not None and old_search != spec.document["search"]:
            if spec.sampler[0] == "grid":
                raise StudyMismatchError(f"study {spec.study_name!r}: the search section changed, and a grid study "
                                         f"cannot change its grid; use a new study name")
            log.warning("study %s: the search section differs from the one the study was created with; "
                        "earlier trials were drawn from the old space", spec.study_name)
        set_study_document(study, STUDY_ATTR, _redacted_document(spec))
        _upload_documents(study, _redacted_document(spec), stored)
        _record_ladder(study, spec)
        if enqueue_missing_anchors:
            enqueue_anchors(study, spec)
    name_metrics(study)
    return study, url, created


def joining_seed(seed: int, trials: int, worker: str | None) -> int:
    """The sampler seed of a process that joins a study which exists: from the study's seed,
    its number of trials and, for ``relkd study worker``, the worker (host and process), so
    that two workers joining at once, or a resumed run and the run it resumes, do not draw the
    same parameters (a seeded sampler replays its sequence). ``relkd study run`` resumes
    deterministically from the study's state (``worker`` None). Not for the grid sampler: its
    seed shuffles the order of its cells, which every process must share (a cell's number must
    name the same parameters everywhere)."""
    text = f"{seed}/{trials}" + ("" if worker is None else f"/{worker}")
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


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
        stored = study_document(study, SETTING_ATTR)
        if stored is not None or time.monotonic() > deadline:
            return stored
        time.sleep(0.2)


def _upload_documents(study: optuna.Study, document: dict[str, Any], setting: dict[str, Any]) -> None:
    """The study file and the setting as artifacts (``study.yaml``, ``setting.json``), where
    optuna-dashboard shows them whole; nothing where the study has no artifact store."""
    upload_text(study, DOCUMENT_FILES[STUDY_ATTR], yaml_dump(document))
    upload_text(study, DOCUMENT_FILES[SETTING_ATTR], json.dumps(setting, indent=2) + "\n")


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
