"""relkd.text: the one percentage formatter and the one Markdown table every table of relkd
is written with (confirm, compare, ablation, budgets, degradation, registries)."""
import pytest

from relkd.text import markdown_table, mean_pm, p_value, percent


def test_percent_writes_a_fraction_with_its_unit_sign_and_missing_value():
    assert percent(0.83456) == "83.46"
    assert percent(0.83456, unit="%") == "83.46%"
    assert percent(0.0123, sign=True) == "+1.23"
    assert percent(-0.0123, sign=True) == "-1.23"
    assert percent(0.5, digits=1) == "50.0"
    assert percent(None) == ""
    assert percent(None, missing="-", unit="%") == "-"  # the unit is not written without a value


def test_mean_pm_and_p_value():
    assert mean_pm(0.8, 0.0123) == "80.00 ± 1.23"
    assert mean_pm(0.8, None) == "80.00 ± 0.00"  # one seed: no spread, as relkd.stats.mean_sd says
    assert mean_pm(None, 0.1, missing="–") == "–"
    assert p_value(0.043216) == "0.0432"
    assert p_value(None) == "" and p_value(None, missing="n/a") == "n/a"


def test_markdown_table_lines_rule_and_right_alignment():
    text = markdown_table(["a", "b", "c"], [[1, "x", 2.5], ["", "y", None]], right=[2])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---:|", "| 1 | x | 2.5 |", "|  | y | None |"]
    assert not text.endswith("\n")
    assert markdown_table(["only"], []) == "| only |\n|---|"


def test_markdown_table_refuses_a_row_that_would_shift_the_columns():
    with pytest.raises(ValueError, match="a row has 2 cells for 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])
