"""relkd.setting_tune: the ``tune`` section of a setting, its defaults and its errors."""
import pytest

from relkd.fields import FieldChecker
from relkd.setting_tune import DEFAULT_FACTORS, TuneSpec, check_tune, default_tune


def test_an_empty_section_takes_the_default_grid_around_budget_lr():
    c = FieldChecker()
    spec = check_tune(c, {}, "tune", 0.1)
    assert c.errors == []
    assert spec == default_tune(0.1) == TuneSpec(tuple(0.1 * f for f in DEFAULT_FACTORS), 3, 2)
    assert spec.to_dict() == {"lr": list(spec.lr), "seeds": 3, "extend": 2}


def test_a_grid_is_sorted_and_converted_to_floats():
    c = FieldChecker()
    spec = check_tune(c, {"lr": [0.2, 0.05, 1], "seeds": 2, "extend": 0}, "tune", 0.1)
    assert c.errors == [] and spec == TuneSpec((0.05, 0.2, 1.0), 2, 0)


@pytest.mark.parametrize("section, error", [
    ({"lr": [0.1]}, "tune.lr: expected a list of at least two learning rates"),
    ({"lr": [0.1, 0.1]}, "tune.lr: expected each learning rate once"),
    ({"lr": [0.1, True]}, "tune.lr: expected a list"),
    ({"seeds": 1}, "tune.seeds:"),
    ({"extend": 9}, "tune.extend: expected at most 8 points"),
    ({"rates": [0.1, 0.2]}, "tune.rates: unknown field"),
])
def test_errors_name_the_field(section, error):
    c = FieldChecker()
    spec = check_tune(c, section, "tune", 0.1)
    assert any(e.startswith(error) for e in c.errors), c.errors
    if "rates" not in section:
        assert spec is None
