"""benchmarks/search_efficiency.py: its pure pieces (trajectory, time to the best anchor,
median and range, resuming from runs.jsonl) and one short run on the tiny synthetic setting."""
import copy
import datetime
import importlib.util
import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from relkd.fields import yaml_dump
from relkd.study import validate_study
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

_spec = importlib.util.spec_from_file_location("search_efficiency", ROOT / "benchmarks" / "search_efficiency.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

T0 = datetime.datetime(2024, 1, 1, 12, 0, 0)


def study_doc():
    doc = {**copy.deepcopy(TINY_SETTING), "search": {"tap": ["last_stage", "pool"]},
           "optuna": {"anchors": ["none", "kd"], "ladder": {"rungs": [1], "min_trials": 2}, "refine": {"share": 0.5}}}
    doc["budget"]["epochs"] = 3
    return doc


def add(study, seconds, state, value=None, epochs=1, **user_attrs):
    trial = create_trial(state=state, value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                         intermediate_values={e + 1: 0.1 * (e + 1) for e in range(epochs)},
                         user_attrs={"objective_config": {"n": len(study.trials)}, **user_attrs})
    trial.datetime_start = T0 + datetime.timedelta(seconds=seconds - 1)
    trial.datetime_complete = T0 + datetime.timedelta(seconds=seconds)
    study.add_trial(trial)


def hand_built_study():
    """Searched trials in an order that is not their completion order, plus trials that must not count."""
    study = optuna.create_study(direction="maximize")
    add(study, 1, TrialState.COMPLETE, 0.9, epochs=3, anchor="kd")  # an anchor: shared, not searched
    add(study, 9, TrialState.COMPLETE, 0.6, epochs=3)
    add(study, 3, TrialState.PRUNED, epochs=1, pruned_reason="pruned by the median pruner after epoch 1")
    add(study, 5, TrialState.COMPLETE, 0.4, epochs=2)
    add(study, 4, TrialState.PRUNED, epochs=0, invalid_combination=["bad"])  # not trained
    add(study, 6, TrialState.COMPLETE, 0.95, epochs=3, rerun={"of": 1, "seed": 1})  # a re-run: not searched
    add(study, 12, TrialState.COMPLETE, 0.5, epochs=3)
    return study


def test_trajectory_lists_searched_trials_in_completion_order():
    points = bench.trajectory(hand_built_study(), T0)
    assert [p["seconds"] for p in points] == [3, 5, 9, 12]
    assert [p["trial"] for p in points] == [2, 3, 1, 6]
    assert [p["epochs"] for p in points] == [1, 3, 6, 9]
    assert [p["best"] for p in points] == [None, 0.4, 0.6, 0.6]
    assert [p["state"] for p in points] == ["pruned", "complete", "complete", "complete"]


def test_time_to_target_and_budget_cut():
    points = bench.trajectory(hand_built_study(), T0)
    assert bench.time_to_target(points, 0.4) == 5
    assert bench.time_to_target(points, 0.5) == 9
    assert bench.time_to_target(points, 0.61) is None
    assert bench.time_to_target(points, None) is None
    kept = bench.within(points, 10)
    assert [p["seconds"] for p in kept] == [3, 5, 9]
    assert bench.best_at(points, 4) is None and bench.best_at(points, 5) == 0.4 and bench.best_at(points, 100) == 0.6
    # against epochs trained: 1 epoch (a pruned trial) gives nothing yet, 3 the first completed trial
    assert [bench.best_at(points, e, "epochs") for e in (1, 2, 3, 6)] == [None, None, 0.4, 0.6]
    summary = bench.run_summary(kept, 0.55)
    assert summary == {"best": 0.6, "trials": 3, "compositions": 3, "epochs": 6, "time_to_anchor": 9,
                       "beat_anchor": True}
    assert bench.run_summary(kept, 0.6)["beat_anchor"] is False  # equal is reaching, not beating
    assert bench.run_summary([], 0.5) == {"best": None, "trials": 0, "compositions": 0, "epochs": 0,
                                          "time_to_anchor": None, "beat_anchor": False}


def test_summarize_median_and_range_with_missing_values():
    s = bench.summarize([30.0, None, 10.0], math.inf)  # one seed never reached the target
    assert s == {"median": 30.0, "min": 10.0, "max": None, "n": 3, "missing": 1}
    assert bench.summarize([None, None, 5.0], math.inf)["median"] is None  # the median run never reached it
    assert bench.summarize([20.0, None], math.inf)["median"] is None
    s = bench.summarize([0.4, 0.6], -math.inf)
    assert s["median"] == pytest.approx(0.5) and s["min"] == 0.4 and s["max"] == 0.6
    assert bench.summarize([None, 0.7, 0.5], -math.inf) == {"median": 0.5, "min": None, "max": 0.7, "n": 3,
                                                            "missing": 1}
    assert bench.summarize([], math.inf)["median"] is None


def test_ratios_and_ratio_line():
    def summary(times):
        return {"time_to_anchor": bench.summarize(times, math.inf)}

    table = {"tpe": summary([100.0, 120.0, 80.0]), "relkd": summary([40.0, 50.0, None]), "random": summary([None])}
    r = bench.ratios(table)
    assert r["tpe"] == 1.0 and r["relkd"] == pytest.approx(0.5) and r["random"] is None
    line = bench.ratio_line(table)
    assert "relkd 0.50×" in line and "random never reached it" in line
    table["tpe"] = summary([None, None, 10.0])
    assert "undefined" in bench.ratio_line(table)
    assert bench.ratios(table)["relkd"] is None
    # tpe never reached it within 200 s: relkd's median 50 s is below 0.25x of tpe's unknown time
    assert "relkd < 0.25× (50 s)" in bench.ratio_line(table, budget=200.0)


def test_resume_skips_runs_in_runs_jsonl(tmp_path):
    path = tmp_path / "runs.jsonl"
    bench.append_run(path, {"study": "tiny", "strategy": "tpe", "seed": 1, "budget": 60.0, "best": 0.5})
    bench.append_run(path, {"study": "tiny", "strategy": "random", "seed": 0, "budget": 30.0})  # another budget
    with path.open("a") as f:
        f.write('{"study": "tiny", "strategy": "random", "seed"\n')  # a line cut short by a kill
    done = bench.load_runs(path)
    assert set(done) == {("tiny", "tpe", 1, 60.0), ("tiny", "random", 0, 30.0)}
    todo = bench.missing_runs("tiny", ["random", "tpe"], [0, 1], 60, done)
    assert todo == [("random", 0), ("tpe", 0), ("random", 1)]
    assert bench.missing_runs("other", ["tpe"], [1], 60, done) == [("tpe", 1)]


def test_choose_study_skips_interrupted_runs_and_reuses_finished_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'eff.db'}"
    assert bench.choose_study(url, "s-eff-tpe-s0", 60) == ("s-eff-tpe-s0", False)
    interrupted = optuna.create_study(study_name="s-eff-tpe-s0", storage=url)
    interrupted.set_user_attr(bench.BENCH_ATTR, {"budget": 60.0, "finished": False})
    assert bench.choose_study(url, "s-eff-tpe-s0", 60) == ("s-eff-tpe-s0-2", False)
    finished = optuna.create_study(study_name="s-eff-tpe-s0-2", storage=url)
    finished.set_user_attr(bench.BENCH_ATTR, {"budget": 60.0, "finished": True})
    assert bench.choose_study(url, "s-eff-tpe-s0", 60) == ("s-eff-tpe-s0-2", True)
    assert bench.choose_study(url, "s-eff-tpe-s0", 30) == ("s-eff-tpe-s0-3", False)  # another budget


def test_strategy_specs_keep_the_training_seed():
    spec = validate_study(study_doc())
    tpe = bench.strategy_spec(spec, "tpe", 7, 30, "tiny-eff-tpe-s7")
    assert tpe.sampler == ("tpe", {"multivariate": False, "group": False, "constant_liar": False})
    assert tpe.seed == 7 and tpe.setting.seed == spec.setting.seed == 0
    assert (tpe.ladder, tpe.refine, tpe.rerun, tpe.anchors, tpe.n_trials) == (None, None, None, (), None)
    assert tpe.pruner[0] == "median" and tpe.timeout == 30
    assert tpe.document["optuna"]["sampler"]["multivariate"] is False and "ladder" not in tpe.document["optuna"]
    own = bench.strategy_spec(spec, "relkd", 7, 30, "tiny-eff-relkd-s7")
    assert own.sampler == spec.sampler and own.ladder == spec.ladder and own.refine == spec.refine
    assert own.rerun is None and own.study_name == "tiny-eff-relkd-s7"
    assert isinstance(bench.strategy_spec(spec, "gp", 7, 30, "g").make_sampler(), optuna.samplers.GPSampler)


@pytest.mark.slow
def test_end_to_end_on_the_tiny_setting(isolated, monkeypatch):
    study_file = isolated / "tiny.yaml"
    study_file.write_text(yaml_dump(study_doc()))
    out = isolated / "out"
    args = ["--study", str(study_file), "--strategies", "random,relkd", "--seeds", "3", "--budget", "8",
            "--out", str(out), "--threads", "1"]
    text = bench.main(args)
    md = (out / "search_efficiency.md").read_text()
    assert md == text
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["strategy", "random", "relkd"]
    assert "relative to tpe" in md and "tpe was not run" in md
    table = json.loads((out / "search_efficiency.json").read_text())
    assert list(table["summary"]) == ["random", "relkd"]
    assert table["best_anchor"]["name"] in ("none", "kd") and 0 < table["best_anchor"]["value"] <= 1
    for name in ("random", "relkd"):
        assert table["summary"][name]["trials"]["median"] >= 1
        assert table["summary"][name]["seeds"] == [3]
    assert (out / "search_efficiency.png").stat().st_size > 0 and (out / "search_efficiency.svg").exists()
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["strategy"], r["seed"]) for r in runs] == [("random", 3), ("relkd", 3)]
    url = f"sqlite:///{(out / 'search_efficiency.db').resolve().as_posix()}"
    for r in runs:
        assert r["study_name"] == f"tiny-eff-{r['strategy']}-s3"
        assert r["trials"] >= 1 and all(p["seconds"] <= 8 for p in r["trajectory"][:r["trials"]])
        epochs = [p["epochs"] for p in r["trajectory"]]
        assert epochs == sorted(epochs) and r["epochs"] == epochs[r["trials"] - 1]
        study = optuna.load_study(study_name=r["study_name"], storage=url)
        anchors = [t for t in study.trials if "anchor" in t.user_attrs]
        assert sorted(t.user_attrs["anchor"] for t in anchors) == ["kd", "none"]  # copied, not trained again
        assert all(t.user_attrs["copied_from"] == "tiny-eff-anchors" for t in anchors)
        searched = [t for t in study.trials if "seed" in t.user_attrs and "anchor" not in t.user_attrs]
        assert searched and all(t.user_attrs["seed"] == 0 for t in searched)  # the training seed, not 3
        assert not any("rerun" in t.user_attrs for t in study.trials)
    relkd_study = optuna.load_study(study_name="tiny-eff-relkd-s3", storage=url)
    assert any("refined_from" in t.user_attrs for t in relkd_study.trials)  # refined from the copied anchors

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(bench, "run_strategy", no_training)
    again = bench.main(args)  # everything is in runs.jsonl
    assert again == text
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2
