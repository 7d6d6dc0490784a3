"""The method-comparison benchmark on the synthetic dataset."""
import csv

import optuna
import pytest

from relkd.study import compare as compare_module
from relkd.study.compare import format_markdown, run_compare, validate_compare
from relkd.cli import main
from relkd.fields import ConfigError, yaml_dump
from tiny import TINY_SETTING, interrupt_on_call

DOC = {**TINY_SETTING, "name": "ctiny", "compare": {"methods": ["sp", "rkd", "pkt"], "seeds": 2}}


pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


@pytest.mark.parametrize("section, expected", [
    ({"methods": ["sp", "rdk"]}, "compare.methods[1]: unknown method preset 'rdk'; did you mean 'rkd'"),
    ({"methods": ["sp+kd"]}, "compare.methods[0]: unknown method preset 'sp+kd'"),
    ({"seeds": 0}, "compare.seeds: expected a count >= 1 or a list of distinct seeds"),
    ({"seeds": [1, 1]}, "compare.seeds: expected a count >= 1 or a list of distinct seeds"),
    ({"with_kd": "yes"}, "compare.with_kd: expected true or false"),
    ({"method": ["sp"]}, "compare.method: unknown field; did you mean 'methods'"),
])
def test_bad_compare_files_name_the_field(section, expected):
    with pytest.raises(ConfigError) as err:
        validate_compare({**TINY_SETTING, "compare": section})
    assert expected in str(err.value)


@pytest.mark.slow
def test_compare_table_has_one_row_per_method_with_seed_counts(isolated):
    spec = validate_compare(DOC)
    table = run_compare(spec)
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == ["none", "kd", "sp", "rkd", "pkt", "sp+kd", "rkd+kd", "pkt+kd"]
    assert all(r["seeds"] == 2 for r in rows.values())
    assert sorted(r["rank"] for r in rows.values()) == list(range(1, 9))
    best = max(rows.values(), key=lambda r: r["test_mean"])
    assert best["rank"] == 1
    for m in ("sp", "rkd", "pkt"):
        assert rows[m]["gain"] == pytest.approx(rows[m]["test_mean"] - rows["none"]["test_mean"])
        assert rows[m]["kd_gain"] == pytest.approx(rows[f"{m}+kd"]["test_mean"] - rows["kd"]["test_mean"])
    from scipy import stats

    rho = stats.spearmanr([rows[m]["gain"] for m in ("sp", "rkd", "pkt")],
                          [rows[m]["kd_gain"] for m in ("sp", "rkd", "pkt")]).statistic
    # scipy's rho is NaN when a side is constant; the table then says None (no correlation to report)
    assert table["spearman_gain_alone_vs_with_kd"] == (None if rho != rho else pytest.approx(rho))
    out = isolated / "runs" / "ctiny" / "compare"
    with (out / "compare.csv").open() as f:
        assert [r["method"] for r in csv.DictReader(f)] == list(rows)
    assert (out / "compare.md").read_text() == format_markdown(table)
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "compare.svg").exists()


@pytest.mark.slow
def test_compare_resumes_without_retraining(isolated, monkeypatch):
    spec = validate_compare({**DOC, "compare": {"methods": ["sp"], "seeds": 2, "with_kd": False}})
    real = compare_module.run_trial
    monkeypatch.setattr(compare_module, "run_trial", interrupt_on_call(real, 4))
    with pytest.raises(KeyboardInterrupt):
        run_compare(spec)
    monkeypatch.setattr(compare_module, "run_trial", real)
    first = run_compare(spec)  # trains only what is missing
    assert [r["seeds"] for r in first["rows"]] == [2, 2, 2]
    monkeypatch.setattr(compare_module, "run_trial", lambda *a, **k: pytest.fail("retrained"))
    again = run_compare(spec)
    assert again["rows"] == first["rows"]


@pytest.mark.slow
def test_cli_compare(isolated, capsys):
    path = isolated / "c.yaml"
    path.write_text(yaml_dump({**DOC, "compare": {"methods": ["sp"], "seeds": 1}}))
    assert main(["compare", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| sp+kd | 1 |" in out and "files:" in out


@pytest.mark.slow
def test_two_processes_share_one_compare(isolated):
    import os
    import subprocess
    import sys

    path = isolated / "c.yaml"
    path.write_text(yaml_dump({**DOC, "compare": {"methods": ["sp", "pkt"], "seeds": 2, "with_kd": False}}))
    storage = f"sqlite:///{isolated}/shared.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "relkd.cli", "compare", str(path), "--storage", storage, "--quiet", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    tables = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        tables.append(__import__("json").loads(out))
    for table in tables:
        assert [(r["method"], r["seeds"]) for r in table["rows"]] == [("none", 2), ("kd", 2), ("sp", 2), ("pkt", 2)]
    study = optuna.load_study(study_name="ctiny", storage=storage)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) >= 8 and {(t.params["method"], t.params["seed"]) for t in done} == {
        (m, s) for m in ("none", "kd", "sp", "pkt") for s in (0, 1)}


def _table(test_means):
    """A compare table with these mean test accuracies (the rest as compare_table makes it)."""
    base = test_means["none"]
    rows = [{"method": m, "test_mean": v, "gain": v - base, "rank": 0,
             "kd_gain": (test_means[f"{m}+kd"] - test_means["kd"]) if f"{m}+kd" in test_means else None}
            for m, v in test_means.items()]
    return {"rows": rows}


def test_quinn_findings_follow_their_stated_criteria():
    from relkd.study.compare import quinn_findings

    # crd (2020) best alone, fitnet (2015) below none: the newer methods are ahead
    means = {"none": 0.80, "kd": 0.82, "fitnet": 0.79, "at": 0.81, "sp": 0.805, "crd": 0.83,
             "fitnet+kd": 0.84, "at+kd": 0.81, "sp+kd": 0.83, "crd+kd": 0.825}
    found = {f["finding"][:4]: f for f in quinn_findings(_table(means), ("fitnet", "at", "sp", "crd"))}
    assert found["(i) "]["agrees"] and "fitnet" in found["(i) "]["evidence"]  # fitnet loses to none
    assert "with KD, 1 do not beat kd (at)" in found["(i) "]["evidence"]
    assert found["(iv)"]["agrees"] and "CRD ranks 1 of 4 alone" in found["(iv)"]["evidence"]
    assert "3 with KD (best: fitnet+kd)" in found["(iv)"]["evidence"]
    assert not found["(iii"]["agrees"]  # newer methods are ahead here: rho(year, gain) > 0
    # reversed: old methods ahead, crd last, every method helps, gains alone and with KD in one order
    means = {"none": 0.70, "kd": 0.72, "fitnet": 0.80, "at": 0.78, "sp": 0.76, "crd": 0.74,
             "fitnet+kd": 0.82, "at+kd": 0.80, "sp+kd": 0.78, "crd+kd": 0.76}
    found = {f["finding"][:4]: f for f in quinn_findings(_table(means), ("fitnet", "at", "sp", "crd"))}
    assert not found["(i) "]["agrees"] and not found["(iv)"]["agrees"]
    assert found["(iii"]["agrees"]
    assert found["(ii)"]["evidence"].startswith("Spearman rho 1.00")


@pytest.mark.parametrize("section, expected", [
    ({"findings": "quin", "methods": ["sp", "crd", "at"]}, "compare.findings: expected one of quinn or null"),
    ({"findings": "quinn", "methods": ["sp", "rkd", "pkt"]}, "list crd among at least 3 methods"),
    ({"findings": "quinn", "methods": ["sp", "crd", "at"], "with_kd": False}, "set with_kd: true"),
])
def test_bad_findings_name_the_field(section, expected):
    with pytest.raises(ConfigError) as err:
        validate_compare({**TINY_SETTING, "compare": section})
    assert expected in str(err.value)


@pytest.mark.slow
def test_a_compare_of_feature_and_relation_methods_says_what_it_finds(isolated):
    doc = {**TINY_SETTING, "name": "cquinn", "budget": {**TINY_SETTING["budget"], "epochs": 1},
           "compare": {"methods": ["at", "crd", "sp"], "seeds": 1, "findings": "quinn"}}
    table = run_compare(validate_compare(doc))
    assert [f["finding"][:4] for f in table["findings"]] == ["(i) ", "(ii)", "(iii", "(iv)"]
    assert {r["method"] for r in table["rows"]} == {"none", "kd", "at", "crd", "sp", "at+kd", "crd+kd", "sp+kd"}
    text = format_markdown(table)
    assert "| Quinn et al.'s finding | this run | evidence |" in text and "(iv) CRD best" in text
