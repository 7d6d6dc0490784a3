"""Workers that train populations (relkd.study.population): K trials asked at once, trained
together, told one by one; everything a single trial does (anchors, invalid draws, pruning
and the ladder, n_trials, failures, interrupts, heartbeats and retries) still holds."""
import dataclasses
import copy
import json
import signal
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from relkd.cli import main
from relkd.engine import calibrate
from relkd.fields import ConfigError, yaml_dump
from relkd.analysis import write_outputs
from relkd.study import counted_trials, open_study, run_study, validate_study
from relkd.study import population as population_module
from relkd.study import trial as trial_module
from tiny import TINY_SETTING, interrupt_on_call, peek_study

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

SLOW_DATA = {**TINY_SETTING["data"], "params": {"train_size": 1500, "test_size": 60}}


def study_doc(**optuna_section):
    doc = copy.deepcopy(TINY_SETTING)
    doc["search"] = {"tap": ["last_stage", "pool"]}
    doc["optuna"] = {"sampler": {"name": "tpe", "n_startup_trials": 4}, "anchors": ["none", "kd", "sp"],
                     **optuna_section}
    return doc


def sizes_trained(monkeypatch):
    """The sizes of the populations trained, in order (run_population is still called)."""
    sizes, real = [], population_module.run_population

    def spy(setting, configs, **kwargs):
        sizes.append(len(configs))
        return real(setting, configs, **kwargs)

    monkeypatch.setattr(population_module, "run_population", spy)
    return sizes


@pytest.mark.slow
def test_a_population_study_counts_every_member_as_its_own_trial(tmp_path, monkeypatch):
    sizes = sizes_trained(monkeypatch)
    result = write_outputs(run_study(validate_study(study_doc(n_trials=7, pruner="none")), progress=False,
                                     population=3))
    study = result.study
    assert result.population == 3 and result.error is None
    assert sizes == [3, 3, 1]  # n_trials: the last population asks only for the room left
    counted = counted_trials(study)
    assert len(counted) == 7 and all(t.state == TrialState.COMPLETE for t in counted)
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)]
    assert sorted(t.user_attrs["anchor"] for t in counted if "anchor" in t.user_attrs) == ["kd", "none", "sp"]
    for t in counted:  # each member reported its own epochs and carries the attributes of a single trial
        assert sorted(t.intermediate_values) == [1, 2] and t.value == t.intermediate_values[2]
        assert t.user_attrs["population"] in (3, 1) and t.user_attrs["val_history"] == [t.intermediate_values[1],
                                                                                         t.value]
        assert {"objective_config", "seed", "worker", "versions", "part_means"} <= set(t.user_attrs)
    assert result.best_config is not None and result.best_config.is_file()


@pytest.mark.slow
def test_population_members_score_what_they_score_alone(tmp_path):
    """The anchors trained as one population and one by one: the same validation accuracy."""
    doc = study_doc(n_trials=3, anchors=["none", "kd", "sp"])
    together = run_study(validate_study(doc), storage=f"sqlite:///{tmp_path}/k3.db", progress=False, population=3)
    alone = run_study(validate_study(doc), storage=f"sqlite:///{tmp_path}/k1.db", progress=False, population=1)
    values = [{t.user_attrs["anchor"]: t.intermediate_values for t in r.study.trials} for r in (together, alone)]
    assert set(values[0]) == {"none", "kd", "sp"}
    for anchor, history in values[0].items():
        for step, value in history.items():
            assert value == pytest.approx(values[1][anchor][step], abs=1.5 / 60)  # 60 validation samples


@pytest.mark.slow
def test_members_are_pruned_on_their_own_by_the_ladder(tmp_path):
    doc = study_doc(n_trials=12, ladder={"rungs": [1], "reduction": 3, "min_trials": 2})
    doc["budget"]["epochs"] = 3
    study = run_study(validate_study(doc), progress=False, population=4).study
    searched = [t for t in counted_trials(study) if "anchor" not in t.user_attrs]
    stopped = [t for t in searched if t.state == TrialState.PRUNED]
    promoted = [t for t in searched if t.state == TrialState.COMPLETE]
    assert stopped and promoted
    assert all(sorted(t.intermediate_values) == [1] for t in stopped)
    assert all(t.user_attrs["pruned_reason"] == "pruned by the fidelity ladder after epoch 1" for t in stopped)
    assert all(sorted(t.intermediate_values) == [1, 2, 3] for t in promoted)
    assert all(t.state == TrialState.COMPLETE for t in study.trials if "anchor" in t.user_attrs)
    assert len(counted_trials(study)) == 12


@pytest.mark.slow
def test_invalid_draws_are_told_at_once_and_the_population_still_fills(monkeypatch):
    sizes = sizes_trained(monkeypatch)
    doc = study_doc(n_trials=6, anchors=[], sampler="random", pruner="none")
    doc["search"] = {"terms": 1, "tap": ["pool"], "view": ["flatten"], "affinity": ["dot", "euclidean"],
                     "normalisation": ["row_sum", "mean"], "loss": ["mse"], "kd": False}
    spec = validate_study(doc)
    study = open_study(spec)[0]
    for _ in range(2):  # dot affinity with row sums is not a valid combination
        study.enqueue_trial({"term0.affinity": "dot", "term0.normalisation": "row_sum"})
    study = run_study(spec, progress=False, population=3).study
    invalid = [t for t in study.trials if "invalid_combination" in t.user_attrs]
    assert invalid and all(t.state == TrialState.PRUNED and not t.intermediate_values for t in invalid)
    assert sizes == [3, 3] and len(counted_trials(study)) == 6


@pytest.mark.slow
def test_a_population_that_fails_is_split_and_only_the_bad_member_fails(monkeypatch):
    """An error in one member's composition is not blamed on the others: the population is
    trained again in halves, and the member alone fails as a single trial would."""
    real = population_module.run_population

    def fragile(setting, configs, **kwargs):
        if any(c.terms for c in configs):  # of the anchors, sp has a relation term
            raise RuntimeError("shape mismatch in a term (simulated)")
        return real(setting, configs, **kwargs)

    monkeypatch.setattr(population_module, "run_population", fragile)
    doc = study_doc(n_trials=4, anchors=["none", "kd", "sp"], pruner="none")
    result = run_study(validate_study(doc), progress=False, population=4)
    study = result.study
    sp = next(t for t in study.trials if t.user_attrs.get("anchor") == "sp")
    assert sp.state == TrialState.FAIL and sp.user_attrs["error"] == "RuntimeError: shape mismatch in a term " \
                                                                      "(simulated)"
    others = [t for t in study.trials if t.user_attrs.get("anchor") in ("none", "kd")]
    assert [t.state for t in others] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_out_of_memory_in_a_population_splits_it_down_to_what_fits(monkeypatch):
    real, freed = population_module.run_population, []
    monkeypatch.setattr(population_module, "free_device_memory", lambda: freed.append(True))
    monkeypatch.setattr(trial_module, "free_device_memory", lambda: freed.append(True))

    def small_device(setting, configs, **kwargs):
        if len(configs) > 1 or any(c.terms for c in configs):  # only one term-free student fits
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (simulated)")
        return real(setting, configs, **kwargs)

    monkeypatch.setattr(population_module, "run_population", small_device)
    result = run_study(validate_study(study_doc(n_trials=3, pruner="none")), progress=False, population=3)
    states = {t.user_attrs["anchor"]: t for t in result.study.trials}
    assert result.error is None and freed
    assert states["none"].state == states["kd"].state == TrialState.COMPLETE
    assert states["sp"].state == TrialState.PRUNED
    assert states["sp"].user_attrs["pruned_reason"].startswith("out of device memory (CUDA out of memory.")


@pytest.mark.slow
def test_a_non_finite_member_is_pruned_with_its_reason_and_the_others_finish(monkeypatch):
    doc = study_doc(n_trials=2, anchors=["kd", "none"], pruner="none")
    real = population_module.run_population

    def one_diverges(setting, configs, **kwargs):
        summaries = real(setting, configs, **kwargs)
        summaries[0] = dataclasses.replace(summaries[0], stopped="non-finite: kd", stopped_early=True,
                                           error="the kd part became inf at epoch 1, step 3")
        return summaries

    monkeypatch.setattr(population_module, "run_population", one_diverges)
    study = run_study(validate_study(doc), progress=False, population=2).study
    trials = {t.user_attrs["anchor"]: t for t in study.trials}
    assert trials["kd"].state == TrialState.PRUNED  # even an anchor: its loss is no number
    assert trials["kd"].user_attrs["pruned_reason"] == "non-finite loss: the kd part became inf at epoch 1, step 3"
    assert trials["none"].state == TrialState.COMPLETE


@pytest.mark.slow
def test_an_interrupted_population_puts_its_anchors_back(monkeypatch, tmp_path):
    """Ctrl-C in the middle of a population: every member's trial ends failed, the enqueued
    ones (anchors) wait again, and the next run trains them."""
    storage = f"sqlite:///{tmp_path}/i.db"
    real = population_module.run_population

    def interrupted(setting, configs, **kwargs):
        report = kwargs["report"]
        kwargs["report"] = interrupt_on_call(report, 2)  # the second member's first epoch
        return real(setting, configs, **kwargs)

    monkeypatch.setattr(population_module, "run_population", interrupted)
    doc = study_doc(n_trials=3, pruner="none")
    with pytest.raises(KeyboardInterrupt):
        run_study(validate_study(doc), storage=storage, progress=False, population=3)
    study = optuna.load_study(study_name="tiny", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(failed) == 3 and sorted(t.user_attrs["anchor"] for t in waiting) == ["kd", "none", "sp"]
    monkeypatch.setattr(population_module, "run_population", real)
    study = run_study(validate_study(doc), storage=storage, progress=False, population=3).study
    assert sorted(t.user_attrs["anchor"] for t in counted_trials(study)) == ["kd", "none", "sp"]


@pytest.mark.slow
def test_a_grid_study_in_populations_ends_with_its_grid():
    doc = study_doc(sampler="grid", anchors=[], pruner="none")
    doc["search"] = {"terms": 1, "tap": ["pool"], "view": ["avgpool"], "affinity": ["cosine"],
                     "normalisation": ["none"], "loss": ["mse", "l1"], "weight": [1.0], "kd": False,
                     "ce_weight": 1.0}
    result = run_study(validate_study(doc), progress=False, population=4)
    assert result.stopped_because == "every cell of the grid has been run"
    assert len(counted_trials(result.study)) == 2


def test_the_population_field_and_flag_are_checked(capsys):
    for value in (0, -1, 257, "four", 2.5, True):
        with pytest.raises(ConfigError) as err:
            validate_study(study_doc(population=value))
        assert "optuna.population: expected 'auto' or a whole number from 1 to 256" in str(err.value)
    spec = validate_study(study_doc(population=8))
    assert spec.population == 8 and spec.document["optuna"]["population"] == 8
    assert validate_study(study_doc()).population == "auto"
    assert "population" not in validate_study(study_doc()).document["optuna"]  # older documents stay the same
    with pytest.raises(SystemExit) as exit_:
        main(["study", "run", "nosuch.yaml", "--population", "many"])
    assert exit_.value.code == 2
    assert "--population: expected 'auto' or an integer >= 1 and <= 256, got 'many'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_environment_sets_the_population_and_the_flag_beats_it(monkeypatch):
    monkeypatch.setenv("RELKD_POPULATION", "2")
    assert run_study(validate_study(study_doc(n_trials=2, population=4)), progress=False).population == 2
    monkeypatch.setenv("RELKD_POPULATION", "lots")
    with pytest.raises(ValueError, match="RELKD_POPULATION: expected 'auto' or a whole number"):
        run_study(validate_study(study_doc(n_trials=2, study_name="another")), progress=False)


@pytest.mark.slow
def test_auto_measures_once_per_machine_and_caches_the_choice(monkeypatch, tmp_path):
    monkeypatch.delenv("RELKD_POPULATION")
    measured = []

    def fake(setting, device=None):
        measured.append(True)
        return {1: 10.0, 2: 19.0, 4: 30.0, 8: 31.0}

    monkeypatch.setattr(calibrate, "measure_populations", fake)
    first = run_study(validate_study(study_doc(n_trials=2)), progress=False)
    assert first.population == 4 and len(measured) == 1  # 8 is within 5 % of the best: the smaller one
    again = run_study(validate_study(study_doc(n_trials=4)), progress=False)
    assert again.population == 4 and len(measured) == 1
    (file,) = (tmp_path / "cache" / "calibration").glob("population-*.json")
    record = json.loads(file.read_text())
    assert record["population"] == 4 and record["rates"]["8"] == 31.0 and record["student"] == "cnn_tiny"


@pytest.mark.parametrize("rates, chosen", [
    ({1: 10.0, 2: 11.0, 4: 11.4}, 1),          # under the 1.15x a population must gain: noise, not a gain
    ({1: 10.0, 2: 12.0, 4: 20.0, 8: 19.5}, 4),
    ({1: 10.0, 2: 25.0, 4: 25.5, 8: 26.0}, 2),  # within 5 % of the best: the smallest
    ({}, 1),
])
def test_choose_population(rates, chosen):
    assert calibrate.choose_population(rates) == chosen


def test_the_calibration_measures_real_populations():
    from relkd.setting import validate_setting

    rates = calibrate.measure_populations(validate_setting(TINY_SETTING), sizes=(1, 2), steps=2, seconds=0.05)
    assert set(rates) == {1, 2} and all(r > 0 for r in rates.values())


@pytest.mark.slow
def test_a_worker_killed_mid_population_loses_no_member(tmp_path):
    """SIGKILL while a worker trains a population of 3: all three trials are failed by the
    heartbeat and retried by the next worker (same compositions), and the study reaches n_trials."""
    from test_distributed import worker

    doc = study_doc(n_trials=4, pruner="none", heartbeat_interval=1)
    doc["data"] = SLOW_DATA
    doc["budget"]["epochs"] = 4
    path = tmp_path / "pop.yaml"
    path.write_text(yaml_dump(doc))
    storage = f"sqlite:///{tmp_path}/pop.db"
    first = worker(path, storage, "--population", "3")
    deadline = time.monotonic() + 180
    running = []
    while time.monotonic() < deadline and len(running) < 3:
        assert first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.3)
        study = peek_study("tiny", storage)
        running = [] if study is None else [t for t in study.trials if t.state == TrialState.RUNNING
                                            and 1 in t.intermediate_values]
    assert len(running) == 3, "the population did not get through its first epoch in time"
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    second = worker(path, storage, "--population", "3")
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    for dead in running:
        assert study.trials[dead.number].state == TrialState.FAIL
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert retries[0].params == dead.params
        assert retries[0].user_attrs.get("anchor") == dead.user_attrs.get("anchor")
    assert len(counted_trials(study)) == 4
