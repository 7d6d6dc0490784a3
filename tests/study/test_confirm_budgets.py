"""Does the margin hold at a longer budget? ``relkd study confirm --epochs 3,9,27 [--full-train]``
(relkd.study.confirm_budgets): the verdict's winner and best known method (a tuned anchor
here), none and kd retrained at each budget on the test split, margins with Welch's CI,
full-set runs apart from subset runs, resume, and the flags' errors. Studies are built with
optuna's create_trial and most runs are a stand-in trainer, so the file takes seconds; one
CLI test trains tiny students for real."""
import html
import json
import random
import statistics

import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats

from relkd.cli import main
from relkd.presets import preset
from relkd.setting import validate_setting
from relkd.study import confirm as confirm_module
from relkd.study import confirm_budgets as budgets_module
from relkd.study import queue as queue_module
from relkd.study.confirm import Candidate, confirm_study
from relkd.study.confirm_budgets import check_budgets, confirm_budgets, format_budgets, parse_budgets
from relkd.results.record import CONFIRM_ATTR, RUN_ATTR, study_document
from relkd.results.ranking import search_verdict
from relkd.engine.result import RunResult
from tiny import TINY_SETTING, interrupt_on_call
from tiny import made_study as made_study_of

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

SUBSET = 96
SETTING = validate_setting({**TINY_SETTING, "data": {**TINY_SETTING["data"], "train_subset": SUBSET}})
TUNED_KD = {**preset("kd"), "kd": {"weight": 0.5, "temperature": 2.0}}
#: (validation accuracy, anchor, tuned anchor, config) in trial order: sp is the best anchor,
#: the tuned kd the best known method (what the verdict compares with), trial 4 the winner.
TRIALS = [(0.70, "none", None, SETTING.preset("none")), (0.80, "kd", None, SETTING.preset("kd")),
          (0.84, "sp", None, SETTING.preset("sp")), (0.86, None, "kd", TUNED_KD),
          (0.85, None, None, SETTING.preset("sp+kd")), (0.83, None, None, SETTING.preset("rkd"))]


def key(config):
    return Candidate("", config).key


KEYS = {"winner": key(TRIALS[4][3]), "best known": key(TUNED_KD), "kd": key(preset("kd")), "none": key(preset("none"))}


def made_study(storage=None, name="made", trials=TRIALS):
    """This file's setting with completed trials (seed 0 each), made without training."""
    return made_study_of(SETTING, trials, storage, name)


class FakeTrain:
    """Stands in for relkd.engine.run_trial: records (composition key, epochs, seed, train_subset)
    and returns accuracies drawn from them (so each run's values are its own)."""

    def __init__(self):
        self.calls = []

    def __call__(self, setting, objective, *, seed, eval_test, teacher=None, progress=False):
        call = (key(objective.to_config()), setting.budget.epochs, seed, setting.data.train_subset)
        self.calls.append(call)
        draw = random.Random(repr(call))
        assert eval_test
        return RunResult(seed, draw.uniform(0.5, 0.9), test_accuracy=draw.uniform(0.5, 0.9),
                         wall_seconds=30.0 + seed, epochs=setting.budget.epochs)


@pytest.fixture
def fake(monkeypatch):
    train = FakeTrain()
    monkeypatch.setattr(budgets_module, "run_trial", train)
    monkeypatch.setattr(confirm_module, "run_trial", train)
    monkeypatch.setattr(queue_module, "get_teacher", lambda *a, **k: None)  # the stand-in needs no teacher
    return train


def stored(out, name="made"):
    """Test accuracy of each stored confirm run: {(label, epochs): [by seed]}."""
    runs = optuna.load_study(study_name=f"{name}.confirm", storage=f"sqlite:///{out}/confirm.db")
    found = {}
    for t in sorted(runs.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.user_attrs[RUN_ATTR]["seed"]):
        run = t.user_attrs[RUN_ATTR]
        found.setdefault((run["label"], run["epochs"]), []).append(t.user_attrs["test_accuracy"])
    return found


def hand_margin(b, a):
    """Welch by hand: the difference, its 95% CI with Welch-Satterthwaite df, scipy's p."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    d = sum(b) / len(b) - sum(a) / len(a)
    return d, d - half, d + half, stats.ttest_ind(b, a, equal_var=False).pvalue


def test_several_budgets_retrain_the_verdicts_winner_and_best_known_with_none_and_kd(fake, tmp_path):
    study = made_study()
    verdict = search_verdict(study)
    assert verdict["best_anchor"]["label"] == "tuned kd (trial 3)"  # not sp, the best *anchor*
    table = confirm_budgets(study, epochs=[2, 1], seeds=[0, 1], out_dir=tmp_path)
    expected = [(KEYS[role], e, s, SUBSET) for e in (1, 2) for role in ("winner", "best known", "kd", "none")
                for s in (0, 1)]
    assert fake.calls == expected  # each candidate, each seed, shortest budget first, on the study's subset
    assert table["epochs"] == [1, 2] and not table["full_train"] and table["data"]["train_subset"] == SUBSET
    assert [(c["label"], c["roles"]) for c in table["candidates"]] == [
        ("trial 4", ["winner"]), ("tuned kd (trial 3)", ["best known"]), ("anchor kd", ["kd"]),
        ("anchor none", ["none"])]
    assert [c["trial"] for c in table["candidates"]] == [4, 3, 1, 0]
    assert table["verdict"]["outcome"] == verdict["outcome"]
    for budget in table["by_budget"]:
        assert budget["runs"] == 8 and budget["wall_seconds"] == pytest.approx(4 * (30 + 31))
        assert all(r["seeds"] == 2 and 0.5 <= r["test_mean"] <= 0.9 for r in budget["rows"])
    text = (tmp_path / "confirm_budgets.md").read_text()
    assert text == format_budgets(table) and text.count("| 2 | ") == 5  # four rows and a margin line
    assert "| 1 | tuned kd (trial 3) | best known |" in text and "on the study's training subset" in text
    assert json.loads((tmp_path / "confirm_budgets.json").read_text())["by_budget"] == table["by_budget"]
    record = study_document(study, CONFIRM_ATTR)
    assert record["budgets"]["by_budget"] == table["by_budget"] and "objective_config" not in json.dumps(record)
    # no single-budget confirm yet: the fields older readers use show the longest budget
    assert record["epochs"] == 2 and record["rows_from"] == "budgets" and len(record["rows"]) == 4
    assert record["best_preset"] == "tuned kd (trial 3)"


def test_the_margin_and_its_ci_are_welchs_on_the_stored_test_values(fake, tmp_path):
    table = confirm_budgets(made_study(), epochs=[1, 2], seeds=[0, 1, 2], out_dir=tmp_path)
    values = stored(tmp_path)
    text = format_budgets(table)
    for budget in table["by_budget"]:
        e = budget["epochs"]
        winner, known, none = (values["trial 4", e], values["tuned kd (trial 3)", e], values["anchor none", e])
        rows = {r["label"]: r for r in budget["rows"]}
        assert rows["trial 4"]["test"] == winner
        assert rows["trial 4"]["test_mean"] == pytest.approx(statistics.fmean(winner))
        assert rows["trial 4"]["test_std"] == pytest.approx(statistics.stdev(winner))
        for margin, (b, a) in ((budget["margin"], (winner, known)), (budget["over_none"], (winner, none))):
            d, low, high, p = hand_margin(b, a)
            assert margin["difference"] == pytest.approx(d)
            assert margin["ci"] == pytest.approx([low, high]) and margin["p"] == pytest.approx(p)
        d, low, high, p = hand_margin(winner, known)
        assert f"| {e} | {100 * d:+.2f} | {100 * low:+.2f} .. {100 * high:+.2f} | {p:.3g} |" in text


def test_full_train_uses_the_whole_training_set_and_never_reuses_subset_runs(fake, tmp_path):
    study = made_study()
    confirm_budgets(study, epochs=[1, 2], seeds=[0, 1], out_dir=tmp_path)
    fake.calls.clear()
    table = confirm_budgets(study, epochs=[2], seeds=[0, 1], full_train=True, out_dir=tmp_path)
    assert sorted(fake.calls) == sorted((k, 2, s, None) for k in KEYS.values() for s in (0, 1))
    assert table["full_train"] and table["data"] == {"train_subset": None, "train_per_class": None}
    assert table["study_data"]["train_subset"] == SUBSET
    assert "on the full training set (the study trained on train_subset 96)" in format_budgets(table)
    assert (tmp_path / "confirm_budgets_full_train.md").exists() and (tmp_path / "confirm_budgets.md").exists()
    record = study_document(study, CONFIRM_ATTR)
    assert record["budgets"]["epochs"] == [1, 2] and record["budgets_full_train"]["epochs"] == [2]
    # a single-budget confirm at 2 epochs on the subset reuses the budgets' runs of the same compositions
    fake.calls.clear()
    single = confirm_study(study, top_k=1, seeds=[0, 1], epochs=2, out_dir=tmp_path)
    assert sorted(fake.calls) == sorted((key(SETTING.preset("sp")), 2, s, SUBSET) for s in (0, 1))  # only sp is new
    record = study_document(study, CONFIRM_ATTR)
    assert record["rows"] == [{k: v for k, v in r.items() if k != "objective_config"} for r in single["rows"]]
    assert "rows_from" not in record and set(record) >= {"budgets", "budgets_full_train"}  # kept


def test_a_resumed_confirm_trains_only_the_runs_it_misses(fake, tmp_path, monkeypatch):
    study = made_study()
    monkeypatch.setattr(budgets_module, "run_trial", interrupt_on_call(fake, 4))
    with pytest.raises(KeyboardInterrupt):
        confirm_budgets(study, epochs=[1, 2], seeds=[0, 1], out_dir=tmp_path)
    assert len(fake.calls) == 3
    monkeypatch.setattr(budgets_module, "run_trial", fake)
    table = confirm_budgets(study, epochs=[1, 2], seeds=[0, 1], out_dir=tmp_path)
    assert len(fake.calls) == 16 and len(set(fake.calls)) == 16  # the 13 it missed, each once
    monkeypatch.setattr(budgets_module, "run_trial", lambda *a, **k: pytest.fail("retrained"))
    assert confirm_budgets(study, epochs=[1, 2], seeds=[0, 1], out_dir=tmp_path)["by_budget"] == table["by_budget"]


def test_budgets_are_checked_and_a_study_without_verdict_is_refused(tmp_path):
    assert parse_budgets("3,9,27") == [3, 9, 27] and parse_budgets("5") == [5] and check_budgets([9, 3]) == [3, 9]
    for text in ("3,x", "0", "3,,9", "", "-3", "2.5"):
        with pytest.raises(ValueError, match="^epochs: expected positive integers separated by commas, e.g. 3,9,27"):
            parse_budgets(text)
    with pytest.raises(ValueError, match="epochs: expected each budget once"):
        parse_budgets("3,3")
    study = made_study(trials=TRIALS[:4])  # anchors and a tuned anchor, nothing searched
    with pytest.raises(ValueError, match="epochs: expected positive integers"):
        confirm_budgets(study, epochs=[0, 3], out_dir=tmp_path)
    with pytest.raises(ValueError, match="has no verdict yet"):
        confirm_budgets(study, epochs=[1, 2], out_dir=tmp_path)


@pytest.mark.parametrize("flags, expected", [
    (["--epochs", "3,x"], "--epochs: expected positive integers separated by commas, e.g. 3,9,27, got '3,x'"),
    (["--epochs", "0"], "--epochs: expected positive integers separated by commas, e.g. 3,9,27, got '0'"),
    (["--epochs", "3,3"], "--epochs: expected each budget once, got '3,3'"),
    (["--epochs", "1,2", "--top-k", "2"], "--top-k: with several --epochs or --full-train"),
    (["--full-train", "--top-k", "2"], "--top-k: with several --epochs or --full-train"),
])
def test_cli_flag_errors_name_the_flag(capsys, flags, expected):
    try:
        code = main(["study", "confirm", "--study-name", "made", *flags])
    except SystemExit as exit_:  # argparse refuses bad flag values itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_confirms_at_two_budgets_with_real_runs_and_resumes(tmp_path, capsys, monkeypatch):
    """Tiny students trained for real; anchor kd is the best known (also the kd row): 3 x 2 runs."""
    url = f"sqlite:///{tmp_path}/study.db"
    trials = [(0.70, "none", None, SETTING.preset("none")), (0.88, "kd", None, SETTING.preset("kd")),
              (0.85, None, None, SETTING.preset("sp+kd"))]
    made_study(url, trials=trials)
    argv = ["study", "confirm", "--study-name", "made", "--storage", url, "--epochs", "1,2", "--seeds", "1",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| 1 | anchor kd | best known, kd |" in text and "| 2 | trial 2 | winner |" in text
    assert "| epochs | winner − best known | 95% CI | p | winner − none |" in text
    assert (tmp_path / "out" / "confirm_budgets.md").read_text() == text
    monkeypatch.setattr(budgets_module, "run_trial", lambda *a, **k: pytest.fail("retrained"))
    assert main(argv + ["--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [b["runs"] for b in table["by_budget"]] == [3, 3] and all(b["wall_seconds"] > 0 for b in table["by_budget"])
    assert all(0 <= r["test_mean"] <= 1 for b in table["by_budget"] for r in b["rows"])
    study = optuna.load_study(study_name="made", storage=url)
    assert study_document(study, CONFIRM_ATTR)["budgets"]["epochs"] == [1, 2]
    from relkd.analysis.report import render_report  # the report shows the budgets' table too

    assert "| epochs | winner − best known | 95% CI | p | winner − none |" in html.unescape(render_report(study, url))
