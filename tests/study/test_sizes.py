"""relkd.study.sizes: search.ratio and optuna.objectives, a study of accuracy against size."""
import optuna
import pytest

from relkd.fields import FieldChecker
from relkd.setting import validate_setting
from relkd.study.sizes import ACCURACY, SizeSearch, validate_sizes
from tiny import TINY_SETTING


def sizes(ratio, optuna_section, setting=None):
    c = FieldChecker()
    return validate_sizes(c, ratio, optuna_section, setting), c.errors


def test_listed_ratios_are_sorted_and_each_anchor_trains_at_each():
    size, errors = sizes([1.0, 0.25, 0.5], {"objectives": [ACCURACY, "macs"], "sampler": "nsga2"})
    assert errors == [] and size == SizeSearch("macs", ratios=(0.25, 0.5, 1.0))
    assert size.objectives == ["val_accuracy", "macs"] and size.directions == ["maximize", "minimize"]
    assert size.anchor_params() == [{"ratio": 0.25}, {"ratio": 0.5}, {"ratio": 1.0}]
    assert size.suggest(optuna.trial.FixedTrial({"ratio": 0.5})) == 0.5


def test_a_range_leaves_the_anchor_ratio_to_the_sampler():
    size, errors = sizes({"low": 0.2, "high": 1.0}, {"objectives": [ACCURACY, "params"]})
    assert errors == [] and (size.low, size.high, size.ratios) == (0.2, 1.0, None)
    assert size.anchor_params() == [{}] and size.describe() == {"low": 0.2, "high": 1.0}


def test_one_objective_is_no_size_search():
    assert sizes(None, {}) == (None, [])
    _, errors = sizes([0.5], {})
    assert errors[0].startswith("search.ratio: searching the student's size needs two objectives")


@pytest.mark.parametrize("ratio, section, field", [
    ([0.5], {"objectives": [ACCURACY, "flops"]}, "optuna.objectives:"),
    (None, {"objectives": [ACCURACY, "params"]}, "search.ratio: missing"),
    ([0.5, 0.5], {"objectives": [ACCURACY, "params"]}, "search.ratio: a ratio is given twice"),
    ([0.5, 0], {"objectives": [ACCURACY, "params"]}, "search.ratio[1]: expected a size ratio in (0, 1]"),
    ({"low": 0.6, "high": 0.6}, {"objectives": [ACCURACY, "params"]}, "search.ratio: expected low < high"),
    ([0.5], {"objectives": [ACCURACY, "params"], "pruner": "median"}, "optuna.pruner:"),
    ([0.5], {"objectives": [ACCURACY, "params"], "rerun": {"top": 2}}, "optuna.rerun:"),
    ([0.5], {"objectives": [ACCURACY, "params"], "population": 4}, "optuna.population:"),
    ([0.5], {"objectives": [ACCURACY, "params"], "sampler": "cmaes"}, "optuna.sampler: cmaes cannot search"),
])
def test_errors_name_the_field(ratio, section, field):
    _, errors = sizes(ratio, section)
    assert any(e.startswith(field) for e in errors), errors


def test_the_student_must_be_pretrained_to_be_adapted():
    setting = validate_setting(TINY_SETTING)  # cnn_tiny can be pruned, but has no init
    _, errors = sizes([0.5], {"objectives": [ACCURACY, "params"]}, setting)
    assert errors == ["search.ratio: the student is adapted to each ratio from a pretrained network: give "
                      "student.init, e.g. init: {pretrain: studies/pretrain_fmnist_source.yaml}"]
