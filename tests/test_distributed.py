"""Scale-out and fault tolerance: several `relkd study worker` processes on one study in a
real PostgreSQL server (tests/pg.py), a worker killed in the middle of a trial, a SQLite
file locked by another process, and storage passwords that never leave relkd.

Every test here waits on states (a trial held in the middle by tests/held_worker.py, a trial
waiting for room, a statement blocked on a lock), never on one trial outlasting another or a
sleep being long enough. To check them on a busy machine, both cores kept busy, ten runs in a row
(bash, in the repository root)::

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
import signal
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from held_worker import hold_env
from relkd.cli import main
from relkd.fields import yaml_dump
from relkd.study import counted_trials, run_study, validate_study
from tiny import HELD_RELKD, TINY_SETTING, held_trial, stop, wait_for, wait_for_held_trial, worker_pid

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def study_file(tmp_path, name="dist", **optuna_section):
    doc = copy.deepcopy(TINY_SETTING)
    doc["name"] = name
    doc["search"] = {"tap": ["last_stage", "pool"]}
    doc["optuna"] = {"pruner": "none", "sampler": {"name": "tpe", "n_startup_trials": 4}, **optuna_section}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml_dump(doc))
    return path, doc


def worker(path, storage, *extra, verbose=True, hold=None):
    """A `relkd study worker` process; ``hold``: the variables of :func:`held_worker.hold_env`."""
    cmd = [*HELD_RELKD, *(["-v"] if verbose else []), "study", "worker", str(path), "--storage", storage, "--quiet",
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(hold or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_three_workers_on_postgresql_share_one_study(tmp_path, pg_url):
    """Three workers started at the same moment on an empty teacher cache: exactly n_trials
    complete, no trial number twice, none lost, every anchor once, the teacher trained once."""
    path, _ = study_file(tmp_path, n_trials=16)
    marker = tmp_path / "hold"
    procs = [worker(path, pg_url, hold=hold_env("kd", marker)) for _ in range(3)]
    try:
        # kd's worker holds it until another worker has completed a trial: at least two train
        kd = wait_for(lambda study: held_trial(study, "kd"), "dist", pg_url, procs, what="kd held")
        wait_for(lambda study: [t for t in study.trials if t.state == TrialState.COMPLETE
                                and t.user_attrs.get("worker") != kd.user_attrs["worker"]],
                 "dist", pg_url, procs, what="a trial another worker completed")
        marker.unlink()
        outputs = [p.communicate(timeout=900) for p in procs]
    finally:
        stop(procs)
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
    """SIGKILL in the middle of a trial (kd's, held after its first epoch): the heartbeat marks
    that trial failed, another worker retries it (same composition, same anchor) and the study
    still reaches n_trials."""
    path, _ = study_file(tmp_path, n_trials=4, anchors=["none", "kd", "sp"], heartbeat_interval=1)
    marker = tmp_path / "hold"
    first = worker(path, pg_url, hold=hold_env("kd", marker))
    try:
        killed = wait_for_held_trial("dist", pg_url, first, "kd").number
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    marker.unlink()
    assert first.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="dist", storage=pg_url)
    assert study.trials[killed].state == TrialState.RUNNING  # nobody knows yet that it died
    second = worker(path, pg_url)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="dist", storage=pg_url)
    assert study.trials[killed].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == study.trials[killed].params
    assert retries[0].user_attrs.get("anchor") == study.trials[killed].user_attrs.get("anchor")
    assert len(counted_trials(study)) == 4
    assert {"none", "kd", "sp"} <= {t.user_attrs.get("anchor") for t in counted_trials(study)}


@pytest.mark.slow
def test_a_worker_killed_in_the_last_trial_is_waited_for_and_its_trial_retried(tmp_path):
    """Two workers, a study of two trials (anchors none and kd). kd is held after its first
    epoch until its worker is killed; the other worker, none done, finds its next trial's room
    taken by the running kd. It must not stop: it waits until the heartbeat fails the dead
    trial, then trains its retry, so the study still ends with n_trials (SQLite, heartbeat 1 s).

    The kill comes once that worker has started its next trial: from then on it waits for kd
    whenever the heartbeat fails it (killed earlier, the heartbeat could fail kd before that
    worker looks for room, and there would be nothing to wait for)."""
    path, _ = study_file(tmp_path, n_trials=2, anchors=["none", "kd"], heartbeat_interval=1)
    storage = f"sqlite:///{tmp_path}/last.db"
    marker = tmp_path / "hold"
    started = [worker(path, storage, hold=hold_env("kd", marker)) for _ in range(2)]
    procs = {proc.pid: proc for proc in started}

    def kd_held_and_room_asked(study):
        kd = held_trial(study, "kd")
        none = [t for t in study.trials if t.user_attrs.get("anchor") == "none"]
        if kd is None or not none or none[0].state != TrialState.COMPLETE:
            return None
        later = max(kd.number, none[0].number)
        asking = [t for t in study.trials if t.state == TrialState.RUNNING and t.number > later]
        return kd if asking else None  # the other worker's next trial, waiting for room while kd is held

    try:
        kd = wait_for(kd_held_and_room_asked, "dist", storage, started,
                      what="kd held and the other worker's next trial started")
        victim = procs.pop(worker_pid(kd))
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        marker.unlink()  # the retry trains straight through
        (survivor,) = procs.values()
        _, err = survivor.communicate(timeout=900)
    finally:
        stop(started)
    assert survivor.returncode == 0, err[-3000:]
    assert "waiting for 1 running trials of other workers" in err, err[-3000:]
    study = optuna.load_study(study_name="dist", storage=storage)
    assert study.trials[kd.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == kd.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert len(counted_trials(study)) == 2
    assert sorted(t.user_attrs["anchor"] for t in counted_trials(study)) == ["kd", "none"]


@pytest.mark.slow
def test_a_locked_sqlite_file_is_waited_for(tmp_path):
    """Another process holds an exclusive lock on the study's SQLite file: relkd waits for it
    and goes on instead of failing with 'database is locked'. The lock is let go only once
    relkd has sent a statement to the locked file, so relkd surely met it; no statement failed
    meanwhile (relkd's retries of a failed one would hide that it did not wait)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    path, doc = study_file(tmp_path, n_trials=2, anchors=["none"])
    database = tmp_path / "locked.db"
    storage = f"sqlite:///{database}"
    run_study(validate_study(doc), storage=storage, progress=False)  # the file and its tables exist
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "sys.stdin.readline()\n"  # until the test lets go
         "c.execute('COMMIT')\n", str(database)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sent, errors = threading.Event(), []

    def statement_sent(*args):
        sent.set()  # the first, PRAGMA table_info, already needs the lock

    def statement_failed(context):
        if "locked" in str(context.original_exception):  # not the study's name taken: Optuna tries that first
            errors.append(repr(context.original_exception))

    outcome = {}

    def run():
        try:
            outcome["result"] = run_study(validate_study(doc), storage=storage, n_trials=3, progress=False)
        except BaseException as err:  # noqa: BLE001 - shown by the assertion below
            outcome["error"] = err

    runner = threading.Thread(target=run)
    try:
        assert locker.stdout.readline().strip() == "locked"
        event.listen(Engine, "before_cursor_execute", statement_sent)
        event.listen(Engine, "handle_error", statement_failed)
        runner.start()
        assert sent.wait(timeout=300), "relkd sent no statement to the database"
        # That statement cannot finish while the file is locked: relkd is waiting for the lock now.
        assert runner.is_alive()
    finally:
        locker.communicate("go\n", timeout=60)
        runner.join(timeout=600)
        event.remove(Engine, "before_cursor_execute", statement_sent)
        event.remove(Engine, "handle_error", statement_failed)
    assert locker.returncode == 0
    assert "error" not in outcome, repr(outcome.get("error"))
    assert not errors, errors  # it waited: no 'database is locked'
    assert len(counted_trials(outcome["result"].study)) == 3


def _password_free(text, password):
    assert password not in text
    return text


@pytest.mark.slow
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
