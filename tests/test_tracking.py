"""relkd.engine.tracking and ``--log-to``: one tracker run per trained student, with the
objective config as its parameters and one point per epoch per scalar, read back from
TensorBoard's event files and MLflow's store; a missing package is one line naming the extra."""
import copy
import json
import sys

import pytest
import yaml

from relkd.cli import main
from relkd.engine import train_runs
from relkd.engine.tracking import flat_params, open_tracker, parse_log_to
from relkd.setting import validate_setting
from relkd.study.artifacts import attach_artifacts, download_artifacts
from tiny import TINY_SETTING

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

SCALARS = {"lr", "samples_per_second", "val_accuracy", "loss/ce", "loss/ce.weighted", "loss/kd", "loss/kd.weighted"}


def events(folder):
    """{tag: [(step, value), ...]} of the scalars in a TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def setting(epochs=2):
    return validate_setting({**TINY_SETTING, "budget": {"epochs": epochs, "lr": 0.05}})


@pytest.mark.needs("tensorboard")
def test_train_runs_writes_one_tensorboard_run_per_seed_with_a_point_per_epoch(tmp_path):
    summary = train_runs(setting(), "kd", [0, 1], eval_test=True, log_to=f"tensorboard:{tmp_path / 'tb'}")
    runs = sorted(p.name for p in (tmp_path / "tb" / "tiny").iterdir())
    assert runs == ["seed-0", "seed-1"]
    for seed, run in enumerate(summary["per_seed"]):
        found = events(tmp_path / "tb" / "tiny" / f"seed-{seed}")
        assert SCALARS <= set(found)
        for tag in SCALARS:
            assert [step for step, _ in found[tag]] == [1, 2], tag  # one point per epoch, at the epoch
        assert [v for _, v in found["val_accuracy"]] == pytest.approx(run["val_history"])
        assert found["final/test_accuracy"][0][1] == pytest.approx(run["test_accuracy"])


@pytest.mark.needs("mlflow")
def test_train_runs_logs_to_mlflow_with_the_config_as_parameters(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store for the test; users point at a server
    uri = (tmp_path / "mlruns").as_uri()
    summary = train_runs(setting(), "kd", [3], log_to=f"mlflow:{uri}")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    run, = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "seed-3"
    assert run.data.params["objective.kd.temperature"] == "4.0" and run.data.params["seed"] == "3"
    for tag in SCALARS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, tag)] == [1, 2], tag
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert history == pytest.approx(summary["per_seed"][0]["val_history"])


def test_a_missing_tracker_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(ValueError) as err:
        open_tracker("tensorboard:somewhere", "x")
    assert "pip install 'relkd[tensorboard]'" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ValueError, match=r"relkd\[mlflow\]"):
        open_tracker("mlflow:http://localhost:5000", "x")


@pytest.mark.parametrize("bad", ["tensorboard", "tensorboard:", "wandb:x", "runs/tb"])
def test_a_bad_log_to_names_the_flag_and_what_it_takes(bad):
    with pytest.raises(ValueError, match=r"--log-to \(or RELKD_LOG_TO\): .* tensorboard:DIR, mlflow:URI"):
        parse_log_to(bad)


def test_the_cli_refuses_a_bad_log_to_before_training(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--setting", "studies/fmnist_quick.yaml", "--config", "kd", "--log-to", "wandb:x"])
    assert "--log-to" in capsys.readouterr().err


def test_params_are_flattened_as_trackers_take_them():
    flat = flat_params({"objective": {"kd": None, "terms": [{"name": "a", "weight": 2.0}]}, "seed": 1})
    assert flat == {"objective.kd": "none", "objective.terms.0.name": "a", "objective.terms.0.weight": 2.0, "seed": 1}


@pytest.mark.needs("tensorboard")
def test_a_tracker_that_fails_loses_no_run(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # the run folder cannot be made under a file
    tracker = open_tracker(f"tensorboard:{blocker}", "x")
    tracker.log_run("r", params={}, curves=[{"epoch": 1, "lr": 0.1, "parts": {}, "weighted": {}}])
    assert "could not log run r" in caplog.text


@pytest.mark.needs("tensorboard")
def test_study_run_and_confirm_log_one_run_per_trained_trial(tmp_path):
    doc = copy.deepcopy(TINY_SETTING)
    doc["name"] = "tracked"
    doc["budget"]["epochs"] = 2
    doc["search"] = {"tap": ["pool"], "terms": {"low": 1, "high": 1}}
    doc["optuna"] = {"sampler": {"name": "random"}, "anchors": ["kd"], "n_trials": 2, "pruner": {"name": "none"}}
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(doc))
    tb = tmp_path / "tb"
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["study", "run", str(path), "--storage", storage, "--quiet", "--log-to", f"tensorboard:{tb}"]) == 0
    import optuna

    study = optuna.load_study(study_name="tracked", storage=storage)
    trained = sorted(f"trial-{t.number}" for t in study.trials if t.state.name == "COMPLETE")
    assert trained and sorted(p.name for p in (tb / "tracked").iterdir()) == trained
    for name in trained:
        assert [s for s, _ in events(tb / "tracked" / name)["loss/ce"]] == [1, 2]
    # each trained trial keeps its curves as an artifact (the store beside the SQLite file)
    attach_artifacts(study, storage)
    downloaded = download_artifacts(study, tmp_path / "got", files=["curves.json"])
    assert sorted(p.parent.name for p in downloaded) == sorted(n.replace("trial-", "trial_") for n in trained)
    for path in downloaded:
        curves = json.loads(path.read_text())
        number = int(path.parent.name.removeprefix("trial_"))
        assert [p["epoch"] for p in curves] == [1, 2]
        assert [p["val_accuracy"] for p in curves] == pytest.approx(study.trials[number].user_attrs["val_history"],
                                                                    abs=1e-4)
    assert main(["study", "confirm", "--study-name", "tracked", "--storage", storage, "--seeds", "1", "--top-k", "1",
                 "--epochs", "1", "--quiet", "--json", "--out", str(tmp_path / "confirm"),
                 "--log-to", f"tensorboard:{tb}"]) == 0
    confirm_runs = [p for p in (tb / "tracked.confirm").rglob("events.out.tfevents.*")]
    assert confirm_runs  # one folder per run (<key>/seed=<seed>/epochs=<epochs>)
    first = events(confirm_runs[0].parent)
    assert [s for s, _ in first["val_accuracy"]] == [1] and "final/test_accuracy" in first
