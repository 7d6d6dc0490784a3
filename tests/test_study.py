"""The Optuna study driver on the synthetic dataset with tiny models (seconds per study).

Tests with worker processes wait on states of the study (a trial held in the middle by
tests/held_worker.py), never on a trial lasting long enough. To check them on a busy machine, both
cores kept busy, ten runs in a row (bash, in the repository root)::

    for i in 1 2; do (while :; do :; done) & done; busy=$(jobs -p)
    for run in $(seq 10); do start=$SECONDS
      .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_distributed.py tests/test_study.py \
        -k "worker or signal or timeout or lock or race or kill or heartbeat or two or together or interrupt" | tail -2
      echo "pass $run: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s"; done; kill $busy

The ``-k`` selection is every test that starts worker processes, sends signals, locks or
times out (13 tests): the ones that could depend on the machine's speed; the whole two
files take about 25 minutes a pass on a loaded 2-core machine. Measured on 2026-12-05 with
the load of a concurrent full-suite run and a training benchmark instead of the two busy
loops (load average 4.5-5.5 on 2 cores): 10 passes of 10, 13 passed each, 186-274 s a pass.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import relkd
from relkd.cli import main
from relkd.fields import ConfigError, yaml_dump
from relkd.presets import preset
from relkd.study import (
    DEFAULT_ANCHORS,
    confirm_study,
    counted_trials,
    export_trials,
    load_relkd_study,
    load_study_spec,
    ranked_trials,
    redact,
    run_study,
    study_status,
    trial_counts,
    validate_study,
)
from relkd.study import trial as trial_module
from relkd.study import worker as worker_module
from held_worker import hold_env
from tiny import HELD_RELKD, TINY_SETTING, interrupt_on_call, stop, wait_for_held_trial

ROOT = Path(__file__).resolve().parents[1]
STUDY = {
    **TINY_SETTING,
    "search": {"tap": ["last_stage", "pool"]},
    "optuna": {"n_trials": 14, "sampler": {"name": "tpe", "n_startup_trials": 4}},
}


pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def study_dict(**changes):
    """STUDY with ``section__field=value`` changes (``section=value`` replaces a section)."""
    doc = copy.deepcopy(STUDY)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            doc.setdefault(section, {})[field] = value
        else:
            doc[section] = value
    return doc


def spec(**changes):
    return validate_study(study_dict(**changes))


def anchors_of(study):
    return [t.user_attrs["anchor"] for t in study.trials if "anchor" in t.user_attrs]


def same_config(a, b):
    """Equal objective configs, ignoring term names and provenance."""
    def strip(cfg):
        cfg = relkd.validate_config(cfg)
        cfg.pop("meta", None)
        for term in cfg["terms"]:
            term.pop("name", None)
        return cfg
    return strip(a) == strip(b)


# ----------------------------------------------------------------------------- the space


@pytest.mark.parametrize("name", DEFAULT_ANCHORS)
def test_presets_lie_in_the_default_space_and_replay_exactly(name):
    space = spec().space
    params = space.params_for(preset(name))
    assert params is not None, name
    study = optuna.create_study()
    study.enqueue_trial(params)
    config, problems = space.sample(study.ask())
    assert not problems
    assert same_config(config, preset(name))


def test_params_for_rejects_what_the_space_excludes():
    space = spec(search={"tap": ["pool"], "affinity": ["euclidean", "angle"], "kd": False}).space
    assert space.params_for(preset("sp")) is None          # tap last_stage, affinity dot
    assert space.params_for(preset("rkd+kd")) is None      # KD is off in this space
    assert space.params_for(preset("rkd")) is not None


def test_parameter_names_are_readable_and_draws_are_valid_configs():
    space = spec(search={"terms": 2, "tap": ["pool"], "view": "flatten", "affinity": ["rbf_taylor"], "normalisation": ["none"],
                         "loss": ["smooth_l1"], "kd": True}).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    config, problems = space.sample(trial)
    assert not problems
    assert set(trial.params) == {
        "term0.rbf_taylor.gamma", "term0.rbf_taylor.order", "term0.smooth_l1.beta", "term0.weight",
        "term1.rbf_taylor.gamma", "term1.rbf_taylor.order", "term1.smooth_l1.beta", "term1.weight",
        "kd.temperature", "kd.weight", "ce_weight"}  # fixed choices create no parameter
    assert len(config["terms"]) == 2 and config["kd"] is not None
    relkd.build_objective(config)


def test_invalid_draws_report_the_rule_and_stop_drawing():
    space = spec(search={"terms": 1, "affinity": ["dot"], "normalisation": ["row_sum", "mean"], "loss": ["mse"]}).space
    study = optuna.create_study()
    study.enqueue_trial({"term0.tap": "pool", "term0.view": "flatten", "term0.normalisation": "row_sum"})
    trial = study.ask()
    config, problems = space.sample(trial)
    assert config == {} and "row_sum" in problems[0] and "non-negative" in problems[0]
    assert "term0.weight" not in trial.params and "kd" not in trial.params


@pytest.mark.parametrize(
    "search, expected",
    [
        ({"affinity": ["cosin"]}, "search.affinity[0]: unknown affinity 'cosin'; did you mean 'cosine'"),
        ({"tap": ["pool", "stage9"]}, "search.tap[1]: unknown tap (of both models) 'stage9'"),
        ({"weight": {"low": 10, "high": 1}}, "search.weight: low (10) must not exceed high (1)"),
        ({"weight": {"low": 0, "high": 1, "log": True}}, "search.weight.low: a log range needs low > 0"),
        ({"terms": {"low": 0, "high": 12}}, "search.terms: at most 8 terms"),
        ({"kd": {"enabled": "yes"}}, "search.kd.enabled: expected true, false or [false, true]"),
        ({"losses": "all"}, "search.losses: unknown field; did you mean 'loss'"),
        ({"terms": 1, "affinity": ["dot"], "normalisation": ["row_sum"]}, "no valid affinity x normalisation"),
    ],
)
def test_bad_search_sections_name_the_field(search, expected):
    with pytest.raises(ConfigError) as err:
        validate_study(study_dict(search=search))
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "optuna_section, expected",
    [
        ({"sampler": "tpee"}, "optuna.sampler.name: expected one of tpe, random, grid, bruteforce, gp, nsga2, got 'tpee'"),
        ({"pruner": {"name": "median", "n_startup": 3}}, "optuna.pruner.n_startup: not a parameter of MedianPruner"),
        ({"n_trials": 0}, "optuna.n_trials: expected an integer >= 1"),
        ({"timeout": -5}, "optuna.timeout: expected a finite number > 0"),
        ({"anchors": ["kd", "rdk"]}, "optuna.anchors[1]: unknown preset 'rdk'; did you mean 'rkd'"),
        ({"n_trails": 3}, "optuna.n_trails: unknown field; did you mean 'n_trials'"),
    ],
)
def test_bad_optuna_sections_name_the_field(optuna_section, expected):
    with pytest.raises(ConfigError) as err:
        validate_study(study_dict(optuna=optuna_section))
    assert expected in str(err.value)


def test_setting_and_study_errors_are_reported_together():
    doc = study_dict(budget__lr=-1, optuna={"sampler": "nope"})
    with pytest.raises(ConfigError) as err:
        validate_study(doc)
    assert "budget.lr" in str(err.value) and "optuna.sampler.name" in str(err.value)


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_study_files_validate(path):
    from relkd.fields import read_yaml_file
    from relkd.setting import load_setting

    if "teacher" not in read_yaml_file(path):  # a source setting for relkd pretrain
        assert load_setting(path, teacher_required=False).teacher is None
        return
    s = load_study_spec(path)
    assert s.space.valid_combinations()


def test_factorial_grid_covers_every_valid_combination_once():
    s = load_study_spec(ROOT / "studies" / "factorial_grid.yaml")
    assert s.sampler[0] == "grid"
    assert set(s.space.grid()) == {"term0.affinity", "term0.normalisation", "term0.loss"}
    assert s.space.terms.describe() == 1 and not s.space.weight.searched
    assert len(s.space.valid_combinations()) == sum(
        relkd.is_valid_combination(a, n, l_) for a in relkd.list_affinities() for n in relkd.list_normalisations()
        for l_ in relkd.list_losses())


# ----------------------------------------------------------------------------- running studies


@pytest.mark.slow
def test_tiny_study_end_to_end(isolated):
    result = run_study(spec(), progress=False)
    study = result.study
    assert result.created and len(counted_trials(study)) == 14
    assert (isolated / "runs" / "tiny" / "optuna.db").exists()
    # every anchor is there once, first, and completed (anchors are never pruned)
    assert anchors_of(study) == list(DEFAULT_ANCHORS)
    for t in study.trials[: len(DEFAULT_ANCHORS)]:
        assert t.state == TrialState.COMPLETE and same_config(t.user_attrs["objective_config"],
                                                              preset(t.user_attrs["anchor"]))
    for t in counted_trials(study):
        attrs = t.user_attrs
        relkd.validate_config(attrs["objective_config"])
        assert attrs["seed"] == 0 and attrs["versions"]["relkd"] == relkd.__version__
        assert "ce" in attrs["part_means"] and attrs["wall_seconds"] > 0
        assert len(t.intermediate_values) == attrs["epochs"]
    # plain Optuna reads everything back
    again = optuna.load_study(study_name="tiny", storage=result.storage)
    assert again.best_value == max(t.value for t in again.trials if t.state == TrialState.COMPLETE)
    assert again.user_attrs["relkd.setting"]["student"] == "cnn_tiny"  # the summary optuna-dashboard shows
    whole = again._storage.get_study_system_attrs(again._study_id)["relkd.setting"]  # the setting, whole
    assert whole["student"]["model"] == "cnn_tiny"


@pytest.mark.slow
def test_seeded_sampler_is_reproducible():
    first = run_study(spec(optuna__n_trials=13), progress=False).study
    second = run_study(spec(optuna__n_trials=13, optuna__study_name="again"), progress=False).study
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]


@pytest.mark.slow
def test_resume_keeps_completed_trials_and_does_not_reenqueue_anchors(monkeypatch):
    first = run_study(spec(optuna__n_trials=11), progress=False)
    before = [(t.number, t.state, t.value, t.params) for t in first.study.trials]
    second = run_study(spec(optuna__n_trials=11), progress=False)  # nothing left to do
    assert second.trials_run == 0 and not second.created
    third = run_study(spec(), n_trials=13, progress=False)
    after = [(t.number, t.state, t.value, t.params) for t in third.study.trials]
    assert after[: len(before)] == before
    assert len(counted_trials(third.study)) == 13
    assert anchors_of(third.study) == list(DEFAULT_ANCHORS)


@pytest.mark.slow
def test_interrupted_study_keeps_its_trials_and_resumes(monkeypatch):
    real = trial_module.run_trial
    monkeypatch.setattr(trial_module, "run_trial", interrupt_on_call(real, 4))
    with pytest.raises(KeyboardInterrupt):
        run_study(spec(optuna__anchors=["none", "kd", "sp", "pkt", "cc"], optuna__n_trials=8), progress=False)
    study = load_relkd_study("tiny")[0]
    assert [t.state for t in study.trials[:4]] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    monkeypatch.setattr(trial_module, "run_trial", real)
    result = run_study(spec(optuna__anchors=["none", "kd", "sp", "pkt", "cc"], optuna__n_trials=8), progress=False)
    assert len(counted_trials(result.study)) == 8
    assert [t.value for t in result.study.trials[:3]] == [t.value for t in study.trials[:3]]
    # the interrupted anchor (pkt) ran again on resume
    pkt = [t.state for t in result.study.trials if t.user_attrs.get("anchor") == "pkt"]
    assert pkt == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_changed_setting_is_refused_on_resume_but_the_device_may_differ():
    run_study(spec(optuna__n_trials=10, optuna__anchors=["none"]), progress=False)
    with pytest.raises(ValueError, match=r"budget\.epochs: 2 in the study, 3 in the file"):
        run_study(spec(budget__epochs=3, optuna__anchors=["none"]), progress=False)
    resumed = run_study(spec(device="auto", optuna__anchors=["none"]), n_trials=11, progress=False)
    assert len(counted_trials(resumed.study)) == 11


def test_study_name_override_is_checked_and_stored():
    renamed = spec().renamed("other")
    assert renamed.study_name == "other" and renamed.document["optuna"]["study_name"] == "other"
    with pytest.raises(ValueError, match="^study_name: expected a name without '/'"):  # the CLI says --study-name
        spec().renamed("../x")


@pytest.mark.slow
def test_median_pruner_prunes_a_deliberately_bad_trial():
    s = spec(search={"terms": 0, "kd": False, "ce_weight": {"low": 1e-4, "high": 1.0, "log": True}},
             optuna={"anchors": ["none"], "n_trials": 3,
                     "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}},
             budget__epochs=4)
    from relkd.study import open_study

    study, _, _ = open_study(s)
    study.enqueue_trial({"ce_weight": 1.0})
    study.enqueue_trial({"ce_weight": 1e-4})  # a learning rate of 5e-6 in effect: learns nothing
    run_study(s, progress=False)
    bad = study.trials[2]
    assert bad.params["ce_weight"] == pytest.approx(1e-4)
    assert bad.state == TrialState.PRUNED
    assert "median pruner after epoch 1" in bad.user_attrs["pruned_reason"]
    assert len(bad.intermediate_values) == 1


@pytest.mark.slow
def test_non_finite_loss_prunes_with_reason_and_errors_fail_with_message(monkeypatch):
    s = spec(search={"terms": 0, "kd": False, "ce_weight": {"low": 0.1, "high": 1.0, "log": True}},
             optuna={"anchors": ["none"], "n_trials": 3})
    from relkd.study import open_study

    study, _, _ = open_study(s)
    study.enqueue_trial({"ce_weight": 0.3})  # its CE is made to overflow, as a diverging run's would
    study.enqueue_trial({"ce_weight": 0.5})
    study.enqueue_trial({"ce_weight": 0.7})
    real, real_ce = trial_module.run_trial, torch.nn.functional.cross_entropy

    def failing_once(setting, objective, *args, **kwargs):  # the trial passes its built objective
        if objective.ce_weight == 0.5:
            raise RuntimeError("CUDA out of memory (simulated)")
        if objective.ce_weight == 0.3:
            with monkeypatch.context() as m:
                m.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real_ce(*a, **k) * float("inf"))
                return real(setting, objective, *args, **kwargs)
        return real(setting, objective, *args, **kwargs)

    monkeypatch.setattr(trial_module, "run_trial", failing_once)
    run_study(s, progress=False)
    nan_trial, failed, fine = study.trials[1], study.trials[2], study.trials[3]
    assert nan_trial.state == TrialState.PRUNED and "non-finite loss" in nan_trial.user_attrs["pruned_reason"]
    assert "part 'ce'" in nan_trial.user_attrs["pruned_reason"]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert fine.state == TrialState.COMPLETE  # the study went on
    assert len(counted_trials(study)) == 3


@pytest.mark.slow
def test_out_of_memory_prunes_with_reason_and_does_not_stop_the_study(monkeypatch):
    """A composition too big for the device (angle over a flattened map, say) is pruned with
    the reason, its memory given back; six in a row do not stop the study the way five
    failures in a row would."""
    real, freed = trial_module.run_trial, []
    monkeypatch.setattr(trial_module, "free_device_memory", lambda: freed.append(True))

    def big(setting, objective, *args, **kwargs):
        if objective.terms:  # every searched draw here has a term; the anchor 'none' has none
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(setting, objective, *args, **kwargs)

    monkeypatch.setattr(trial_module, "run_trial", big)
    result = run_study(spec(search={"terms": 1, "tap": ["pool"]}, optuna={"anchors": ["none"], "n_trials": 7}),
                       progress=False)
    searched = [t for t in counted_trials(result.study) if "anchor" not in t.user_attrs]  # invalid draws left out
    assert result.error is None and len(searched) == 6 and len(freed) == 6
    assert all(t.state == TrialState.PRUNED for t in searched)
    assert all(t.user_attrs["pruned_reason"].startswith("out of device memory (CUDA out of memory. Tried to allocate "
                                                        "2.00 GiB (simulated)); pruned, not failed") for t in searched)


@pytest.mark.slow
def test_invalid_draws_never_train_and_do_not_count(monkeypatch):
    trained = []
    real = trial_module.run_trial
    monkeypatch.setattr(trial_module, "run_trial", lambda s, c, *a, **k: trained.append(c) or real(s, c, *a, **k))
    s = spec(search={"terms": 1, "tap": ["pool"], "view": ["flatten"], "affinity": ["dot", "euclidean"],
                     "normalisation": ["row_sum", "mean"], "loss": ["mse"], "kd": False},
             optuna={"anchors": [], "n_trials": 6, "sampler": "random"})
    from relkd.study import open_study

    open_study(s)[0].enqueue_trial({"term0.affinity": "dot", "term0.normalisation": "row_sum"})
    study = run_study(s, progress=False).study
    counts = trial_counts(study)
    assert counts["invalid_draws"] > 0
    assert len(trained) == 6 == len(counted_trials(study))
    for t in study.trials:
        if "invalid_combination" in t.user_attrs:
            assert t.params["term0.affinity"] == "dot" and t.params["term0.normalisation"] == "row_sum"
            assert t.state == TrialState.PRUNED and not t.intermediate_values


@pytest.mark.slow
def test_grid_runs_each_valid_combination_once_beside_the_anchors():
    s = spec(search={"terms": 1, "tap": "pool", "view": "flatten", "affinity": ["dot", "euclidean"],
                     "normalisation": ["row_sum", "mean"], "loss": ["mse", "l1"], "component_params": "default",
                     "weight": 10.0, "kd": False, "ce_weight": 1.0},
             optuna={"anchors": ["none", "kd", "sp"], "n_trials": None, "sampler": "grid"})
    result = run_study(s, progress=False)
    search = [t for t in counted_trials(result.study) if "anchor" not in t.user_attrs]
    done = [(t.params["term0.affinity"], t.params["term0.normalisation"], t.params["term0.loss"]) for t in search]
    assert sorted(done) == sorted(s.space.valid_combinations()) and len(done) == 6
    assert sorted(anchors_of(result.study)) == ["kd", "none", "sp"]
    assert trial_counts(result.study)["invalid_draws"] == 2
    assert result.stopped_because == "every cell of the grid has been run"


@pytest.mark.parametrize(
    "search, expected",
    [
        ({"terms": {"low": 1, "high": 2}, "component_params": "default", "weight": 1.0, "ce_weight": 1.0},
         "search.terms: a grid needs a fixed number of terms"),
        ({"terms": 1, "component_params": "default", "ce_weight": 1.0}, "search.weight: a grid needs a fixed value"),
        ({"terms": 1, "weight": 1.0, "ce_weight": 1.0}, "search.component_params: a grid keeps"),
    ],
)
def test_grid_needs_a_discrete_space(search, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_study(study_dict(search=search, optuna={"sampler": "grid"}))


def test_broken_trials_stop_the_study_with_the_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no such device (simulated)")

    monkeypatch.setattr(trial_module, "run_trial", broken)
    result = run_study(spec(optuna__n_trials=20), progress=False)
    assert result.error.startswith("5 trials failed in a row")
    assert "RuntimeError: no such device (simulated)" in result.error
    assert trial_counts(result.study)["fail"] == 5


@pytest.mark.slow
def test_timeout_counts_the_teacher_and_stops_the_run(monkeypatch):
    import time

    real = worker_module.get_teacher

    def slow_teacher(*args, **kwargs):
        time.sleep(0.6)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "get_teacher", slow_teacher)
    result = run_study(spec(optuna__n_trials=None), timeout=0.5, progress=False)
    assert result.stopped_because == "timeout of 0.5 s"
    assert counted_trials(result.study) == []


# ----------------------------------------------------------------------------- status, export, confirm


@pytest.fixture
def finished(isolated):
    return run_study(spec(optuna__n_trials=12), progress=False)


@pytest.mark.slow
def test_status_reports_counts_best_and_eta(finished):
    status = study_status(finished.study)
    assert status["finished"] == 12 and status["n_trials"] == 12 and status["eta_seconds"] == 0
    assert status["best"]["value"] == ranked_trials(finished.study)[0].value
    assert set(status["anchors"]) == set(DEFAULT_ANCHORS)


@pytest.mark.slow
def test_export_round_trip_and_retrain(finished, tmp_path, capsys):
    best = ranked_trials(finished.study)[0]
    [path] = export_trials(finished.study, finished.storage, tmp_path / "best.yaml")
    loaded = relkd.load_config(path)
    assert same_config(loaded, best.user_attrs["objective_config"])
    meta = loaded["meta"]
    assert meta["study"] == "tiny" and meta["trial"] == best.number and meta["value"] == best.value
    assert meta["student"] == "cnn_tiny" and meta["budget"]["epochs"] == 2 and meta["relkd_version"]
    objective = relkd.build_objective(relkd.load_config(path))  # anyone's training loop
    assert objective.to_config()["terms"] == relkd.validate_config(best.user_attrs["objective_config"])["terms"]
    setting_file = tmp_path / "study.yaml"
    setting_file.write_text(yaml_dump(STUDY))
    assert main(["train", "--setting", str(setting_file), "--config", str(path), "--quiet", "--json"]) == 0
    retrained = json.loads(capsys.readouterr().out)
    assert retrained["val_accuracy"] == pytest.approx(best.value)  # same seed, same budget: same student


@pytest.mark.slow
def test_export_top_k_and_trial(finished, tmp_path):
    paths = export_trials(finished.study, finished.storage, tmp_path / "top.yaml", top_k=3)
    assert [p.name for p in paths] == ["top_rank1.yaml", "top_rank2.yaml", "top_rank3.yaml"]
    values = [relkd.load_config(p)["meta"]["value"] for p in paths]
    assert values == sorted(values, reverse=True)
    pruned = [t.number for t in finished.study.trials if t.state != TrialState.COMPLETE]
    if pruned:
        with pytest.raises(ValueError, match="not complete"):
            export_trials(finished.study, finished.storage, tmp_path / "x.yaml", trial=pruned[0])
    with pytest.raises(ValueError, match="has no trial 999"):
        export_trials(finished.study, finished.storage, tmp_path / "x.yaml", trial=999)


@pytest.mark.slow
def test_confirm_trains_top_k_and_anchors_on_test_and_resumes(finished, tmp_path, monkeypatch):
    table = confirm_study(finished.study, top_k=1, seeds=[0, 1], epochs=1, out_dir=tmp_path / "confirm")
    labels = [r["label"] for r in table["rows"]]
    assert "anchor none" in labels and "anchor kd" in labels
    assert any(label.startswith("trial ") for label in labels)
    assert table["best_preset"] in DEFAULT_ANCHORS and f"anchor {table['best_preset']}" in labels
    for row in table["rows"]:
        assert row["seeds"] == 2 and 0 <= row["test_mean"] <= 1
        assert row["p_vs_kd"] is None or 0 <= row["p_vs_kd"] <= 1
    assert (tmp_path / "confirm" / "confirm.md").read_text().count("| anchor ") >= 2
    assert finished.study.user_attrs["relkd.confirm"]["epochs"] == 1
    # a second confirm reuses every finished run
    monkeypatch.setattr("relkd.study.confirm.run_trial", lambda *a, **k: pytest.fail("retrained"))
    again = confirm_study(finished.study, top_k=1, seeds=[0, 1], epochs=1, out_dir=tmp_path / "confirm")
    assert again["rows"] == table["rows"]


def test_welch_p_matches_scipy_and_handles_degenerate_cases():
    from scipy import stats

    from relkd.study import welch_p

    a, b = [0.80, 0.82, 0.81], [0.78, 0.79, 0.77]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([0.8], b) is None and welch_p([0.8, 0.8], [0.8, 0.8]) is None


# ----------------------------------------------------------------------------- storage, CLI, workers


def test_redact_hides_passwords():
    assert redact("postgresql+psycopg://alice:s3cr3t@db:5432/relkd") == "postgresql+psycopg://alice:***@db:5432/relkd"
    assert redact("sqlite:///runs/x/optuna.db") == "sqlite:///runs/x/optuna.db"
    assert redact("postgresql://u:pa/ss@h/db") == "postgresql://u:***@h/db"  # SQLAlchemy reads 'pa/ss'
    assert redact("url postgresql://h:5432/db, mail a@b") == "url postgresql://h:5432/db, mail a@b"
    assert redact("postgresql://h/db?user=u&password=s3cr3t&sslmode=require") == \
        "postgresql://h/db?user=u&password=***&sslmode=require"
    assert redact("host=h password=s3cr3t dbname=x") == "host=h password=*** dbname=x"


@pytest.mark.slow
def test_journal_storage_works(tmp_path):
    result = run_study(spec(optuna__n_trials=10, optuna__anchors=["none"]), storage=f"journal:{tmp_path}/j.log",
                       progress=False)
    assert len(counted_trials(result.study)) == 10 and (tmp_path / "j.log").exists()


def write_study(tmp_path, **changes) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml_dump(study_dict(**changes)))
    return path


@pytest.mark.slow
def test_cli_run_status_export(tmp_path, capsys):
    path = write_study(tmp_path, optuna__n_trials=11)
    assert main(["study", "run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best composition:" in out and "exported config:" in out and "plots:" in out
    assert (tmp_path / "runs" / "tiny" / "best.yaml").exists()
    assert (tmp_path / "runs" / "tiny" / "plots" / "history.png").stat().st_size > 5000
    assert main(["study", "status", "--study-name", "tiny", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["finished"] == 11
    assert main(["study", "export", "--study-name", "tiny", "--out", str(tmp_path / "b.yaml")]) == 0
    assert relkd.load_config(tmp_path / "b.yaml")["meta"]["study"] == "tiny"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["study", "status", "--study-name", "nope"], "no study 'nope'"),
        (["study", "run", "missing.yaml"], "missing.yaml"),
        (["study", "export", "--study-name", "tiny", "--out", "x.yaml", "--top-k", "0"], "--top-k: expected"),
        (["study", "worker", "STUDY"], "give the shared storage with --storage"),
        (["study", "confirm", "--study-name", "tiny", "--seeds", "0,0,1"], "--seeds: expected each seed once"),
    ],
)
def test_cli_errors_are_clear(tmp_path, capsys, argv, expected):
    argv = [str(write_study(tmp_path)) if a == "STUDY" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse rejects bad flag values itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_cli_bad_study_file_names_the_field(tmp_path, capsys):
    path = write_study(tmp_path, search={"affinity": ["cosin"]})
    assert main(["study", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "search.affinity[0]: unknown affinity 'cosin'; did you mean 'cosine'" in err


@pytest.mark.slow
def test_two_workers_together_stop_at_n_trials(tmp_path):
    path = write_study(tmp_path, optuna__n_trials=16)
    storage = f"sqlite:///{tmp_path}/shared.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "relkd.cli", "study", "worker", str(path), "--storage", storage, "--quiet"]
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        out, err = w.communicate(timeout=900)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(counted_trials(study)) == 16
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert sorted(anchors_of(study)) == sorted(DEFAULT_ANCHORS)  # enqueued once, by the worker that created it
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
@pytest.mark.needs("optuna-cli")
def test_optuna_cli_reads_a_relkd_study(finished):
    optuna_cli = Path(sys.executable).with_name("optuna")
    out = subprocess.run([str(optuna_cli), "best-trial", "--study-name", "tiny", "--storage", finished.storage,
                          "-f", "json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["value"] == {"val_accuracy": pytest.approx(finished.study.best_value)}  # named


@pytest.mark.slow
def test_a_worker_that_loses_a_race_for_an_enqueued_trial_goes_on(monkeypatch):
    """SQLite has no row locks: two workers can run the same enqueued trial, and the slower
    one's tell fails. That worker must carry on, not stop."""
    from relkd.study.storage import is_lost_race

    real = optuna.Study.optimize
    calls = {"n": 0}

    def racing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("Cannot tell a COMPLETE trial.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "optimize", racing)
    result = run_study(spec(optuna__n_trials=10, optuna__anchors=["none"]), progress=False)
    assert calls["n"] == 2 and len(counted_trials(result.study)) == 10
    assert is_lost_race(ValueError("Cannot tell a FAIL trial.")) and not is_lost_race(ValueError("other"))


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signalled_worker_marks_its_trial_and_the_study_resumes(tmp_path, signal_name):
    import signal

    few = {"optuna__anchors": ["none", "kd", "sp"], "optuna__n_trials": 4}
    path = write_study(tmp_path, **few)
    storage = f"sqlite:///{tmp_path}/s.db"
    cmd = [*HELD_RELKD, "study", "worker", str(path), "--storage", storage, "--quiet"]
    # As if started from a terminal: a shell's background jobs (and so perhaps this test run)
    # inherit SIGINT ignored, and Python then never turns SIGINT into KeyboardInterrupt.
    # kd's trial holds after its first epoch (tests/held_worker.py), so the signal lands inside it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **hold_env("kd", tmp_path / "hold")},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        running = wait_for_held_trial("tiny", storage, proc, "kd").number
        proc.send_signal(getattr(signal, signal_name))
        _, err = proc.communicate(timeout=120)
    finally:
        stop([proc])
    (tmp_path / "hold").unlink()
    assert proc.returncode == 130, err
    assert "relkd: interrupted" in err and "Traceback" not in err
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = study.trials[running]
    assert interrupted.state == TrialState.FAIL  # the trial it was training
    assert interrupted.user_attrs["anchor"] == "kd"  # an anchor is not lost: it waits for the next worker
    assert [t for t in study.trials if t.state == TrialState.WAITING and t.user_attrs.get("anchor") == "kd"]
    # resumed as `relkd study worker` does, which enqueues no anchor itself
    result = run_study(validate_study(study_dict(**few)), storage=storage, progress=False,
                       enqueue_missing_anchors=False)
    assert len(counted_trials(result.study)) == 4
    assert {"none", "kd", "sp"} <= {t.user_attrs.get("anchor") for t in counted_trials(result.study)}


def test_a_missing_init_file_stops_the_study_before_any_trial(tmp_path, capsys):
    doc = study_dict(optuna__n_trials=3)
    doc["student"] = {**doc["student"], "init": str(tmp_path / "missing.pt")}
    path = tmp_path / "study.yaml"
    path.write_text(yaml_dump(doc))
    assert main(["study", "run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "student.init" in err and "relkd pretrain" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny" / "optuna.db").exists()  # refused before the study was created


@pytest.mark.slow
def test_workers_may_keep_the_init_file_elsewhere_but_not_change_it(tmp_path):
    """Resuming compares the student's init checkpoint by content, not by where it lies."""
    import shutil

    import torch

    from relkd.models import create_model

    def init_from(seed, name):
        torch.manual_seed(seed)
        path = tmp_path / name
        torch.save(create_model("cnn_tiny", num_classes=10, in_channels=1, width=4).state_dict(), path)
        return path

    def transfer_spec(path):
        doc = study_dict(optuna__anchors=["none"])
        doc["student"] = {**doc["student"], "init": str(path)}
        return validate_study(doc)

    a = init_from(0, "a.pt")
    first = run_study(transfer_spec(a), n_trials=1, progress=False)
    assert first.study.user_attrs["relkd.inits"]["student.init"]
    assert counted_trials(first.study)[0].user_attrs["init_sha256"] == first.study.user_attrs["relkd.inits"][
        "student.init"]
    elsewhere = tmp_path / "other" / "a.pt"
    elsewhere.parent.mkdir()
    shutil.copy(a, elsewhere)
    assert len(counted_trials(run_study(transfer_spec(elsewhere), n_trials=2, progress=False).study)) == 2
    with pytest.raises(ValueError, match=r"student\.init: checkpoint sha256 \w+ in the study, \w+ here"):
        run_study(transfer_spec(init_from(1, "b.pt")), n_trials=3, progress=False)
