"""relkd.study.domains: a study file's value as a fixed value, choices or a range."""
import pytest

from relkd.fields import FieldChecker
from relkd.study.domains import (Choice, Fixed, Range, bool_domain, free_names, name_domain, names_of,
                                 numeric_domain, same, upper)


def domain(function, value, *args, **kwargs):
    c = FieldChecker()
    return function(c, value, "search.x", *args, **kwargs), c.errors


def test_numbers_lists_and_ranges():
    assert domain(numeric_domain, 0.5) == (Fixed(0.5), [])
    assert domain(numeric_domain, [1, 2, 1]) == (Choice((1.0, 2.0)), [])  # duplicates dropped, order kept
    assert domain(numeric_domain, [3, 3]) == (Fixed(3.0), [])
    assert domain(numeric_domain, {"low": 0.1, "high": 1.0, "log": True}) == (Range(0.1, 1.0, True), [])
    assert domain(numeric_domain, {"low": 2, "high": 2}) == (Fixed(2.0), [])
    assert domain(numeric_domain, {"low": 1, "high": 8}, integer=True)[0] == Range(1, 8, False, True)


@pytest.mark.parametrize("value, error", [
    ({"low": 2.0, "high": 1.0}, "search.x: low (2) must not exceed high (1)"),
    ({"low": 0.0, "high": 1.0, "log": True}, "search.x.low: a log range needs low > 0"),
    ({"low": 0.1}, "search.x.high: missing; a range needs low and high"),
    ([], "search.x: expected at least one value"),
    ([0.1, -1], "search.x[1]: expected a finite number >= 0"),
])
def test_numeric_errors_name_the_field(value, error):
    result, errors = domain(numeric_domain, value)
    assert result is None and errors[0].startswith(error), errors


def test_names_suggest_the_closest_and_all_means_every_one():
    allowed = ("mse", "l1", "kl")
    assert domain(name_domain, "all", allowed, "loss") == (Choice(allowed), [])
    assert domain(name_domain, ["kl", "kl"], allowed, "loss") == (Fixed("kl"), [])
    result, errors = domain(name_domain, ["mse", "msee"], allowed, "loss")
    assert result is None and errors[0].startswith("search.x[1]: unknown loss 'msee'") and "mse" in errors[0]
    assert domain(name_domain, "all", (), "loss")[1] == ["search.x: no loss to choose from; expected a list of "
                                                         "loss names"]


def test_booleans_and_free_names():
    assert domain(bool_domain, [False, True]) == (Choice((False, True)), [])
    assert domain(bool_domain, 1)[1] == ["search.x: expected true, false or [false, true], got 1"]
    assert domain(free_names, ["pool", "pool"]) == (Fixed("pool"), [])
    assert domain(free_names, "all")[0] is None


def test_membership_is_tolerant_for_numbers_and_strict_for_booleans():
    assert Range(0.1, 1.0).contains(1.0 + 1e-12) and not Range(0.1, 1.0).contains(1.1)
    assert not Range(1, 4, integer=True).contains(2.5) and not Range(0, 1).contains(True)
    assert same(0.1 + 0.2, 0.3) and not same(True, 1) and not same(1, True)
    assert Choice((1, 2)).contains(2.0) and not Fixed(False).contains(0)
    assert Range(1, 1).searched is False and Choice((1, 2)).searched


def test_upper_describe_and_names_of():
    assert [upper(Fixed(3)), upper(Choice((2, 8, 4))), upper(Range(1, 6.0))] == [3, 8, 6]
    assert Range(0.1, 1.0, log=True).describe() == {"low": 0.1, "high": 1.0, "log": True}
    assert names_of(Choice(("a", "b"))) == ("a", "b") and names_of(Fixed("a")) == ("a",)
