"""relkd.results (the package): the read side's public surface, one import for readers."""
import optuna

import relkd.results as results
from relkd.results import counted_trials, is_multi_objective, objective_names, trial_counts
from relkd.results import pareto, ranking, record


def test_the_package_exports_each_modules_names():
    assert set(results.__all__) == {"StudyMismatchError", "counted_trials", "trial_counts", "Composition",
                                    "compositions", "search_verdict", "verdict_line", "is_multi_objective",
                                    "objective_names", "pareto_front", "best_within"}
    for name in results.__all__:
        module = next(m for m in (record, ranking, pareto) if hasattr(m, name))
        assert getattr(results, name) is getattr(module, name)


def test_a_plain_study_read_through_the_package():
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: 0.5, n_trials=2)
    assert len(counted_trials(study)) == 2 and trial_counts(study)["complete"] == 2
    assert not is_multi_objective(study) and objective_names(study) == ["val_accuracy"]
