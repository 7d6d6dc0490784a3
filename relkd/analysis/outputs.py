"""What ``relkd study run`` leaves beside a study once it has run: the best composition as
an objective config (``runs/<study>/best.yaml``) and the plots (``runs/<study>/plots``).
The study driver (:func:`relkd.study.run_study`) writes no files; its caller does, here."""
from __future__ import annotations

from optuna.trial import TrialState

from ..study.export import export_trials
from ..study.storage import run_dir
from ..study.worker import StudyRun
from .plots import write_study_plots

__all__ = ["write_outputs"]


def write_outputs(result: StudyRun) -> StudyRun:
    """Once the study has a completed trial: export the best composition to
    ``runs/<study>/best.yaml`` and write the plots into ``runs/<study>/plots``; their paths
    go into ``result`` (returned). A multi-objective study has a front, not a best: only the
    plots (``relkd study export --max-params N`` picks from the front)."""
    study = result.study
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return result
    folder = run_dir(study.study_name)
    if len(study.directions) == 1:
        result.best_config = export_trials(study, result.storage, folder / "best.yaml")[0]
    result.plot_dir = folder / "plots"
    result.plots = write_study_plots(study, result.plot_dir)
    return result
