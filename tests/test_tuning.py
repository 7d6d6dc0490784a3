"""The tuned recipe (relkd.tuning): the learning rate tuned on CE alone and KD before anything is
compared, cached, recorded by studies and compares, the headroom and its wording, the warning
for an untuned rate (tiny models, synthetic data)."""
import copy
import html
import logging

import pytest

import relkd.tuning as tuning_module
from relkd.analysis import write_outputs
from relkd.analysis.report import render_report
from relkd.cli import main
from relkd.fields import ConfigError, yaml_dump
from relkd.setting import validate_setting
from relkd.study import load_relkd_study, run_study, study_setting, study_status, validate_study
from relkd.results.record import RECIPE_ATTR, study_document
from relkd.tuning import Tuning, headroom_line, resolve_recipe, tune_recipe
from relkd.engine.result import RunResult
from tiny import TINY_SETTING

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

TUNE = {"lr": [0.05, 0.2], "seeds": 2, "extend": 0}


def tiny(tune=TUNE, **budget):
    doc = copy.deepcopy(TINY_SETTING)
    doc["budget"].update(budget)
    if tune is not None:
        doc["tune"] = tune
    return doc


def counting_runs(monkeypatch):
    """Count (and record the rate of) the runs the tuning trains."""
    calls, real = [], tuning_module.run_trial

    def run(setting, config, **kwargs):
        calls.append((setting.budget.lr, config["kd"] is not None, kwargs["seed"]))
        return real(setting, config, **kwargs)

    monkeypatch.setattr(tuning_module, "run_trial", run)
    return calls


@pytest.mark.parametrize("tune, field, words", [
    ({"lr": [0.1]}, "tune.lr", "at least two learning rates"),
    ({"lr": [0.1, -1]}, "tune.lr", "in (0, 100]"),
    ({"lr": [0.1, 0.1]}, "tune.lr", "each learning rate once"),
    ({"seeds": 1}, "tune.seeds", ">= 2"),
    ({"extend": 9}, "tune.extend", "at most 8"),
    ({"rate": 0.1}, "tune.rate", "allowed fields: lr, seeds, extend"),
    ([0.1, 0.2], "tune", "expected a mapping"),
])
def test_bad_tune_sections_name_the_field(tune, field, words):
    with pytest.raises(ConfigError) as err:
        validate_setting(tiny(tune))
    assert any(e.startswith(f"{field}:") and words in e for e in err.value.errors), err.value.errors


def test_a_bare_tune_section_takes_the_default_grid_around_the_rate_as_written():
    setting = validate_setting(tiny({}, lr=0.1))
    assert setting.tune.lr == (0.05, 0.1, 0.2, 0.4, 0.8) and setting.tune.seeds == 3
    assert setting.to_dict()["tune"] == {"lr": [0.05, 0.1, 0.2, 0.4, 0.8], "seeds": 3, "extend": 2}
    assert "tune" not in validate_setting(tiny(None)).to_dict()  # absent stays absent: older records unchanged


@pytest.mark.slow
def test_the_tuning_trains_none_and_kd_at_every_rate_chooses_the_best_mean_and_is_cached(monkeypatch):
    calls = counting_runs(monkeypatch)
    setting = validate_setting(tiny({**TUNE, "lr": [0.1, 0.4]}))  # budget.lr 0.05 is measured too
    tuning = tune_recipe(setting)
    assert sorted({lr for lr, _, _ in calls}) == [0.05, 0.1, 0.4] == tuning.grid
    assert len(calls) == 3 * 2 * 2 and {kd for _, kd, _ in calls} == {False, True}
    assert {seed for _, _, seed in calls} == {0, 1} and tuning.seeds == [0, 1]
    assert tuning.lr == max(tuning.grid, key=tuning.score) and tuning.baseline == 0.05
    for lr in tuning.grid:  # the score is the mean of both curves
        assert tuning.score(lr) == pytest.approx((tuning.mean("none", lr) + tuning.mean("kd", lr)) / 2)
    tuned_setting, again = resolve_recipe(setting)
    assert len(calls) == 12 and again.record() == tuning.record()  # read from the cache
    assert tuned_setting.budget.lr == tuning.lr and tuned_setting.tune is None
    other = validate_setting(tiny({**TUNE, "lr": [0.1, 0.4]}, epochs=1))  # another budget: tuned again
    tune_recipe(other)
    assert len(calls) == 24


def test_the_grid_extends_past_the_edge_the_best_rate_lands_on(monkeypatch):
    calls = counting_runs(monkeypatch)
    scores = {0.05: 0.1, 0.1: 0.2, 0.2: 0.3, 0.4: 0.4, 0.8: 0.35}  # best at the top edge, then past it
    monkeypatch.setattr(tuning_module, "run_trial", lambda s, c, **k: calls.append(s.budget.lr) or
                        RunResult(k["seed"], scores[s.budget.lr] + 0.01 * k["seed"]))
    tuning = tune_recipe(validate_setting(tiny({"lr": [0.05, 0.1, 0.2], "seeds": 2, "extend": 3})))
    assert tuning.grid == [0.05, 0.1, 0.2, 0.4, 0.8] and tuning.lr == 0.4  # 0.4 is inside now: no third point


def synthetic(ce, kd, teacher=0.9, lr=0.1):
    return Tuning("k", 0.05, lr, [0, 1, 2], {"none": {"0.05": [0.5, 0.5, 0.5], repr(lr): ce},
                                              "kd": {"0.05": [0.5, 0.5, 0.5], repr(lr): kd}}, teacher)


def test_the_headroom_says_whether_the_pair_leaves_distillation_room_and_why():
    room = synthetic([0.80, 0.81, 0.79], [0.85, 0.86, 0.84]).headroom()
    assert room["outcome"] == "room" and room["difference"] == pytest.approx(0.05) and room["in_sds"] > 2
    assert "tuned KD beats tuned CE by" in room["why"]
    close = synthetic([0.895, 0.90, 0.905], [0.90, 0.89, 0.90], teacher=0.905).headroom()
    assert close["outcome"] == "little room" and "within 0.50 points of its teacher" in close["why"]
    weak = synthetic([0.80, 0.81, 0.79], [0.80, 0.80, 0.81], teacher=0.75).headroom()
    assert "beats its teacher by 5.00 points: the teacher is too weak" in weak["why"]
    stuck = synthetic([0.80, 0.81, 0.79], [0.80, 0.82, 0.79], teacher=0.9).headroom()
    assert "the teacher leads the tuned CE student by 10.00 points, but KD at this budget does not" in stuck["why"]
    line = headroom_line(synthetic([0.80, 0.81, 0.79], [0.85, 0.86, 0.84]))
    assert line.startswith("tuned recipe: budget.lr 0.1 (was 0.05; CE alone +30.00 points)")
    assert "+5.00 points" in line and "room for distillation" in line
    assert "little room" in headroom_line(synthetic([0.80, 0.81, 0.79], [0.80, 0.80, 0.81], teacher=0.75))


def test_a_fixed_rate_far_below_a_cached_tuning_is_warned_about_naming_the_field(monkeypatch, caplog, capsys,
                                                                                tmp_path):
    scores = {0.025: 0.3, 0.05: 0.4, 0.1: 0.5, 0.2: 0.6, 0.4: 0.7, 0.8: 0.6}
    monkeypatch.setattr(tuning_module, "run_trial", lambda s, c, **k: RunResult(k["seed"], scores[s.budget.lr]))
    setting = validate_setting(tiny(None))
    with caplog.at_level(logging.WARNING, logger="relkd"):
        assert resolve_recipe(setting) == (setting, None)  # nothing cached: nothing to say
    assert not caplog.records
    path = tmp_path / "s.yaml"
    path.write_text(yaml_dump(tiny(None)))
    assert main(["tune", "--setting", str(path), "--quiet"]) == 0  # the default tuning, cached
    out = capsys.readouterr().out
    assert "<- tuned" in out and "(as written)" in out and "tuned recipe: budget.lr 0.4 (was 0.05" in out
    with caplog.at_level(logging.WARNING, logger="relkd"):
        resolve_recipe(setting)
    assert "budget.lr: 0.05 leaves CE alone 30.00 points below the tuned rate 0.4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="relkd"):
        resolve_recipe(validate_setting(tiny(None, lr=0.4)))  # the tuned rate itself: no warning
    assert "leaves CE alone" not in caplog.text


def study_doc(**optuna_section):
    doc = tiny()
    doc["search"] = {"tap": ["last_stage", "pool"], "terms": {"low": 0, "high": 1}}
    doc["optuna"] = {"sampler": {"name": "random"}, "anchors": ["none", "kd"], "n_trials": 3, **optuna_section}
    return doc


@pytest.mark.slow
def test_a_study_tunes_first_records_the_recipe_and_every_trial_trains_at_it(monkeypatch, capsys):
    import relkd.study.trial as trial_module

    rates, real = [], trial_module.run_trial
    monkeypatch.setattr(trial_module, "run_trial", lambda s, *a, **k: rates.append(s.budget.lr) or real(s, *a, **k))
    result = write_outputs(run_study(validate_study(study_doc()), progress=False))
    tuning = result.tuning
    assert tuning is not None and study_document(result.study, RECIPE_ATTR) == tuning.record()
    assert rates and set(rates) == {tuning.lr}
    assert study_setting(result.study).budget.lr == tuning.lr
    status = study_status(result.study)
    assert status["recipe"]["lr"] == tuning.lr and status["recipe"]["line"] == headroom_line(tuning)
    assert "recipe" in [p.stem for p in result.plots]  # the tuning curve
    page = render_report(result.study, result.storage)
    assert html.escape(headroom_line(tuning)) in page and '<img alt="recipe"' in page
    # resuming (another worker too) trains at the recorded rate and does not tune again
    monkeypatch.setattr(tuning_module, "tune_recipe", lambda *a, **k: pytest.fail("tuned again"))
    again = run_study(validate_study(study_doc(n_trials=4)), progress=False)
    assert again.tuning.record() == tuning.record() and set(rates) == {tuning.lr}
    study, _ = load_relkd_study("tiny", None)
    assert main(["study", "status", "--study-name", "tiny"]) == 0
    assert "tuned recipe: budget.lr" in capsys.readouterr().out
    assert study.user_attrs[RECIPE_ATTR]["lr"] == tuning.lr


@pytest.mark.slow
def test_train_runs_at_the_tuned_rate(tmp_path, capsys, monkeypatch):
    import relkd.engine.runs as runs_module

    rates, real = [], runs_module.run_trial
    monkeypatch.setattr(runs_module, "run_trial", lambda s, *a, **k: rates.append(s.budget.lr) or real(s, *a, **k))
    path = tmp_path / "s.yaml"
    path.write_text(yaml_dump(tiny()))
    assert main(["train", "--setting", str(path), "--config", "kd", "--seeds", "0", "--quiet"]) == 0
    tuning = tune_recipe(validate_setting(tiny()))  # cached by now
    assert rates == [tuning.lr]


def test_the_headroom_benchmark_picks_a_kd_setting_on_the_tuning_seeds_and_measures_it_on_fresh_ones(monkeypatch):
    """benchmarks/headroom.py --kd-settings: a setting that is lucky on the picking seeds is
    picked, but the comparison with CE alone uses only seeds it was not picked on."""
    import relkd.engine
    bench = load_benchmark("headroom")
    lucky = bench.KD_SETTINGS[2]
    calls = []

    def run(setting, config, *, seed, teacher, every_epoch):
        kd = config.get("kd")
        key = None if kd is None else (config["ce_weight"], kd["weight"], kd["temperature"])
        calls.append((setting.budget.lr, key, seed))
        if key == lucky:  # best on seeds 0-2, no better than CE on fresh seeds
            return RunResult(seed, 0.9 if seed < 3 else 0.70 + 0.01 * seed)
        return RunResult(seed, 0.70 + 0.01 * seed if key is None else 0.6 + 0.001 * seed)

    monkeypatch.setattr(relkd.engine, "run_trial", run)
    setting = validate_setting(tiny())
    result = bench.kd_settings(setting, synthetic([0.8, 0.8, 0.8], [0.8, 0.8, 0.8], lr=0.2), teacher=None)
    assert tuple(result["best"]) == lucky
    assert result["picked_on"] == [0, 1, 2] and result["fresh_seeds"] == [3, 4, 5]
    assert result["kd"] == pytest.approx([0.73, 0.74, 0.75]) and result["ce"] == pytest.approx([0.73, 0.74, 0.75])
    assert result["difference"] == pytest.approx(0.0) and result["in_sds"] == pytest.approx(0.0)
    assert {lr for lr, _, _ in calls} == {0.2}  # everything at the tuned rate
    assert sorted(seed for _, key, seed in calls if key is None) == [3, 4, 5]  # CE only on fresh seeds
    assert len(calls) == 3 * len(bench.KD_SETTINGS) + 3 + 3


def load_benchmark(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_recipe_check_trains_half_and_twice_the_tuned_rate_on_fresh_seeds_and_flags_a_gain(monkeypatch):
    """benchmarks/recipe_check.py: none and kd at ½, 1 and 2 times the tuned rate, on seeds the
    tuning did not choose on; a neighbour more than a point better means the tuning missed."""
    bench = load_benchmark("recipe_check")
    calls = []
    accuracy = {"none": {0.1: 0.80, 0.2: 0.82, 0.4: 0.81}, "kd": {0.1: 0.80, 0.2: 0.83, 0.4: 0.845}}

    def run(setting, config, *, seed, teacher, every_epoch):
        calls.append((config, setting.budget.lr, seed))
        return RunResult(seed, accuracy[config][setting.budget.lr] + 0.001 * seed)

    monkeypatch.setattr(bench, "run_trial", run)
    monkeypatch.setattr(bench, "get_teacher", lambda setting, progress: None)
    monkeypatch.setattr(bench, "tune_recipe", lambda setting, teacher: synthetic([0.8] * 3, [0.8] * 3, lr=0.2))
    setting = validate_setting(tiny())
    with pytest.raises(SystemExit, match=r"--seeds: \[2\] chose the rate"):
        bench.check(setting, [2, 3, 4])
    result = bench.check(setting, [3, 4, 5])
    assert {(lr, seed) for _, lr, seed in calls} == {(lr, s) for lr in (0.1, 0.2, 0.4) for s in (3, 4, 5)}
    gains = {(r["config"], r["neighbour"]): r["gain"] for r in result["rows"]}
    assert gains[("none", "twice")] == pytest.approx(-0.01) and gains[("kd", "half")] == pytest.approx(-0.03)
    assert gains[("kd", "twice")] == pytest.approx(0.015) and not result["passed"]  # 1.5 points: the tuning missed
    accuracy["kd"][0.4] = 0.835
    assert bench.check(setting, [3, 4, 5])["passed"]  # half a point: within
