"""The Optuna study driver: search spaces from the registries, trials that train students,
anchors, storage, export and confirmation.

::

    from relkd.study import load_study_spec, run_study
    spec = load_study_spec("studies/fmnist_quick.yaml")
    result = run_study(spec)                 # creates or resumes runs/fmnist_quick/optuna.db
    print(result.study.best_trial.user_attrs["objective_config"])
"""
from .confirm import confirm_study, format_table, welch_p
from .export import (
    anchor_values,
    export_trials,
    load_relkd_study,
    ranked_trials,
    study_setting,
    study_status,
)
from .record import StudyMismatchError, counted_trials, trial_counts
from .runner import StudyRun, open_study, run_study
from .space import SearchSpace, validate_search
from .spec import DEFAULT_ANCHORS, StudySpec, load_study_spec, validate_study
from .storage import redact, resolve_storage, run_dir

__all__ = [
    "SearchSpace", "validate_search", "StudySpec", "load_study_spec", "validate_study", "DEFAULT_ANCHORS",
    "open_study", "run_study", "StudyRun", "StudyMismatchError", "counted_trials", "trial_counts",
    "load_relkd_study", "ranked_trials", "study_status", "export_trials", "study_setting", "anchor_values",
    "confirm_study", "format_table", "welch_p", "redact", "resolve_storage", "run_dir",
]
