"""The tiny setting most tests train with (synthetic data, cnn_tiny teacher and student), and
helpers for tests that interrupt a run or watch worker processes.

Tests that stop a worker in the middle of a trial start it with ``HELD_RELKD`` and
:func:`held_worker.hold_env`, wait for the held state (:func:`wait_for_held_trial`) and act then:
they wait on states of the study, never on one trial outlasting another."""
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState, create_trial

from relkd.results.record import SETTING_ATTR, TUNED_ATTR
from relkd.setting import setting_record
from relkd.study.storage import open_storage

#: ``relkd`` in a new process, as ``python -m relkd.cli`` but able to hold a trial (tests/held_worker.py).
HELD_RELKD = [sys.executable, str(Path(__file__).with_name("held_worker.py"))]

TINY_SETTING = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"dataset": "synthetic", "batch_size": 32, "params": {"train_size": 240, "test_size": 60}},
    "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 2, "lr": 0.05},
    "student": {"model": "cnn_tiny", "params": {"width": 4}},
    "budget": {"epochs": 2, "lr": 0.05},
}


def made_study(setting, trials, storage=None, name="made"):
    """A single-objective relkd study of ``setting`` made of completed trials, without training:
    ``trials`` are ``(validation accuracy, anchor or None, tuned anchor or None, objective config)``,
    each at seed 0 and 2 epochs."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(SETTING_ATTR, setting_record(setting))
    for value, anchor, tuned, config in trials:
        attrs = {"objective_config": config, "seed": 0, "epochs": 2, **({"anchor": anchor} if anchor else {}),
                 **({TUNED_ATTR: tuned} if tuned else {})}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs))
    return study


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


def wait_for(condition, study_name, url, procs, *, what, seconds=900):
    """What ``condition(study)`` returns once it is truthy, polling the study that worker
    processes ``procs`` run. Every wait is for a state of the study, never for time to pass:
    ``seconds`` only stops a test that would hang, and a worker that exits without the
    condition met fails it with its stderr."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        exited = [proc for proc in procs if proc.poll() is not None]  # before the look: it shows all they did
        study = peek_study(study_name, url)
        found = condition(study) if study is not None else None  # None: not created yet
        if study is not None:
            storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps the RDB storage
            storage.engine.dispose()  # one look, one connection: none left open on the server
        if found:
            return found
        for proc in exited:
            raise AssertionError(f"a worker exited before {what}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.3)
    stop(procs)
    raise AssertionError(f"{what}: not reached in {seconds} s")


def held_trial(study, anchor, proc=None):
    """The trial of ``anchor`` that a worker started with :func:`held_worker.hold_env` holds
    (running, its first epoch reported, its ``worker`` attribute host:pid set), or None;
    with ``proc``, only one that process holds."""
    for t in study.trials:
        worker = t.user_attrs.get("worker", "")
        if (t.state == TrialState.RUNNING and t.user_attrs.get("anchor") == anchor and t.intermediate_values
                and worker and (proc is None or worker.endswith(f":{proc.pid}"))):
            return t
    return None


def wait_for_held_trial(study_name, url, proc, anchor):
    """The trial of ``anchor`` that ``proc`` (started with :func:`held_worker.hold_env`) holds
    in the middle: it has drawn all its parameters and trained its first epoch."""
    return wait_for(lambda study: held_trial(study, anchor, proc), study_name, url, [proc],
                    what=f"a held trial of {anchor}")


def worker_pid(trial):
    """The process id of the worker that runs ``trial`` (its ``worker`` attribute, host:pid)."""
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


def stop(procs):
    """Kill the worker processes still running (a failed test leaves none behind)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
