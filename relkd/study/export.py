"""Read a finished (or running) study: status, ranking, export of compositions.

Everything here needs only the storage and the study name: the setting every trial used is
stored in the study (``relkd.setting``), so no study file is needed to export, report the
status or confirm.

A multi-objective study (validation accuracy against student size) has no single best: its
status shows the Pareto front (:mod:`relkd.results.pareto`), and export wants a trial
chosen by size (``max_params``, ``max_macs``) or by number.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import save_config, validate_config
from ..fields import yaml_dump
from ..files import write_text
from ..setting import Setting, validate_setting
from ..tuning import Tuning, headroom_line, tuned
from ..results.pareto import accuracy, best_within, is_multi_objective, objective_names, objectives_phrase, pareto_front
from ..results.ranking import Composition, compositions, search_verdict, verdict_line
from ..results.record import (N_TRIALS_ATTR, RECIPE_ATTR, SETTING_ATTR, TrialRecord, counted_trials, study_document,
                              trial_counts, versions)
from .artifacts import attach_artifacts, upload_study_file
from .storage import open_storage, redact, resolve_storage, tool_storage

__all__ = ["load_relkd_study", "ranked_trials", "study_status", "export_trials", "study_setting", "study_tuning",
           "anchor_values", "composition_label", "student_file"]

log = logging.getLogger(__name__)


def load_relkd_study(study_name: str, storage: str | None = None, *,
                     artifacts: str | None = None) -> tuple[optuna.Study, str]:
    """Load a study made by relkd from ``storage`` (flag, ``OPTUNA_STORAGE``, or the default
    SQLite file of that study name), linked to its artifact store (``artifacts``: a location
    given with ``--artifacts``; else the study's own: :func:`relkd.study.artifacts.attach_artifacts`)."""
    url = resolve_storage(storage, study_name)
    if url.startswith("sqlite:///") and storage is None and not os.environ.get("OPTUNA_STORAGE"):
        path = Path(url[len("sqlite:///"):])
        if not path.exists() or path.stat().st_size == 0:
            raise ValueError(f"no study {study_name!r}: {path} does not exist; run `relkd study run STUDY.yaml` "
                             f"first or give the storage argument")
    backend = open_storage(url, heartbeat_interval=0, create=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise ValueError(f"no study {study_name!r} in {redact(url)}; studies there: {', '.join(names) or 'none'}")
    if study_document(study, SETTING_ATTR) is None:
        raise ValueError(f"study {study_name!r} in {redact(url)} was not made by relkd (no {SETTING_ATTR} attribute)")
    attach_artifacts(study, url, artifacts)
    return study, url


def study_setting(study: optuna.Study) -> Setting:
    """The setting every trial of the study used: at its tuned learning rate where it tuned one."""
    record = dict(study_document(study, SETTING_ATTR))
    record["name"] = study.study_name
    setting = validate_setting(record)
    tuning = study_tuning(study)
    return setting if tuning is None else tuned(setting, tuning)


def study_tuning(study: optuna.Study) -> Tuning | None:
    """The study's recipe tuning (:mod:`relkd.tuning`), or ``None`` where it did not tune one."""
    recorded = study_document(study, RECIPE_ATTR)
    return Tuning.from_record(recorded) if recorded else None


def ranked_trials(study: optuna.Study, *, include_anchors: bool = True) -> list[optuna.trial.FrozenTrial]:
    """Completed compositions, best mean validation accuracy over seeds first (re-runs are
    folded into the trial they re-run: :func:`relkd.results.ranking.compositions`); ties broken
    by trial number. A trial of a study with a fidelity ladder completes only at the top rung,
    so this ranks by the top rung reached."""
    return [c.trial for c in compositions(study, include_anchors=include_anchors)]


def anchor_values(study: optuna.Study) -> dict[str, float]:
    """Validation accuracy of each completed anchor (mean over its seeds), by preset name; the
    best of its students where an anchor was trained at several sizes (multi-objective)."""
    values: dict[str, float] = {}
    for c in compositions(study):  # best first
        if c.anchor is not None:
            values.setdefault(c.anchor, c.mean)
    return values


def composition_label(trial: optuna.trial.FrozenTrial) -> str:
    """``anchor sp+kd`` or ``trial 17``."""
    anchor = TrialRecord.of(trial).anchor
    return f"anchor {anchor}" if anchor else f"trial {trial.number}"


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Trials by state, best value and composition, anchors and an ETA, as plain data.

    On a multi-objective study ``best`` and ``verdict`` are ``None`` (there is no single best)
    and two keys more say what there is: ``objectives`` (what the trials' values are) and
    ``pareto`` (the front's rows, :func:`relkd.results.pareto.pareto_front`)."""

    multi = is_multi_objective(study)
    counts = trial_counts(study)
    counted = counted_trials(study)
    target = study.user_attrs.get(N_TRIALS_ATTR)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in counted
                 if t.datetime_complete and t.datetime_start]
    running = counts.get("running", 0)
    eta = None
    if target is not None and durations:
        remaining = max(target - len(counted), 0)
        eta = remaining * statistics.fmean(durations) / max(running, 1)
    ranked = [] if multi else compositions(study)
    best = ranked[0] if ranked else None
    verdict = None if multi else search_verdict(study)
    status = {
        "study": study.study_name,
        "counts": counts,
        "finished": len(counted),
        "n_trials": target,
        "mean_trial_seconds": statistics.fmean(durations) if durations else None,
        "eta_seconds": eta,
        "best": None if best is None else {
            **best.summary(), "value": best.mean, "objective_config": best.record.config,
        },
        "anchors": anchor_values(study),
        "recipe": recipe_status(study),
        "verdict": verdict,
        "verdict_line": verdict_line(verdict),
    }
    if multi:
        names = objective_names(study)
        status["verdict_line"] = (f"no verdict: the study trades {names[0]} against {', '.join(names[1:])}; "
                                  f"its answer is the Pareto front")
        status["objectives"] = names
        status["pareto"] = pareto_front(study)
    return status


def recipe_status(study: optuna.Study) -> dict[str, Any] | None:
    """The study's tuned recipe and headroom as plain data (``line``: both in words), or ``None``."""
    tuning = study_tuning(study)
    if tuning is None:
        return None
    return {"lr": tuning.lr, "baseline": tuning.baseline, "grid": tuning.grid, "headroom": tuning.headroom(),
            "line": headroom_line(tuning)}


def _provenance(study: optuna.Study, trial: optuna.trial.FrozenTrial, url: str, rank: int,
                seeds: Composition | None, selected_by: dict[str, int] | None) -> dict[str, Any]:

    setting = study_document(study, SETTING_ATTR)
    tuning = study_tuning(study)
    record = TrialRecord.of(trial)
    meta = {
        "source": "relkd study export",
        "study": study.study_name,
        "storage": tool_storage(url),
        "trial": trial.number,
        "rank": rank,
        "anchor": record.anchor,
        "value": seeds.mean if seeds else accuracy(trial),
        "metric": "validation accuracy" + (f" (mean over {seeds.n} seeds)" if seeds and seeds.n > 1 else ""),
        "values_by_seed": {str(s): v for s, v in sorted(seeds.values.items())} if seeds else None,
        "budget": setting.get("budget") if tuning is None else {**setting.get("budget", {}), "lr": tuning.lr},
        "teacher": setting.get("teacher", {}).get("model"),
        "student": setting.get("student", {}).get("model"),
        "dataset": setting.get("data", {}).get("dataset"),
        "seed": record.seed,
        "student_params": record.student_params,
        "student_macs": record.student_macs,
        "relkd_version": versions()["relkd"],
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if tuning is not None:  # the rate it trained at was tuned (relkd.tuning): train it at that rate
        meta["recipe"] = {"lr": tuning.lr, "tuned_from": tuning.baseline}
    if selected_by:
        meta["selected_by"] = selected_by
    if is_multi_objective(study):
        meta["objectives"] = objective_names(study)
        meta["values"] = list(trial.values)
    return meta


def student_file(study: optuna.Study, trial: optuna.trial.FrozenTrial, out: str | os.PathLike) -> Path:
    """Write the student section the trial trained (its ``student`` user attribute; else the
    study's setting's, which every trial of a study without adapted students shares) as the
    YAML mapping ``student: {...}`` that a setting file takes; returns ``out``."""
    section = TrialRecord.of(trial).student or study_document(study, SETTING_ATTR).get("student")
    header = (f"# the student of trial {trial.number} of study {study.study_name}: the student section of a "
              f"setting file\n")
    return write_text(out, header + yaml_dump({"student": section}))


def export_trials(study: optuna.Study, url: str, out: str | os.PathLike, *, trial: int | None = None,
                  top_k: int | None = None, max_params: int | None = None,
                  max_macs: int | None = None) -> list[Path]:
    """Write compositions as objective configs with provenance in ``meta``.

    ``trial``: that trial; ``max_params`` / ``max_macs``: the most accurate trial whose
    student is that small (:func:`relkd.results.pareto.best_within`); else the ``top_k``
    best (default: the best one, to ``out``). With ``top_k`` the files are
    ``<out stem>_rank<r><suffix>`` beside ``out``. A trial chosen by size, and any trial of a
    multi-objective study, comes with its student section in ``<out stem>.student.yaml``
    (:func:`student_file`), written after its config. Returns the paths written; each is
    uploaded to the study's artifact store too (:mod:`relkd.study.artifacts`), under its file name.

    A multi-objective study has no single best: it needs ``trial`` or a size limit."""
    # here: relkd.analysis loads relkd.study

    by_size = max_params is not None or max_macs is not None
    multi = is_multi_objective(study)
    if by_size and (trial is not None or top_k is not None):
        raise ValueError("max_params: a size limit chooses the trial itself; give it without the trial and top_k "
                         "arguments")
    if trial is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not matches:
            raise ValueError(f"trial: study {study.study_name!r} has no trial {trial}; expected one of its "
                             f"trials 0..{len(study.trials) - 1}")
        chosen = matches[0]
        if chosen.state != TrialState.COMPLETE or TrialRecord.of(chosen).config is None:
            raise ValueError(f"trial: trial {trial} is {chosen.state.name.lower()}, not complete; "
                             f"export a completed trial (see `relkd study status`)")
        selected = [(1, chosen)]
    elif by_size:
        selected = [(1, best_within(study, max_params=max_params, max_macs=max_macs))]
    elif multi:
        raise ValueError(f"study {study.study_name!r} has {objectives_phrase(study)} and so no "
                         f"single best trial to export; choose one by size with the max_params argument or the "
                         f"max_macs argument (the most accurate student within that size), or by number with the "
                         f"trial argument (the Pareto front: relkd study status --study-name {study.study_name})")
    else:
        k = 1 if top_k is None else top_k
        if k < 1:
            raise ValueError(f"top_k: expected an integer >= 1, got {k}")
        ranked = ranked_trials(study)
        if not ranked:
            raise ValueError(f"study {study.study_name!r} has no completed trial to export yet")
        selected = list(enumerate(ranked[:k], start=1))
        if len(selected) < k:
            log.warning("study %s has %d completed trials; exporting %d, not %d",
                        study.study_name, len(selected), len(selected), k)
    out = Path(out)
    paths = []
    seeds = {c.trial.number: c for c in compositions(study)}
    limits = {k: v for k, v in (("max_params", max_params), ("max_macs", max_macs)) if v is not None}
    for rank, t in selected:
        config = validate_config(TrialRecord.of(t).config)
        config["meta"] = _provenance(study, t, url, rank, seeds.get(t.number), limits)
        path = out if top_k is None else out.with_name(f"{out.stem}_rank{rank}{out.suffix or '.yaml'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_config(config, path)
        paths.append(path)
        log.info("exported %s (validation accuracy %.4f) to %s", composition_label(t), accuracy(t), path)
        if by_size or multi:
            paths.append(student_file(study, t, path.with_name(f"{path.stem}.student.yaml")))
            log.info("wrote the student of %s to %s", composition_label(t), paths[-1])
    for path in paths:
        upload_study_file(study, path)
    return paths
