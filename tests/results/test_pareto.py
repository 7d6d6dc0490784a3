"""Multi-objective studies (validation accuracy against student size): the Pareto front, the
best student within a size, and what status, report, plot, export, importance and confirm
make of such a study. The studies are built directly with Optuna: nothing trains here."""
import itertools
import json
import logging
import random

import optuna
import pytest
import yaml
from optuna.trial import TrialState, create_trial

from relkd.results.pareto import (Point, best_within, format_front, is_multi_objective, non_dominated, objective_names,
                                  pareto_front, ratio_of)
from relkd.analysis.plots import write_study_plots
from relkd.analysis.report import render_report
from relkd.cli import main
from relkd.config import load_config
from relkd.presets import preset
from relkd.study import study_status
from relkd.study.export import export_trials
from relkd.results.record import OBJECTIVES_ATTR, SETTING_ATTR
from tiny import TINY_SETTING

RECORD = {k: v for k, v in TINY_SETTING.items() if k != "name"}

#: (accuracy, parameters, MACs, ratio or None when not adapted, anchor): the trials of MO_TRIALS
MO_TRIALS = [
    (0.80, 1000, 10_000, 0.25, None),    # 0 front: the smallest
    (0.85, 2000, 20_000, 0.5, None),     # 1 front
    (0.84, 2500, 25_000, 0.6, None),     # 2 dominated by 1 (larger, less accurate)
    (0.85, 2000, 20_000, 0.5, None),     # 3 front: a tie with 1 (neither dominates)
    (0.70, 1000, 10_000, 0.25, None),    # 4 dominated by 0 (same size, less accurate)
    (0.90, 4000, 40_000, None, "kd"),    # 5 front: the anchor at full size
    (0.88, 4000, 5_000, 0.9, None),      # 6 dominated by 5 (same size) in parameters; few MACs
]
FRONT = [0, 1, 3, 5]


def student(ratio):
    section = {"model": "cnn_tiny", "params": {"width": 4},
               "init": {"pretrain": "studies/pretrain_fmnist_source.yaml", "head": "replace"}}
    if ratio is not None:
        section["adapt"] = {"ratio": ratio, "measure": "params", "criterion": "activation"}
    return section


def trial_attrs(params, macs, ratio, anchor, seed=0):
    attrs = {"objective_config": preset(anchor or ("rkd+kd" if params % 2000 else "sp+kd")), "seed": seed,
             "student_params": params, "student_macs": macs, "student": student(ratio)}
    return {**attrs, **({"anchor": anchor} if anchor else {})}


def make_study(storage=None, name="mo", trials=MO_TRIALS, objectives=("val_accuracy", "params"), multi=True):
    """A relkd study of ``trials``; multi-objective (values: accuracy, the size ``objectives`` names)
    or single-objective (value: accuracy), with a pruned and a failed trial beside them."""
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    study.set_user_attr(SETTING_ATTR, RECORD)
    if multi:
        study.set_user_attr(OBJECTIVES_ATTR, list(objectives))
    for acc, params, macs, ratio, anchor in trials:
        size = {"params": params, "macs": macs}[objectives[1]]
        values = [acc, size] if multi else [acc]
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=values,
                                     user_attrs=trial_attrs(params, macs, ratio, anchor)))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"pruned_reason": "nan loss"}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"error": "boom"}))
    return study


@pytest.fixture
def mo(tmp_path):
    url = f"sqlite:///{(tmp_path / 'mo.db').as_posix()}"
    return make_study(url), url


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


# ----------------------------------------------------------------------------- the front


def test_the_front_is_exactly_the_non_dominated_trials():
    study = make_study()
    assert is_multi_objective(study) and objective_names(study) == ["val_accuracy", "params"]
    rows = pareto_front(study)
    assert [r["trial"] for r in rows] == FRONT
    assert [r["params"] for r in rows] == [1000, 2000, 2000, 4000]
    assert [r["ratio"] for r in rows] == [0.25, 0.5, 0.5, 1.0]  # the anchor was not adapted
    assert rows[-1]["composition"] == "anchor kd" and rows[0]["composition"] == "trial 0"
    assert rows[1]["objective_config"] == preset("sp+kd") and rows[1]["macs"] == 20_000
    assert rows[0]["val_accuracy"] == 0.80


def test_the_front_follows_the_study_s_size_objective():
    study = make_study(objectives=("val_accuracy", "macs"))
    rows = pareto_front(study)
    assert [r["trial"] for r in rows] == [6, 5]  # 5,000 MACs and 88% beat all but the 90% anchor
    assert [r["macs"] for r in rows] == [5000, 40_000] and [r["params"] for r in rows] == [4000, 4000]


def brute_force(points):
    def dominates(q, p):
        return q.accuracy >= p.accuracy and q.size <= p.size and (q.accuracy > p.accuracy or q.size < p.size)

    return {p.trial.number for p in points if not any(dominates(q, p) for q in points)}


@pytest.mark.parametrize("seed", range(20))
def test_the_front_agrees_with_the_definition_on_random_points(seed):
    rng = random.Random(seed)
    points = []
    for number in range(40):  # few distinct values: many ties and equal sizes
        acc, size = rng.choice([0.5, 0.6, 0.7, 0.8]), rng.choice([10, 20, 30, 40, 50])
        trial = create_trial(state=TrialState.COMPLETE, values=[acc, size])
        trial.number = number
        points.append(Point(trial, acc, size))
    front = non_dominated(points)
    assert {p.trial.number for p in front} == brute_force(points)
    assert [(p.size, -p.accuracy, p.trial.number) for p in front] == sorted((p.size, -p.accuracy, p.trial.number)
                                                                             for p in front)
    assert all(a.accuracy < b.accuracy for a, b in itertools.pairwise(front) if a.size < b.size)


def test_a_single_objective_study_has_a_front_over_the_sizes_its_trials_record():
    study = make_study(multi=False)
    assert not is_multi_objective(study) and objective_names(study) == ["val_accuracy"]
    assert [r["trial"] for r in pareto_front(study)] == FRONT
    old = make_study(multi=False, trials=[])
    old.add_trial(create_trial(state=TrialState.COMPLETE, value=0.8, user_attrs={"objective_config": preset("kd")}))
    assert pareto_front(old) == []


def test_ratio_is_one_without_adaptation():
    plain = create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs={"student": student(None)})
    assert ratio_of(plain) == 1.0 and ratio_of(create_trial(state=TrialState.COMPLETE, value=0.5)) == 1.0


# ----------------------------------------------------------------------------- the best within a size


@pytest.mark.parametrize("limits, trial", [
    ({"max_params": 2000}, 1),          # 1 and 3 tie: the lower number
    ({"max_params": 1999}, 0),
    ({"max_params": 10**9}, 5),
    ({"max_macs": 5000}, 6),            # few MACs, many parameters
    ({"max_params": 2000, "max_macs": 19_999}, 0),
])
def test_best_within_picks_the_most_accurate_student_that_fits(limits, trial):
    assert best_within(make_study(), **limits).number == trial
    assert best_within(make_study(multi=False), **limits).number == trial  # single-objective studies too


@pytest.mark.parametrize("limits, message", [
    ({"max_params": 999}, "max_params: no completed trial has at most 999 parameters; the smallest student "
                          "trained has 1,000 parameters (trial 0); give at least 1,000"),
    ({"max_macs": 10}, "max_macs: no completed trial has at most 10 MACs; the smallest student trained has 5,000 "
                       "MACs (trial 6)"),
    ({"max_params": 1000, "max_macs": 5000}, "max_params: no completed trial has both at most 1,000 parameters and "
                                             "at most 5,000 MACs; those within 1,000 parameters have at least "
                                             "10,000 MACs"),
    ({}, "max_params: give max_params or max_macs"),
    ({"max_params": 0}, "max_params: expected an integer >= 1"),
])
def test_best_within_says_why_nothing_fits(limits, message):
    with pytest.raises(ValueError) as err:
        best_within(make_study(), **limits)
    assert message in str(err.value)


def test_best_within_needs_recorded_sizes():
    old = optuna.create_study(study_name="old", direction="maximize")
    old.add_trial(create_trial(state=TrialState.COMPLETE, value=0.8, user_attrs={"objective_config": preset("kd")}))
    with pytest.raises(ValueError, match="max_params: the trials of study 'old' record no student parameters "
                                         r"\(student_params\): they were made before relkd recorded"):
        best_within(old, max_params=100)


# ----------------------------------------------------------------------------- status, report, plots


def test_status_of_a_multi_objective_study_is_its_front(mo, capsys):
    study, url = mo
    status = study_status(study)
    assert status["best"] is None and status["verdict"] is None and status["objectives"] == ["val_accuracy", "params"]
    assert [r["trial"] for r in status["pareto"]] == FRONT and "Pareto front" in status["verdict_line"]
    code, out, _ = run(["study", "status", "--study-name", "mo", "--storage", url, "--json"], capsys)
    assert code == 0
    shown = json.loads(out)
    assert [r["trial"] for r in shown["pareto"]] == FRONT and shown["best"] is None
    assert shown["pareto"][1]["objective_config"] == preset("sp+kd")
    code, out, _ = run(["study", "status", "--study-name", "mo", "--storage", url], capsys)
    assert code == 0 and "Pareto front (val_accuracy, params" in out and "best:" not in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["trial", "val", "acc"])
    rows = [line.split() for line in lines[header + 1:header + 5]]
    assert [r[:5] for r in rows] == [["0", "80.00", "1,000", "10,000", "0.25"],
                                     ["1", "85.00", "2,000", "20,000", "0.50"],
                                     ["3", "85.00", "2,000", "20,000", "0.50"],
                                     ["5", "90.00", "4,000", "40,000", "1.00"]]
    assert " ".join(rows[-1][5:]) == "anchor kd" and " ".join(rows[1][5:]) == "kd + dot/row_l2/mse"


def test_single_objective_status_keeps_its_keys():
    status = study_status(make_study(multi=False))
    assert "pareto" not in status and "objectives" not in status
    assert status["best"]["trial"] == 5 and status["anchors"] == {"kd": 0.90}


def test_format_front_without_sizes():
    assert "no completed trial records" in format_front([])


@pytest.mark.slow
def test_plots_of_a_multi_objective_study(mo, tmp_path, caplog):
    study, _ = mo
    with caplog.at_level(logging.INFO, logger="relkd.analysis.plots"):
        stems = {p.stem for p in write_study_plots(study, tmp_path / "plots")}
    assert stems == {"pareto", "marginals", "interaction_affinity_normalisation", "interaction_normalisation_loss",
                     "weights"}
    assert (tmp_path / "plots" / "pareto.png").stat().st_size > 5000 and (tmp_path / "plots" / "pareto.svg").exists()
    assert "no history plot: study mo has several objectives" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.slow
def test_the_pareto_plot_of_a_single_objective_study(tmp_path, caplog):
    sized = make_study(multi=False)
    assert "pareto" in {p.stem for p in write_study_plots(sized, tmp_path / "sized")}
    one_size = make_study(multi=False, trials=[(a, 1000, 10_000, None, anchor) for a, _, _, _, anchor in MO_TRIALS])
    with caplog.at_level(logging.INFO, logger="relkd.analysis.plots"):
        stems = {p.stem for p in write_study_plots(one_size, tmp_path / "one")}
    assert "pareto" not in stems and "history" in stems
    assert "no pareto plot: every trial trained a student of one size" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "pareto" in r.getMessage()]


@pytest.mark.slow
def test_report_of_a_multi_objective_study(mo):
    study, url = mo
    page = render_report(study, url)
    assert "<h2>Pareto front</h2>" in page and 'alt="pareto"' in page and "Traceback" not in page
    for cells in (["0", "80.00", "1,000", "10,000", "0.25"], ["5", "90.00", "4,000", "40,000", "1.00"]):
        assert "".join(f'<td class="num">{c}</td>' for c in cells) in page
    assert "<td>anchor kd</td>" in page and "Not shown for a study with several objectives" in page
    assert "What mattered" not in page and "Top 5 compositions" not in page and 'alt="history"' not in page
    assert page.count('alt="pareto"') == 1 and 'alt="marginals"' in page


@pytest.mark.slow
def test_cli_report_and_plot(mo, tmp_path, capsys):
    _, url = mo
    code, out, _ = run(["study", "report", "--study-name", "mo", "--storage", url, "--out",
                        str(tmp_path / "r.html")], capsys)
    assert code == 0 and "Pareto front" in (tmp_path / "r.html").read_text()
    code, out, _ = run(["study", "plot", "--study-name", "mo", "--storage", url, "--out", str(tmp_path / "p")],
                       capsys)
    assert code == 0 and str(tmp_path / "p" / "pareto.png") in out


# ----------------------------------------------------------------------------- export, importance, confirm


def test_export_max_params_writes_the_config_and_the_student(mo, tmp_path, capsys):
    study, url = mo
    out = tmp_path / "small.yaml"
    code, printed, _ = run(["study", "export", "--study-name", "mo", "--storage", url, "--max-params", "2000",
                            "--out", str(out)], capsys)
    assert code == 0
    student_path = tmp_path / "small.student.yaml"
    assert printed.split() == [str(out), str(student_path)]
    config = load_config(out)
    meta = config["meta"]
    assert meta["trial"] == 1 and meta["value"] == 0.85 and meta["student_params"] == 2000
    assert meta["student_macs"] == 20_000 and meta["selected_by"] == {"max_params": 2000}
    assert meta["objectives"] == ["val_accuracy", "params"] and meta["values"] == [0.85, 2000]
    assert yaml.safe_load(student_path.read_text()) == {"student": study.trials[1].user_attrs["student"]}


def test_export_by_trial_and_by_size_from_the_library(mo, tmp_path):
    study, url = mo
    paths = export_trials(study, url, tmp_path / "t.yaml", trial=5)
    assert [p.name for p in paths] == ["t.yaml", "t.student.yaml"]
    assert yaml.safe_load(paths[1].read_text())["student"] == student(None)
    single = make_study(multi=False)
    [only] = export_trials(single, url, tmp_path / "best.yaml")  # the single-objective best: no student file
    assert load_config(only)["meta"]["trial"] == 5
    by_size = export_trials(single, url, tmp_path / "s.yaml", max_macs=5000)
    assert [p.name for p in by_size] == ["s.yaml", "s.student.yaml"] and load_config(by_size[0])["meta"]["trial"] == 6


@pytest.mark.parametrize("flags, message", [
    ([], "study 'mo' has two objectives (val_accuracy, params) and so no single best trial to export; choose one "
         "by size with --max-params or --max-macs (the most accurate student within that size), or by number with "
         "--trial"),
    (["--top-k", "2"], "no single best trial to export"),
    (["--max-params", "999"], "--max-params: no completed trial has at most 999 parameters; the smallest student "
                              "trained has 1,000 parameters (trial 0)"),
    (["--max-params", "2000", "--trial", "1"], "--max-params and --max-macs choose the trial by size"),
])
def test_export_errors_are_clear(mo, tmp_path, capsys, flags, message):
    _, url = mo
    code, _, err = run(["study", "export", "--study-name", "mo", "--storage", url, "--out", str(tmp_path / "x.yaml"),
                        *flags], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("command, needs", [("importance", "importance needs one"), ("confirm", "confirm needs one")])
def test_importance_and_confirm_refuse_a_multi_objective_study(mo, capsys, command, needs):
    _, url = mo
    code, _, err = run(["study", command, "--study-name", "mo", "--storage", url], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"study 'mo' has two objectives (val_accuracy, params); {needs}" in err
