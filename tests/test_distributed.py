"""Scale-out and fault tolerance: several `relkd study worker` processes on one study in a
real PostgreSQL server (tests/pg.py), a worker killed in the middle of a trial, a SQLite
file locked by another process, and storage passwords that never leave relkd."""
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from relkd.cli import main
from relkd.fields import yaml_dump
from relkd.study import counted_trials, run_study, validate_study
from tiny import TINY_SETTING, peek_study, wait_for_running_trial

ROOT = Path(__file__).resolve().parents[1]
# Trials of a few seconds each, so that a signal lands inside one.
SLOW_DATA = {**TINY_SETTING["data"], "params": {"train_size": 1500, "test_size": 60}}


pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def study_file(tmp_path, name="dist", **optuna_section):
    doc = copy.deepcopy(TINY_SETTING)
    doc["name"] = name
    doc["search"] = {"tap": ["last_stage", "pool"]}
    doc["optuna"] = {"pruner": "none", "sampler": {"name": "tpe", "n_startup_trials": 4}, **optuna_section}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml_dump(doc))
    return path, doc


def worker(path, storage, *extra, verbose=True):
    cmd = [sys.executable, "-m", "relkd.cli", *(["-v"] if verbose else []), "study", "worker", str(path),
           "--storage", storage, "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_three_workers_on_postgresql_share_one_study(tmp_path, pg_url):
    """Three workers started at the same moment on an empty teacher cache: exactly n_trials
    complete, no trial number twice, none lost, every anchor once, the teacher trained once."""
    path, _ = study_file(tmp_path, n_trials=16)
    procs = [worker(path, pg_url) for _ in range(3)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="dist", storage=pg_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == len(counted_trials(study)) == 16
    # none lost: nothing left running, failed or waiting in the queue
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING)]
    # none twice: every enqueued anchor trained by exactly one worker (Optuna numbers trials itself)
    anchors = [t.user_attrs["anchor"] for t in complete if "anchor" in t.user_attrs]
    assert sorted(anchors) == sorted(set(anchors)) and len(anchors) == 10
    trained = sum(err.count("training teacher") for _, err in outputs)
    loaded = sum(err.count("loaded from") for _, err in outputs)
    assert (trained, loaded) == (1, 2), [err[-2000:] for _, err in outputs]
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 1
    # every worker trained some of the trials
    assert len({t.user_attrs.get("worker") for t in complete}) >= 2


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_and_retried_by_another(tmp_path, pg_url):
    """SIGKILL in the middle of a trial: the heartbeat marks that trial failed, another worker
    retries it (same composition, same anchor) and the study still reaches n_trials."""
    path, doc = study_file(tmp_path, n_trials=4, anchors=["none", "kd", "sp"], heartbeat_interval=1)
    doc["data"] = SLOW_DATA
    doc["budget"]["epochs"] = 4
    path.write_text(yaml_dump(doc))
    first = worker(path, pg_url)
    killed = wait_for_running_trial("dist", pg_url, first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="dist", storage=pg_url)
    assert study.trials[killed].state == TrialState.RUNNING  # nobody knows yet that it died
    second = worker(path, pg_url)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="dist", storage=pg_url)
    assert study.trials[killed].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == study.trials[killed].params
    assert retries[0].user_attrs.get("anchor") == study.trials[killed].user_attrs.get("anchor")
    assert len(counted_trials(study)) == 4
    assert {"none", "kd", "sp"} <= {t.user_attrs.get("anchor") for t in counted_trials(study)}


def test_a_worker_killed_in_the_last_trial_is_waited_for_and_its_trial_retried(tmp_path):
    """Two workers, a study of two trials (anchors none and kd). The worker training kd is
    killed the moment none completes, so the other worker finds its next trial's room taken by
    a running trial. It must not stop: it waits until the heartbeat fails the dead trial, then
    trains its retry, so the study still ends with n_trials (SQLite, heartbeat 1 s)."""
    path, doc = study_file(tmp_path, n_trials=2, anchors=["none", "kd"], heartbeat_interval=1)
    doc["data"] = SLOW_DATA
    doc["budget"]["epochs"] = 4
    path.write_text(yaml_dump(doc))
    storage = f"sqlite:///{tmp_path}/last.db"
    procs = {}
    for _ in range(2):
        proc = worker(path, storage)
        procs[proc.pid] = proc
        time.sleep(1.0)  # the first creates the study
    # Kill kd's worker only once none has completed: killed any earlier, the heartbeat could
    # fail kd before the other worker looks for room, and there would be nothing to wait for.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(0.1)
        study = peek_study("dist", storage)
        if study is None:  # not created yet
            continue
        anchors = {t.user_attrs.get("anchor"): t for t in study.trials}
        kd, none = anchors.get("kd"), anchors.get("none")
        assert kd is None or kd.state != TrialState.COMPLETE, "kd finished before none: make its trial longer"
        if kd and kd.state == TrialState.RUNNING and kd.user_attrs.get("worker") \
                and none and none.state == TrialState.COMPLETE:
            break
    else:
        raise AssertionError("kd was not training when none completed")
    victim = procs.pop(int(kd.user_attrs["worker"].rsplit(":", 1)[1]))
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    (survivor,) = procs.values()
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]
    assert "waiting for 1 running trials of other workers" in err, err[-3000:]
    study = optuna.load_study(study_name="dist", storage=storage)
    assert study.trials[kd.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == kd.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert len(counted_trials(study)) == 2
    assert sorted(t.user_attrs["anchor"] for t in counted_trials(study)) == ["kd", "none"]


def test_a_locked_sqlite_file_is_waited_for(tmp_path):
    """Another process holds an exclusive lock on the study's SQLite file for a few seconds:
    relkd waits for it and goes on instead of failing with 'database is locked'."""
    path, doc = study_file(tmp_path, n_trials=2, anchors=["none"])
    database = tmp_path / "locked.db"
    storage = f"sqlite:///{database}"
    run_study(validate_study(doc), storage=storage, progress=False)  # the file and its tables exist
    hold = 4.0
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "time.sleep(float(sys.argv[2]))\n"
         "c.execute('COMMIT')\n", str(database), str(hold)],
        stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "locked"
    start = time.monotonic()
    result = run_study(validate_study(doc), storage=storage, n_trials=3, progress=False)
    waited = time.monotonic() - start
    locker.wait(timeout=30)
    assert len(counted_trials(result.study)) == 3
    assert waited >= hold * 0.5  # it really waited for the lock


def _password_free(text, password):
    assert password not in text
    return text


def test_storage_passwords_never_leave_relkd(tmp_path, pg_url, capsys, caplog):
    """The password of the storage URL appears in no log line, printed output, export,
    report or stored study/trial attribute; nor in the error for a wrong password."""
    import logging

    import pg

    caplog.set_level(logging.DEBUG)
    path, _ = study_file(tmp_path, n_trials=4, anchors=["none", "kd"], storage=pg_url)  # the file names it too
    assert main(["-vv", "study", "run", str(path), "--quiet"]) == 0
    name = ["--study-name", "dist", "--storage", pg_url]
    assert main(["-vv", "study", "status", *name, "--json"]) == 0
    assert main(["-vv", "study", "export", *name, "--out", str(tmp_path / "best.yaml")]) == 0
    assert main(["-vv", "study", "report", *name, "--out", str(tmp_path / "report.html")]) == 0
    wrong = pg_url.replace(pg.PASSWORD, "Wr0ng-Pw")
    assert main(["study", "status", "--study-name", "dist", "--storage", wrong]) == 2
    captured = capsys.readouterr()
    assert "***" in captured.out + captured.err  # the URL is shown, redacted
    assert "Wr0ng-Pw" not in captured.err and "password authentication failed" in captured.err
    for text in (caplog.text, captured.out, captured.err, (tmp_path / "best.yaml").read_text(),
                 (tmp_path / "report.html").read_text()):
        _password_free(text, pg.PASSWORD)
    study = optuna.load_study(study_name="dist", storage=pg_url)
    system = study._storage.get_study_system_attrs(study._study_id)
    stored = json.dumps([study.user_attrs, system,
                         [(t.user_attrs, t.system_attrs) for t in study.trials]], default=str)
    _password_free(stored, pg.PASSWORD)
    assert "127.0.0.1" in stored  # the URL was stored, with its password redacted
