"""The study record: every name relkd gives to Optuna study and trial attributes, and how
a study's trials are counted. Readers (export, confirm, compare, the report) import these;
writers (the runner, the run queue) too, so no attribute name is spelled twice.

Study user attributes:

- ``relkd.setting``: the setting every trial used (:func:`setting_record`);
- ``relkd.study``: the canonical study file, passwords redacted;
- ``relkd.version``: the versions of relkd, torch, optuna and Python that created it;
- ``relkd.inits``: the SHA-256 of the student's / teacher's init checkpoints;
- ``relkd.n_trials``: the study's target of counted trials;
- ``relkd.compare`` and ``relkd.confirm``: the record of a compare run, the confirm results;
- ``relkd.objectives``: on a multi-objective study, what its trials' values are, in order
  (``["val_accuracy", "params"]`` or ``["val_accuracy", "macs"]``; accuracy maximised, size
  minimised); absent on single-objective studies.

- ``relkd.artifacts``: the artifact store a location was given for (``optuna.artifacts``,
  ``--artifacts``; :mod:`relkd.study.artifacts`); absent where the study uses the default.

Documents (:data:`DOCUMENT_ATTRS`: the study file, the setting, the recipe, the confirm, compare
and ablation records) are longer than optuna-dashboard shows a user attribute (it cuts one at
:data:`DASHBOARD_ATTR_LIMIT` characters of JSON): :func:`set_study_document` keeps the whole
document as a study *system* attribute of the same name (in the storage, which every worker
reads; optuna-dashboard does not show it) and a short summary as the user attribute;
:func:`study_document` reads it back, from the user attribute on studies made before.

Trial user attributes are the fields of :class:`TrialRecord` (listed in :data:`TRIAL_ATTRS`):
readers take a trial's record (``TrialRecord.of(trial)``), writers name fields
(:func:`trial_attrs`), so an attribute name is spelled here only; :func:`trial_attrs` keeps each
within :data:`DASHBOARD_ATTR_LIMIT` (a long message cut, a long history rounded).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import socket
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


__all__ = ["CONFIG_ATTR", "SETTING_ATTR", "STUDY_ATTR", "VERSION_ATTR", "INITS_ATTR", "N_TRIALS_ATTR", "COMPARE_ATTR",
           "CONFIRM_ATTR", "RUN_ATTR", "OBJECTIVES_ATTR", "RECIPE_ATTR", "BEST_ATTR",
           "LADDER_ATTR", "RERUN_ATTR", "TRIAL_ATTRS", "TrialRecord", "trial_attrs", "set_trial_attrs", "WORKER",
           "StudyMismatchError",
           "versions", "is_counted", "is_known", "is_searched", "TUNED_ATTR",
           "counted_trials", "trial_counts", "setting_differences", "ARTIFACTS_ATTR", "ABLATION_ATTR",
           "DOCUMENT_ATTRS", "DOCUMENT_FILES", "DASHBOARD_ATTR_LIMIT", "study_document", "set_study_document",
           "is_copy", "replays",
           "document_summary", "study_system_attrs"]

log = logging.getLogger(__name__)

SETTING_ATTR = "relkd.setting"
STUDY_ATTR = "relkd.study"
VERSION_ATTR = "relkd.version"
INITS_ATTR = "relkd.inits"  # SHA-256 of the student's / teacher's init checkpoint (transfer learning)
N_TRIALS_ATTR = "relkd.n_trials"
COMPARE_ATTR = "relkd.compare"
CONFIRM_ATTR = "relkd.confirm"
ABLATION_ATTR = "relkd.ablation"  # the contribution table of `relkd study ablate` (relkd.study.ablate)
OBJECTIVES_ATTR = "relkd.objectives"  # multi-objective studies: ["val_accuracy", "params" | "macs"]
#: relkd's best composition (ranked by the mean over seeds), where Optuna's tools show study attributes:
#: Optuna's own best trial is the best single run, which may be a lucky re-run (relkd.results.ranking.record_best)
BEST_ATTR = "relkd.best"
RECIPE_ATTR = "relkd.recipe"  # the tuned learning rate and the runs that chose it (relkd.tuning.Tuning.record)
LADDER_ATTR = "relkd.ladder"  # the fidelity ladder's rungs, the top one included (relkd.study.ladder)
TUNED_ATTR = "tuned_anchor"  # trial user attribute of a tuned anchor: the preset it tunes (relkd.study.tuned_anchors)
RERUN_ATTR = "rerun"  # trial user attribute of a re-run: {"of": trial number, "seed": seed} (relkd.study.seeds)
RUN_ATTR = "relkd.run"  # trial user attribute: the fixed run of a run queue (relkd.study.queue)
CONFIG_ATTR = "objective_config"  # trial user attribute: the composition it trained (an objective config)
ARTIFACTS_ATTR = "relkd.artifacts"  # the artifact store given (a folder, s3://BUCKET or none): relkd.study.artifacts

#: The longest user attribute optuna-dashboard shows whole: it writes a value that is neither a
#: string nor a number as JSON and cuts it at 1,024 characters (optuna_dashboard/_serializer.py,
#: ``MAX_ATTR_LENGTH`` in ``serialize_attrs``, optuna-dashboard 0.21). relkd keeps every user
#: attribute it writes within it, as JSON.
DASHBOARD_ATTR_LIMIT = 1024
#: Study attributes that hold whole documents: kept whole as study system attributes, summarised
#: as user attributes (:func:`set_study_document`, :func:`study_document`).
DOCUMENT_ATTRS = (STUDY_ATTR, SETTING_ATTR, RECIPE_ATTR, COMPARE_ATTR, CONFIRM_ATTR, ABLATION_ATTR)
#: The documents a study also keeps as artifacts (file names), where it has an artifact store.
DOCUMENT_FILES = {STUDY_ATTR: "study.yaml", SETTING_ATTR: "setting.json"}

def _attr(doc: str, name: str | None = None) -> Any:
    """A :class:`TrialRecord` field: the trial user attribute ``name`` (default: the field's
    own name) and what it holds."""
    return field(default=None, metadata={"doc": doc, "attr": name})


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial as relkd reads it: every trial user attribute relkd writes is a field
    here, under the attribute's own name unless the field says otherwise (``config`` is the
    attribute ``objective_config``, ``tuned_anchor`` and ``rerun`` are spelled by their
    constants, ``run`` is ``relkd.run``). Attributes a trial does not have are ``None``.
    :meth:`of` reads a trial; :func:`trial_attrs` turns fields into attributes for a writer."""

    number: int
    state: TrialState
    values: tuple[float, ...] | None
    config: dict[str, Any] | None = _attr("the composition, in the format of relkd.load_config", CONFIG_ATTR)
    part_means: dict[str, float] | None = _attr("mean of each loss part over the run")
    wall_seconds: float | None = _attr("the trial's wall time")
    train_seconds: float | None = _attr("the time spent training (from the first step to the last evaluation)")
    samples_per_second: float | None = _attr("training samples per second of train_seconds")
    seed: int | None = _attr("the student's seed")
    versions: dict[str, str] | None = _attr("relkd, torch, optuna and Python versions")
    val_history: list[float] | None = _attr("validation accuracy after each epoch")
    epochs: int | None = _attr("epochs trained")
    worker: str | None = _attr("host:pid of the process that trained it")
    population: int | None = _attr("how many trials its worker trained together with it (relkd.study.population)")
    init_sha256: str | None = _attr("the student's init checkpoint (transfer learning only)")
    student_params: int | None = _attr("the student's parameter count (the adapted one's when the student is adapted)")
    student_macs: int | None = _attr("the student's multiply-accumulates for one input (Conv2d and Linear layers)")
    student: dict[str, Any] | None = _attr("the student section this trial trained (model, params, init, adapt), "
                                           "as in a setting file")
    anchor: str | None = _attr("the preset name, on the known methods")
    anchor_in_space: bool | None = _attr("on an anchor: whether the search space's parameters can express it")
    tuned_anchor: str | None = _attr("the preset a tuned anchor tunes (relkd.study.tuned_anchors)", TUNED_ATTR)
    invalid_combination: list[str] | None = _attr("the rules a draw broke (pruned without training)")
    skipped: str | None = _attr("why a trial was put back without training, or put back when it stopped while "
                                "training (it failed then, and this names the trial that trains it again)")
    pruned_reason: str | None = _attr("the pruner, or a NaN/inf loss")
    error: str | None = _attr("why the trial failed")
    rerun: dict[str, int] | None = _attr("a re-run of trial 'of' with another 'seed' (not counted in n_trials; "
                                         "folded into that trial)", RERUN_ATTR)
    refined_from: str | None = _attr("the anchor a refinement started from")
    run: dict[str, Any] | None = _attr("the run of a run queue (confirm, compare): id, key, label, seed, epochs",
                                       RUN_ATTR)
    test_accuracy: float | None = _attr("accuracy on the test split (runs of a run queue that evaluate it)")
    imported_from: str | None = _attr("the file a finished run was read from (an older confirm's runs.jsonl)")
    trial: FrozenTrial | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> "TrialRecord":
        """The record of a stored trial, or of a running one (an ``optuna.Trial``: RUNNING,
        no values yet)."""
        attrs = trial.user_attrs
        values = getattr(trial, "values", None)
        return cls(number=trial.number, state=getattr(trial, "state", TrialState.RUNNING),
                   values=tuple(values) if values is not None else None,
                   **{f.name: attrs.get(_ATTR_NAMES[f.name]) for f in _ATTR_FIELDS}, trial=trial)

    @property
    def value(self) -> float | None:
        """The first value (validation accuracy), ``None`` on a trial without values."""
        return self.values[0] if self.values else None

    @property
    def known(self) -> bool:
        """A known method: an anchor or a tuned anchor."""
        return self.anchor is not None or self.tuned_anchor is not None

    @property
    def searched(self) -> bool:
        """A composition the search drew: not a known method or a re-run."""
        return not self.known and self.rerun is None


_ATTR_FIELDS = [f for f in dataclasses.fields(TrialRecord) if "doc" in f.metadata]
_ATTR_NAMES = {f.name: f.metadata["attr"] or f.name for f in _ATTR_FIELDS}

#: Trial user attributes relkd writes, with what each holds (from :class:`TrialRecord`).
TRIAL_ATTRS = {_ATTR_NAMES[f.name]: f.metadata["doc"] for f in _ATTR_FIELDS}


def set_trial_attrs(trial: optuna.Trial, **fields: Any) -> None:
    """Write :class:`TrialRecord` fields on a running trial as its user attributes."""
    for name, value in trial_attrs(**fields).items():
        trial.set_user_attr(name, value)


def trial_attrs(**fields: Any) -> dict[str, Any]:
    """The user attributes of :class:`TrialRecord` fields (``config=...`` becomes
    ``objective_config``); a name that is no field is an error, so a writer cannot invent one.
    Each value is kept within :data:`DASHBOARD_ATTR_LIMIT` (:func:`_within_limit`)."""
    unknown = sorted(set(fields) - set(_ATTR_NAMES))
    if unknown:
        raise TypeError(f"not fields of a TrialRecord: {', '.join(unknown)}; they are: {', '.join(_ATTR_NAMES)}")
    return {_ATTR_NAMES[name]: _within_limit(_ATTR_NAMES[name], value) for name, value in fields.items()}


def _json_length(value: Any) -> int:
    """Characters of ``value`` as JSON, as Optuna's storages write it (what is no JSON type as its text)."""
    return len(json.dumps(value, default=str))


def _within_limit(name: str, value: Any) -> Any:
    """``value`` as a trial user attribute optuna-dashboard shows whole: a text (an error, a
    reason) longer than :data:`DASHBOARD_ATTR_LIMIT` is cut, saying how long it was (the log has
    it whole); a list of numbers (``val_history`` of a long run) is rounded to 4 decimals, and
    left out where even that is too long (every epoch's accuracy is also the trial's intermediate
    value at that step); a list of texts keeps its first items. Compositions and student
    sections are kept whole (export reads them; they are far shorter)."""
    if _json_length(value) <= DASHBOARD_ATTR_LIMIT:
        return value
    if isinstance(value, str):
        note = f" ... [cut: {len(value)} characters]"
        keep = DASHBOARD_ATTR_LIMIT - len(note) - 2
        while keep > 0 and _json_length(value[:keep] + note) > DASHBOARD_ATTR_LIMIT:
            keep -= max(1, (_json_length(value[:keep] + note) - DASHBOARD_ATTR_LIMIT))
        return value[:max(keep, 0)] + note
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        rounded = [round(float(v), 4) for v in value]
        if _json_length(rounded) <= DASHBOARD_ATTR_LIMIT:
            return rounded
        log.debug("trial attribute %s: %d values are too long to keep; they are the intermediate values too",
                  name, len(value))
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        kept = list(value)
        while kept and _json_length(kept + [f"... {len(value)} in all"]) > DASHBOARD_ATTR_LIMIT:
            kept.pop()
        return [_within_limit(name, v) for v in kept] + [f"... {len(value)} in all"]
    return value


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes, read through its storage (Optuna's storage API:
    ``get_study_system_attrs``; ``Study.system_attrs`` is not public)."""
    return study._storage.get_study_system_attrs(study._study_id)


def study_document(study: optuna.Study, name: str, default: Any = None) -> Any:
    """The whole document ``name`` (one of :data:`DOCUMENT_ATTRS`) of a study: the study system
    attribute :func:`set_study_document` writes, else the user attribute of that name, where
    studies made before kept it whole; ``default`` where the study has neither."""
    system = study_system_attrs(study)
    if name in system:
        return system[name]
    return study.user_attrs.get(name, default)


def set_study_document(study: optuna.Study, name: str, document: Any) -> None:
    """Keep ``document`` whole as the study system attribute ``name`` and its summary
    (:func:`document_summary`) as the user attribute ``name``, in that order, so that a reader
    that sees the summary finds the document."""
    if name not in DOCUMENT_ATTRS:
        raise ValueError(f"name: expected one of {', '.join(DOCUMENT_ATTRS)}, got {name!r}")
    study._storage.set_study_system_attr(study._study_id, name, document)
    study.set_user_attr(name, document_summary(name, document))


def document_summary(name: str, document: Any) -> dict[str, Any]:
    """What optuna-dashboard shows of the document ``name``: a few fields, and where the whole
    document is (``full``), within :data:`DASHBOARD_ATTR_LIMIT` characters of JSON (the largest
    fields become ``"..."`` until it fits)."""
    summary = _SUMMARIES[name](document) if isinstance(document, dict) else {}
    where = f"study system attribute {name}"
    if name in DOCUMENT_FILES:
        where += f"; artifact {DOCUMENT_FILES[name]}"
    summary = {**summary, "full": where}
    while _json_length(summary) > DASHBOARD_ATTR_LIMIT:
        longest = max((k for k in summary if k != "full" and summary[k] != "..."),
                      key=lambda k: _json_length(summary[k]), default=None)
        if longest is None:
            break
        summary[longest] = "..."
    return summary


def _get(document: dict[str, Any], *path: str) -> Any:
    for key in path:
        document = document.get(key) if isinstance(document, dict) else None
    return document


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


_SUMMARIES = {
    SETTING_ATTR: lambda d: {"dataset": _get(d, "data", "dataset"), "teacher": _get(d, "teacher", "model"),
                             "student": _get(d, "student", "model"), "epochs": _get(d, "budget", "epochs"),
                             "lr": _get(d, "budget", "lr"), "seed": d.get("seed")},
    STUDY_ATTR: lambda d: {"study_name": _get(d, "optuna", "study_name"),
                           "sampler": _get(d, "optuna", "sampler", "name"),
                           "n_trials": _get(d, "optuna", "n_trials"), "timeout": _get(d, "optuna", "timeout"),
                           "anchors": _get(d, "optuna", "anchors"), "search": d.get("search")},
    RECIPE_ATTR: lambda d: {k: d.get(k) for k in ("field", "baseline", "lr", "seeds", "teacher_val")},
    COMPARE_ATTR: lambda d: {"methods": d.get("methods"), "seeds": d.get("seeds"),
                             "dataset": _get(d, "setting", "data", "dataset"),
                             "student": _get(d, "setting", "student", "model")},
    CONFIRM_ATTR: lambda d: {"epochs": d.get("epochs"), "seeds": d.get("seeds"), "best_preset": d.get("best_preset"),
                             "test_mean": {r.get("label"): _rounded(r.get("test_mean")) for r in d.get("rows") or []
                                           if isinstance(r, dict)},
                             "budgets": sorted(k for k in d if k.startswith("budgets"))},
    ABLATION_ATTR: lambda d: {"trial": d.get("trial"), "composition": d.get("composition"), "summary": d.get("summary"),
                              "epochs": d.get("epochs"), "seeds": d.get("seeds"),
                              "contribution": {r.get("variant"): _rounded(_get(r, "contribution", "mean"))
                                               for r in d.get("rows") or [] if isinstance(r, dict)}},
}


#: Which process trained a trial (its ``worker`` user attribute): host and process id.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class StudyMismatchError(ValueError):
    """The study exists with a different setting than the study file's."""


def versions() -> dict[str, str]:
    import torch

    from .. import __version__

    return {"relkd": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def is_known(trial: optuna.trial.FrozenTrial) -> bool:
    """A known method: an anchor (a preset) or a tuned anchor (a preset with its hyperparameters
    tuned, :mod:`relkd.study.tuned_anchors`)."""
    return TrialRecord.of(trial).known


def is_searched(trial: optuna.trial.FrozenTrial) -> bool:
    """A composition the search drew: not a known method (:func:`is_known`) or a re-run."""
    return TrialRecord.of(trial).searched


def is_counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A finished trial that trained: completed or pruned, not an invalid draw, a skip or a
    re-run of a composition with another seed (the re-run phase comes after ``n_trials``)."""
    record = TrialRecord.of(trial)
    if record.rerun is not None:
        return False
    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state == TrialState.PRUNED and record.invalid_combination is None and record.skipped is None


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if is_counted(t)]


def setting_differences(stored: dict[str, Any], current: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(current)):
        where = f"{path}.{key}" if path else key
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(setting_differences(a, b, where))
        elif a != b:
            out.append(f"{where}: {a!r} in the study, {b!r} in the file")
    return out


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, with the pruned ones split into pruned-after-training and invalid draws."""
    counts = {state.name.lower(): 0 for state in TrialState}
    counts["invalid_draws"] = 0
    counts["skipped"] = 0
    counts["reruns"] = 0
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        if record.invalid_combination is not None:
            counts["invalid_draws"] += 1
        elif record.skipped is not None:
            counts["skipped"] += 1
        elif record.rerun is not None:
            counts["reruns"] += 1
        else:
            counts[t.state.name.lower()] += 1
    return counts


def is_copy(system_attrs: dict) -> bool:
    """Whether a trial (its system attributes) trains again a trial that stopped while training:
    put back by :func:`relkd.study.trial.put_back_stopped`, or Optuna's retry of a dead worker's
    trial; both record the chain as Optuna's ``RetryFailedTrialCallback`` does (``failed_trial``:
    the first trial, ``retry_history``: every trial of the chain)."""
    return "failed_trial" in system_attrs


def replays(record: TrialRecord, system_attrs: dict) -> bool:
    """A copy (:func:`is_copy`) of a searched trial that had drawn its composition: it trains
    the composition it carries (``objective_config``), in its role (``tuned_anchor``,
    ``refined_from``), and takes no place of its own among the searched trials
    (:func:`relkd.study.tuned_anchors.searched_index`): it stands in the place of the trial it copies."""
    return (is_copy(system_attrs) and record.config is not None and record.anchor is None
            and record.rerun is None)
