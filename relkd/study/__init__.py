"""The Optuna study driver: search spaces from the registries, trials that train students,
anchors, storage, export and confirmation.

::

    from relkd.study import load_study_spec, run_study
    spec = load_study_spec("studies/fmnist_quick.yaml")
    result = run_study(spec)                 # creates or resumes runs/fmnist_quick/optuna.db
    print(compositions(result.study)[0].record.config)  # the best by its mean over seeds
"""
from .compare import CompareSpec, compare_table, format_markdown, load_compare, run_compare, validate_compare
from .confirm import confirm_study, format_table, welch_p
from .export import (
    anchor_values,
    export_trials,
    load_relkd_study,
    ranked_trials,
    study_setting,
    study_status,
)
from .opening import open_study
from .queue import Run, RunQueue
from ..results.record import StudyMismatchError, counted_trials, trial_counts
from ..results.ranking import compositions, search_verdict, verdict_line
from .worker import StudyRun, run_study
from .space import SearchSpace, validate_search
from .spec import DEFAULT_ANCHORS, StudySpec, load_study_spec, validate_study
from .storage import redact, resolve_storage, run_dir, tool_storage

__all__ = [
    "SearchSpace", "validate_search", "StudySpec", "load_study_spec", "validate_study", "DEFAULT_ANCHORS",
    "open_study", "run_study", "StudyRun", "StudyMismatchError", "counted_trials", "trial_counts",
    "load_relkd_study", "ranked_trials", "study_status", "export_trials", "study_setting", "anchor_values",
    "confirm_study", "format_table", "welch_p", "redact", "resolve_storage", "run_dir", "tool_storage",
    "Run", "RunQueue", "CompareSpec", "load_compare", "validate_compare", "run_compare", "compare_table",
    "format_markdown", "compositions", "search_verdict", "verdict_line",
]
