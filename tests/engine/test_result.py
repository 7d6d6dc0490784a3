"""relkd.engine.result: what a run returns, which of it a trial stores, and the old dict access
kept (with a warning) for one release."""
import dataclasses
import json

import optuna
import pytest
import torch

from relkd.engine import TRIAL_FIELDS, RunResult, run_population, run_trial
from relkd.results.record import TRIAL_ATTRS
from relkd.setting import validate_setting
from relkd.study.queue import Run, RunQueue
from relkd.presets import preset
from tiny import TINY_SETTING

#: What run_trial's metrics held, in this order, when they were a dict: metrics.json keeps it (and adds curves).
RUN_TRIAL_KEYS = ["seed", "val_accuracy", "val_history", "epochs", "stopped_early", "part_means", "train_seconds",
                  "samples_per_second", "student_params", "student_macs", "wall_seconds"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))


def setting():
    return validate_setting({**TINY_SETTING, "budget": {"epochs": 1, "lr": 0.05}})


def test_a_run_returns_a_result_whose_dict_has_the_old_keys_in_the_old_order():
    result = run_trial(setting(), "none", eval_test=True, return_model=True)
    assert isinstance(result, RunResult) and isinstance(result.model, torch.nn.Module)
    keys = list(result.to_dict())
    assert keys == RUN_TRIAL_KEYS[:8] + ["test_accuracy"] + RUN_TRIAL_KEYS[8:] + ["curves"]  # new keys go last
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()  # JSON-ready: no model, no tensors
    assert result.epochs == 1 and len(result.val_history) == 1 and result.val_history[-1] == result.val_accuracy
    assert result.size("params") == result.student_params > 0 and result.size("macs") == result.student_macs > 0


def test_population_members_are_results_with_their_member_fields():
    members = run_population(setting(), ["none", "kd"], seed=0)
    assert [m.member for m in members] == [0, 1] and all(m.population == 2 for m in members)
    assert members[1].objective_config == preset("kd") and all(m.stopped is None for m in members)
    assert set(members[0].trial_attrs()) == {"part_means", "wall_seconds", "train_seconds", "val_history", "epochs",
                                             "samples_per_second", "population"}
    with pytest.raises(ValueError, match="measure: this run has no student size 'params'"):
        members[0].size("params")


def test_trial_attributes_are_the_set_fields_of_one_list_and_every_one_is_documented():
    assert set(TRIAL_FIELDS) <= set(TRIAL_ATTRS)
    assert set(TRIAL_FIELDS) <= {f.name for f in dataclasses.fields(RunResult)}
    full = RunResult(3, 0.5, val_history=[0.5], epochs=1, part_means={"ce": 1.0}, train_seconds=2.0,
                     samples_per_second=10.0, test_accuracy=0.4, init_sha256="ab", student_params=7,
                     student_macs=9, wall_seconds=3.0, population=2)
    assert list(full.trial_attrs()) == list(TRIAL_FIELDS)
    bare = RunResult(3, 0.5)
    assert bare.trial_attrs() == {}  # nothing made up for what a run (or an older file) did not measure


def test_from_dict_reads_what_it_knows_and_round_trips():
    old = {"seed": 2, "val_accuracy": 0.7, "test_accuracy": 0.6, "wall_seconds": 1.5, "epochs": 3, "label": "x"}
    result = RunResult.from_dict(old)
    assert (result.seed, result.val_accuracy, result.test_accuracy, result.epochs) == (2, 0.7, 0.6, 3)
    assert result.samples_per_second is None and "label" not in result.to_dict()
    assert RunResult.from_dict(result.to_dict()) == result


def test_a_queue_trial_stores_the_results_trial_attributes(tmp_path):
    result = RunResult(0, 0.75, val_history=[0.75], epochs=2, part_means={"ce": 0.5}, train_seconds=1.0,
                       samples_per_second=240.0, test_accuracy=0.7, student_params=123, student_macs=456,
                       wall_seconds=1.5)
    queue = RunQueue.open("q", f"sqlite:///{tmp_path}/q.db")
    done = queue.run([Run("none", preset("none"), 0)], setting(),
                     train=lambda setting, objective, **kwargs: result)
    [trial] = done.values()
    assert trial.value == 0.75 and trial.state == optuna.trial.TrialState.COMPLETE
    assert {k: trial.user_attrs[k] for k in result.trial_attrs()} == result.trial_attrs()


def test_dict_access_still_works_for_one_release_and_warns():
    result = RunResult(1, 0.5, epochs=2)
    with pytest.warns(DeprecationWarning, match=r"read result.epochs, not result\['epochs'\]"):
        assert result["epochs"] == 2
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        result["test_accuracy"]  # not measured: absent, as it was from the dict
    with pytest.warns(DeprecationWarning):
        assert "epochs" in result and "test_accuracy" not in result and "nonsense" not in result
    with pytest.warns(DeprecationWarning):
        assert result.get("init_sha256") is None and result.get("val_accuracy") == 0.5
