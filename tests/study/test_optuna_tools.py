"""Optuna's own tools read what relkd writes and prints (issue 28, first part): the storage as
relkd prints it opens in the ``optuna`` command and in optuna-dashboard's storage guess, for
SQLite and journal files; the values are named; relkd's best composition is recorded where
those tools show study attributes, also when Optuna's best trial is a lucky re-run."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from relkd.results.ranking import compositions, record_best
from relkd.results.record import BEST_ATTR, trial_attrs
from relkd.study import open_study, run_study, tool_storage, validate_study
from relkd.study.storage import open_storage
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders
OPTUNA = str(Path(sys.executable).with_name("optuna"))


def tiny_study(name):
    doc = copy.deepcopy(TINY_SETTING)
    doc["name"] = name
    doc["budget"]["epochs"] = 1
    doc["search"] = {"tap": ["pool"], "terms": {"low": 1, "high": 1}}
    doc["optuna"] = {"sampler": {"name": "random"}, "anchors": ["kd"], "n_trials": 2}
    return validate_study(doc)


@pytest.mark.needs("optuna-cli")
@pytest.mark.needs("optuna-dashboard")
@pytest.mark.parametrize("storage", ["sqlite:///{tmp}/s.db", "{tmp}/s.log", "journal:{tmp}/j.log"],
                         ids=["sqlite", "journal", "journal-prefixed"])
def test_optuna_and_optuna_dashboard_open_the_storage_relkd_prints(tmp_path, storage):
    from optuna_dashboard._storage_url import get_storage  # what `optuna-dashboard STORAGE` opens it with

    url = storage.format(tmp=tmp_path)
    spec = tiny_study("tools")
    result = run_study(spec, storage=url, progress=False)
    shown = tool_storage(result.storage)
    assert shown == (url if url.startswith("sqlite") else url.removeprefix("journal:"))
    listed = subprocess.run([OPTUNA, "studies", "--storage", shown, "-f", "json"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == ["tools"]
    best = subprocess.run([OPTUNA, "best-trial", "--study-name", "tools", "--storage", shown, "-f", "json"],
                          capture_output=True, text=True)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["number"] == result.study.best_trial.number
    dashboard = optuna.load_study(study_name="tools", storage=get_storage(shown))
    assert dashboard.metric_names == ["val_accuracy"]  # named in the dashboard, not "Objective 0"
    assert dashboard.user_attrs[BEST_ATTR]["trial"] == compositions(result.study)[0].trial.number


def test_a_plain_path_to_an_sqlite_file_says_how_to_name_it(tmp_path):
    optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(ValueError, match=rf"an SQLite database, not a journal file; give sqlite:///{tmp_path}/s.db"):
        open_storage(f"{tmp_path}/s.db")


def test_relkd_records_its_best_where_optuna_names_a_lucky_rerun():
    """Optuna's best trial is the best single run; relkd ranks by the mean over seeds. A re-run
    leader that was lucky on seed 0 is Optuna's best; relkd.best names the composition that
    leads over its seeds."""
    study = optuna.create_study(direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}

    def add(value, **attrs):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params={"x": 0.5}, distributions=dist,
                                     user_attrs=trial_attrs(**attrs)))

    config = {"relkd_config": 1, "ce_weight": 1.0, "kd": None, "terms": []}
    add(0.80, config=config, seed=0)                      # trial 0: lucky on its first seed
    add(0.75, config=config, seed=0)                      # trial 1: steady
    add(0.60, rerun={"of": 0, "seed": 1}, seed=1)
    add(0.61, rerun={"of": 0, "seed": 2}, seed=2)
    add(0.74, rerun={"of": 1, "seed": 1}, seed=1)
    add(0.76, rerun={"of": 1, "seed": 2}, seed=2)
    assert study.best_trial.number == 0
    best = record_best(study)
    assert best == study.user_attrs[BEST_ATTR] and best["trial"] == 1 and best["seeds"] == [0, 1, 2]
    assert best["mean"] == pytest.approx(0.75) and len(json.dumps(best)) < 1024  # whole in the dashboard


def test_a_study_made_before_the_names_gets_them_when_resumed(tmp_path, monkeypatch):
    import relkd.study.opening as opening

    spec = tiny_study("named")
    url = f"sqlite:///{tmp_path}/n.db"
    with monkeypatch.context() as m:
        m.setattr(opening, "name_metrics", lambda study: None)  # as an older relkd made it
        older, _, created = open_study(spec, storage=url)
    assert created and older.metric_names is None
    resumed, _, created = open_study(spec, storage=url)
    assert not created and resumed.metric_names == ["val_accuracy"]


def test_a_study_stopped_before_its_anchors_leaves_nothing_waiting_and_resumes_them(tmp_path):
    doc = tiny_study("anchors").document
    doc["optuna"].update(anchors=["none", "kd", "sp+kd"], n_trials=1)
    spec = validate_study(doc)
    url = f"sqlite:///{tmp_path}/a.db"
    first = run_study(spec, storage=url, progress=False)
    states = [t.state for t in first.study.trials]
    assert TrialState.WAITING not in states and TrialState.RUNNING not in states
    skipped = [t for t in first.study.trials if t.state == TrialState.FAIL]
    assert len(skipped) == 2 and all("not trained: the study stopped" in t.user_attrs["skipped"] for t in skipped)
    assert first.counts["skipped"] == 2 and first.counts["fail"] == 0
    again = run_study(spec, storage=url, n_trials=3, progress=False)  # resumed: the anchors are enqueued again
    anchors = sorted(t.user_attrs["anchor"] for t in again.study.trials if t.state == TrialState.COMPLETE)
    assert anchors == ["kd", "none", "sp+kd"]


def test_the_dashboard_line_says_how_to_install_it_where_it_is_missing(tmp_path, monkeypatch, capsys):
    import importlib.util

    import yaml

    from relkd.cli import main

    doc = copy.deepcopy(TINY_SETTING)
    doc.update(name="hint", search={"tap": ["pool"], "terms": {"low": 1, "high": 1}},
               optuna={"sampler": {"name": "random"}, "anchors": ["none"], "n_trials": 1})
    doc["budget"]["epochs"] = 1
    path = tmp_path / "hint.yaml"
    path.write_text(yaml.safe_dump(doc))
    storage = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["study", "run", str(path), "--storage", storage, "--quiet"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("watch it"))
    assert line.endswith(f"--artifact-dir {tmp_path / 'artifacts'}")  # installed here: no hint
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna_dashboard"
                        else find_spec(name, *a))
    assert main(["study", "run", str(path), "--storage", storage, "--quiet"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("watch it"))
    assert line.endswith("(pip install 'relkd[dashboard]' first)")


def test_a_study_short_of_its_trials_keeps_the_copies_of_stopped_trials_waiting():
    from relkd.study.worker import retire_waiting

    def fresh():
        study = optuna.create_study()
        study.enqueue_trial({}, user_attrs={"anchor": "kd"})  # an anchor past n_trials: enqueued again later
        copy = create_trial(state=TrialState.WAITING, params={}, distributions={},
                            system_attrs={"failed_trial": 0, "retry_history": [0]})  # a stopped trial put back
        study._storage.create_new_trial(study._study_id, template_trial=copy)
        return study

    study = fresh()
    assert retire_waiting(study, "timeout", keep_copies=True) == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # nothing would enqueue the copy again
    study = fresh()
    assert retire_waiting(study, "n_trials reached") == 2  # a complete study leaves nothing waiting
    assert all(t.state == TrialState.FAIL and t.user_attrs["skipped"].startswith("not trained") for t in study.trials)
