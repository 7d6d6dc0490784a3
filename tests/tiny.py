"""The tiny setting most tests train with (synthetic data, cnn_tiny teacher and student), and
helpers for tests that interrupt a run or watch worker processes."""
import time

import optuna
from optuna.trial import TrialState

from relkd.study.storage import open_storage

TINY_SETTING = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"dataset": "synthetic", "batch_size": 32, "params": {"train_size": 240, "test_size": 60}},
    "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 2, "lr": 0.05},
    "student": {"model": "cnn_tiny", "params": {"width": 4}},
    "budget": {"epochs": 2, "lr": 0.05},
}


def interrupt_on_call(function, n):
    """``function`` that raises KeyboardInterrupt on its ``n``-th call (as Ctrl-C would)."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    return wrapper


def peek_study(study_name, url):
    """The study a worker process is running, or None while it has not been created yet. Opened
    as relkd opens storages, which retries when the worker is creating the tables at that moment
    (a bare ``optuna.load_study`` then fails with IntegrityError on SQLite)."""
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(url, heartbeat_interval=0))
    except KeyError:
        return None


def wait_for_running_trial(study_name, storage, proc, seconds=180, first=1):
    """The number of a trial (>= ``first``) that ``proc`` is training. A trial counts once it
    has drawn all its parameters (its ``worker`` attribute, host:pid, is set right after): a
    kill while it draws would leave the dead trial with only some of them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.3)
        study = peek_study(study_name, storage)
        if study is None:  # not created yet
            continue
        running = [t.number for t in study.trials
                   if t.state == TrialState.RUNNING and t.number >= first
                   and t.user_attrs.get("worker", "").endswith(f":{proc.pid}")]
        if running:
            return running[0]
    proc.kill()
    raise AssertionError(f"no trial started in time: {proc.communicate()[1][-3000:]}")
