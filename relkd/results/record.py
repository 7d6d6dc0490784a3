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

Trial user attributes are listed in :data:`TRIAL_ATTRS`.
"""
from __future__ import annotations

import os
import platform
import socket
from typing import Any

import optuna
from optuna.trial import TrialState


__all__ = ["CONFIG_ATTR", "SETTING_ATTR", "STUDY_ATTR", "VERSION_ATTR", "INITS_ATTR", "N_TRIALS_ATTR", "COMPARE_ATTR",
           "CONFIRM_ATTR", "RUN_ATTR", "OBJECTIVES_ATTR", "RECIPE_ATTR",
           "LADDER_ATTR", "RERUN_ATTR", "TRIAL_ATTRS", "WORKER", "StudyMismatchError",
           "versions", "is_counted", "is_known", "is_searched", "TUNED_ATTR",
           "counted_trials", "trial_counts", "setting_differences"]

SETTING_ATTR = "relkd.setting"
STUDY_ATTR = "relkd.study"
VERSION_ATTR = "relkd.version"
INITS_ATTR = "relkd.inits"  # SHA-256 of the student's / teacher's init checkpoint (transfer learning)
N_TRIALS_ATTR = "relkd.n_trials"
COMPARE_ATTR = "relkd.compare"
CONFIRM_ATTR = "relkd.confirm"
ABLATION_ATTR = "relkd.ablation"  # the contribution table of `relkd study ablate` (relkd.study.ablate)
OBJECTIVES_ATTR = "relkd.objectives"  # multi-objective studies: ["val_accuracy", "params" | "macs"]
RECIPE_ATTR = "relkd.recipe"  # the tuned learning rate and the runs that chose it (relkd.tuning.Tuning.record)
LADDER_ATTR = "relkd.ladder"  # the fidelity ladder's rungs, the top one included (relkd.study.ladder)
TUNED_ATTR = "tuned_anchor"  # trial user attribute of a tuned anchor: the preset it tunes (relkd.study.tuned_anchors)
RERUN_ATTR = "rerun"  # trial user attribute of a re-run: {"of": trial number, "seed": seed} (relkd.study.seeds)
RUN_ATTR = "relkd.run"  # trial user attribute: the fixed run of a run queue (relkd.study.queue)
CONFIG_ATTR = "objective_config"  # trial user attribute: the composition it trained (an objective config)

#: Trial user attributes relkd writes, with what each holds.
TRIAL_ATTRS = {
    CONFIG_ATTR: "the composition, in the format of relkd.load_config",
    "part_means": "mean of each loss part over the run",
    "wall_seconds": "the trial's wall time",
    "seed": "the student's seed",
    "versions": "relkd, torch, optuna and Python versions",
    "val_history": "validation accuracy after each epoch",
    "epochs": "epochs trained",
    "worker": "host:pid of the process that trained it",
    "population": "how many trials its worker trained together with it (relkd.study.population)",
    "init_sha256": "the student's init checkpoint (transfer learning only)",
    "student_params": "the student's parameter count (the adapted one's when the student is adapted)",
    "student_macs": "the student's multiply-accumulates for one input (Conv2d and Linear layers)",
    "student": "the student section this trial trained (model, params, init, adapt), as in a setting file",
    "anchor": "the preset name, on the known methods",
    "invalid_combination": "the rules a draw broke (pruned without training)",
    "skipped": "why a trial was put back without training",
    "pruned_reason": "the pruner, or a NaN/inf loss",
    "error": "why the trial failed",
    RERUN_ATTR: "a re-run of trial 'of' with another 'seed' (not counted in n_trials; folded into that trial)",
    "refined_from": "the anchor a refinement started from",
    RUN_ATTR: "the run of a run queue (confirm, compare): id, key, label, seed, epochs",
    "test_accuracy": "accuracy on the test split (runs of a run queue)",
    "imported_from": "the file a finished run was read from (an older confirm's runs.jsonl)",
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
    return "anchor" in trial.user_attrs or TUNED_ATTR in trial.user_attrs


def is_searched(trial: optuna.trial.FrozenTrial) -> bool:
    """A composition the search drew: not a known method (:func:`is_known`) or a re-run."""
    return not is_known(trial) and RERUN_ATTR not in trial.user_attrs


def is_counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A finished trial that trained: completed or pruned, not an invalid draw, a skip or a
    re-run of a composition with another seed (the re-run phase comes after ``n_trials``)."""
    if RERUN_ATTR in trial.user_attrs:
        return False
    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state == TrialState.PRUNED and not {"invalid_combination", "skipped"} & set(trial.user_attrs)


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
        if "invalid_combination" in t.user_attrs:
            counts["invalid_draws"] += 1
        elif "skipped" in t.user_attrs:
            counts["skipped"] += 1
        elif RERUN_ATTR in t.user_attrs:
            counts["reruns"] += 1
        else:
            counts[t.state.name.lower()] += 1
    return counts
