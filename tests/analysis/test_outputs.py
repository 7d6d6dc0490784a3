"""relkd.analysis.outputs: best.yaml and the plots written once a study has a completed trial."""
import optuna
import pytest

from relkd.analysis import outputs
from relkd.analysis.outputs import write_outputs
from relkd.study.worker import StudyRun


@pytest.fixture
def calls(isolated, monkeypatch):
    seen = {}

    def export_trials(study, storage, out):
        seen["export"] = out
        return [out]

    def write_study_plots(study, out_dir):
        seen["plots"] = out_dir
        return [out_dir / "history.png"]

    monkeypatch.setattr(outputs, "export_trials", export_trials)
    monkeypatch.setattr(outputs, "write_study_plots", write_study_plots)
    return seen


def test_nothing_is_written_before_a_trial_completes(calls):
    study = optuna.create_study(study_name="s")
    study.enqueue_trial({})
    result = write_outputs(StudyRun(study, "sqlite://", created=True))
    assert calls == {} and result.best_config is None and result.plots == []


def test_best_yaml_and_plots_go_beside_the_study(calls, isolated):
    study = optuna.create_study(study_name="s", direction="maximize")
    study.optimize(lambda t: 0.5, n_trials=1)
    result = write_outputs(StudyRun(study, "sqlite://", created=True))
    folder = isolated / "runs" / "s"
    assert result.best_config == folder / "best.yaml" == calls["export"]
    assert result.plot_dir == folder / "plots" and result.plots == [folder / "plots" / "history.png"]


def test_a_multi_objective_study_has_plots_but_no_best(calls, isolated):
    study = optuna.create_study(study_name="mo", directions=["maximize", "minimize"])
    study.optimize(lambda t: (0.5, 10.0), n_trials=1)
    result = write_outputs(StudyRun(study, "sqlite://", created=True))
    assert "export" not in calls and result.best_config is None and result.plot_dir == isolated / "runs" / "mo" / \
        "plots"
