"""relkd.evaluation.tables: the degradation table and plot of evaluation results."""
import pytest

from relkd.evaluation.tables import format_degradation_table, plot_degradation

RESULTS = {
    "student": {"accuracy": 0.9, "degradation": {"gaussian_noise": {1: 0.8, 2: 0.6}}},
    "teacher": {"accuracy": 0.95, "degradation": {"gaussian_noise": {"1": 0.9}}},  # JSON's string keys
}


def test_one_row_per_model_and_kind_with_the_mean_and_the_strengths():
    lines = format_degradation_table(RESULTS).splitlines()
    assert lines[0] == "| model | degradation | clean | 1 | 2 | mean |"
    assert lines[1] == "|---|---|---:|---:|---:|---:|"
    assert lines[2] == "| student | gaussian_noise | 90.00 | 80.00 | 60.00 | 70.00 |"
    assert lines[3] == "| teacher | gaussian_noise | 95.00 | 90.00 | – | 90.00 |"  # severity 2 not measured
    assert lines[-1] == "Strength per severity 1, 2: gaussian_noise: noise std 0.04, 0.08."


def test_a_result_without_degradations_has_a_dash_row_and_nothing_to_plot(tmp_path):
    clean = {"m": {"accuracy": 0.5, "degradation": {}}}
    assert format_degradation_table(clean).splitlines()[2] == "| m | – | 50.00 | – |"  # no severity: no mean
    with pytest.raises(ValueError, match="no degradation accuracies to plot"):
        plot_degradation(clean, tmp_path / "d")


def test_results_that_are_not_evaluations_are_refused():
    with pytest.raises(ValueError, match="no results to show"):
        format_degradation_table({})
    with pytest.raises(ValueError, match="result 'x' is not an evaluate_model result"):
        format_degradation_table({"x": {"accuracy": 0.5}})


def test_the_plot_is_written_as_png_and_svg(tmp_path):
    paths = plot_degradation(RESULTS, tmp_path / "plots" / "degradation")
    assert sorted(p.suffix for p in paths) == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)
    assert paths[0].parent == tmp_path / "plots"
