"""The run queue (relkd.study.queue) that confirm and compare train their fixed runs with:
resume without retraining, retries of failed, interrupted and dead runs, processes sharing
one queue; and the files made before it (tests/data/confirm_runs_v0.jsonl, confirm_v0.json,
compare_v0.sql, written by relkd at 4b88f04) read and resumed."""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from relkd.presets import preset
from relkd.setting import validate_setting
from relkd.study import compare as compare_module
from relkd.study import confirm as confirm_module
from relkd.study.compare import run_compare, validate_compare
from relkd.study.confirm import confirm_study
from relkd.study.queue import Run, RunQueue
from relkd.results.record import RUN_ATTR
from relkd.study.spec import validate_study
from relkd.study.worker import run_study
from relkd.engine.result import RunResult
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


class FakeTrain:
    """Stands in for relkd.engine.run_trial: records what it was asked to train, fails or is
    interrupted where told, returns metrics made from the seed and epochs."""

    def __init__(self, fail=None, interrupt_on=None):
        self.calls = []
        self.fail = fail or (lambda seed, epochs: False)
        self.interrupt_on = interrupt_on

    def __call__(self, setting, objective, *, seed, eval_test, teacher, progress):
        epochs = setting.budget.epochs
        self.calls.append((seed, epochs))
        if len(self.calls) == self.interrupt_on:
            raise KeyboardInterrupt
        if self.fail(seed, epochs):
            raise RuntimeError("the device fell over")
        return RunResult(seed, 0.5 + seed / 100, test_accuracy=0.4 + seed / 100 + epochs / 1000,
                         wall_seconds=0.01, part_means={"ce": 1.0}, epochs=epochs)


def setting():
    return validate_setting(TINY_SETTING)


def runs():
    none = preset("none")
    return [Run("none", none, 0), Run("none", none, 1), Run("none", none, 0, epochs=3, label="none, longer")]


def open_queue(tmp_path, name="q"):
    return RunQueue.open(name, f"sqlite:///{tmp_path}/queue.db")


def test_finished_runs_are_not_trained_again(tmp_path):
    train = FakeTrain()
    results = open_queue(tmp_path).run(runs(), setting(), train=train)
    assert sorted(train.calls) == [(0, 2), (0, 3), (1, 2)]  # each run once, with its own epochs
    assert list(results) == ["none/seed=0", "none/seed=1", "none/seed=0/epochs=3"]
    longer = results["none/seed=0/epochs=3"]
    assert longer.value == 0.5 and longer.user_attrs["test_accuracy"] == pytest.approx(0.403)
    assert longer.user_attrs[RUN_ATTR]["label"] == "none, longer" and longer.user_attrs["objective_config"]
    queue = open_queue(tmp_path)  # another process, later
    queue.enqueue(runs()[0])  # enqueued twice: still trained once
    again = queue.run(runs(), setting(), train=FakeTrain(fail=lambda *a: pytest.fail("retrained")))
    assert {k: (t.number, t.value) for k, t in again.items()} == {k: (t.number, t.value) for k, t in results.items()}
    skipped = [t for t in queue.study.trials if "skipped" in t.user_attrs]
    assert len(skipped) == 1 and "is complete in trial 0" in skipped[0].user_attrs["skipped"]


def test_an_interrupted_run_is_put_back_and_trained_next_time(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        open_queue(tmp_path).run(runs(), setting(), train=FakeTrain(interrupt_on=2))
    queue = open_queue(tmp_path)
    states = [(t.state, t.user_attrs[RUN_ATTR]["id"]) for t in queue.study.trials]
    assert (TrialState.FAIL, "none/seed=1") in states and (TrialState.WAITING, "none/seed=1") in states
    train = FakeTrain()
    results = queue.run(runs(), setting(), train=train)
    assert sorted(train.calls) == [(0, 3), (1, 2)] and len(results) == 3


def test_a_failed_run_fails_alone_and_is_retried_next_time(tmp_path):
    results = open_queue(tmp_path).run(runs(), setting(), catch=(Exception,),
                                       train=FakeTrain(fail=lambda seed, epochs: seed == 1))
    assert sorted(results) == ["none/seed=0", "none/seed=0/epochs=3"]
    [failed] = [t for t in open_queue(tmp_path).study.trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["error"] == "RuntimeError: the device fell over"
    train = FakeTrain()
    assert len(open_queue(tmp_path).run(runs(), setting(), train=train)) == 3 and train.calls == [(1, 2)]


def test_errors_stop_the_queue_unless_caught(tmp_path):
    with pytest.raises(RuntimeError, match="fell over"):
        open_queue(tmp_path).run(runs(), setting(), train=FakeTrain(fail=lambda seed, epochs: True))


def running_trial(queue, run, worker):
    """A trial of ``run`` that the process ``worker`` (host:pid) took and is training."""
    queue.add([run])
    trial = queue.study.ask()  # takes the waiting run
    trial.set_user_attr("worker", worker)
    return trial.number


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_run_of_a_dead_process_is_trained_again_and_a_live_ones_is_not(tmp_path):
    queue = open_queue(tmp_path)
    first, second = runs()[:2]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_number = running_trial(queue, first, f"{socket.gethostname()}:{int(dead.stdout)}")
    live_number = running_trial(queue, second, f"{socket.gethostname()}:{os.getppid()}")
    train = FakeTrain()
    results = queue.run([first, second], setting(), train=train, patience=0.5, poll=0.1)
    assert train.calls == [(0, 2)] and list(results) == ["none/seed=0"]  # the live one's run is waited for
    states = {t.number: t.state for t in queue.study.trials}
    assert states[dead_number] == TrialState.FAIL and states[live_number] == TrialState.RUNNING


SHARED = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from relkd.presets import preset
    from relkd.setting import validate_setting
    from relkd.engine import RunResult
    from relkd.study.queue import Run, RunQueue
    sys.path.insert(0, "tests")
    from tiny import TINY_SETTING

    url, me, other = sys.argv[1:]
    queue = RunQueue.open("shared", url)
    Path(me).touch()
    while not Path(other).exists():  # start together
        time.sleep(0.05)

    def train(setting, objective, *, seed, eval_test, teacher, progress):
        time.sleep(0.4)
        return RunResult(seed, seed / 10, test_accuracy=seed / 20, wall_seconds=0.4)

    runs = [Run("none", preset("none"), seed) for seed in range(8)]
    results = queue.run(runs, validate_setting(TINY_SETTING), train=train)
    print(json.dumps({k: t.value for k, t in results.items()}))
""")


@pytest.mark.slow
def test_two_processes_share_one_queue(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    RunQueue.open("shared", url)  # the tables exist before the two start
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", SHARED, url, str(tmp_path / me), str(tmp_path / other)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    expected = {f"none/seed={s}": s / 10 for s in range(8)}
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert json.loads(out) == expected  # each process sees every run finished
    study = optuna.load_study(study_name="shared", storage=url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert {t.user_attrs[RUN_ATTR]["id"] for t in done} == set(expected)
    assert len(done) <= 10  # a run is trained twice only when both processes take the same trial at once
    assert {t.user_attrs["worker"] for t in done} == {f"{socket.gethostname()}:{p.pid}" for p in procs}


# --------------------------------------------------------------------------- written before the run queue

CONFIRMED = {**TINY_SETTING, "search": {"tap": ["last_stage", "pool"]},
             "optuna": {"n_trials": 3, "anchors": ["none", "kd", "sp"]}}
SAME = ("label", "seeds", "val_mean", "val_std", "test_mean", "test_std", "p_vs_kd", "p_vs_best_preset")


def counting(function):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return function(*args, **kwargs)

    wrapper.calls = calls
    return wrapper


@pytest.mark.slow
def test_a_confirm_interrupted_before_the_run_queue_uses_its_runs_jsonl(tmp_path, monkeypatch, caplog):
    """confirm_runs_v0.jsonl: the runs.jsonl the old confirm wrote (top_k 1, seeds 0 and 1, one
    epoch) for this study; confirm_v0.json: the table it made from them."""
    study = run_study(validate_study(CONFIRMED), progress=False).study
    lines = (DATA / "confirm_runs_v0.jsonl").read_text().splitlines()
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "runs.jsonl").write_text("\n".join(lines[:4] + ['{"key": "damaged']) + "\n")
    train = counting(confirm_module.run_trial)
    monkeypatch.setattr(confirm_module, "run_trial", train)
    table = confirm_study(study, top_k=1, seeds=[0, 1], epochs=1, out_dir=interrupted)
    assert train.calls == [0, 1]  # only the two runs of anchor sp that runs.jsonl does not have
    assert "skipping a damaged line" in caplog.text
    rows = {r["label"]: r for r in table["rows"]}
    assert set(rows) == {"anchor none", "anchor kd", "anchor sp"} and all(r["seeds"] == 2 for r in rows.values())
    old = [json.loads(line) for line in lines]
    assert rows["anchor kd"]["test_mean"] == pytest.approx(sum(r["test_accuracy"] for r in old[2:4]) / 2)
    assert (interrupted / "runs.jsonl").exists() and (interrupted / "confirm.db").exists()

    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "runs.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(confirm_module, "run_trial", lambda *a, **k: pytest.fail("retrained"))
    table = confirm_study(study, top_k=1, seeds=[0, 1], epochs=1, out_dir=finished)
    before = json.loads((DATA / "confirm_v0.json").read_text())
    assert [{k: r[k] for k in SAME} for r in table["rows"]] == [{k: r[k] for k in SAME} for r in before["rows"]]
    assert confirm_study(study, top_k=1, seeds=[0, 1], epochs=1, out_dir=finished)["rows"] == table["rows"]


@pytest.mark.slow
def test_a_compare_interrupted_before_the_run_queue_resumes(tmp_path, monkeypatch):
    """compare_v0.sql: the old compare of this file, interrupted in its fourth run (kd, seed 1):
    three runs completed, one failed, two waiting."""
    db = tmp_path / "v0.db"
    con = sqlite3.connect(db)
    con.executescript((DATA / "compare_v0.sql").read_text())
    con.close()
    url = f"sqlite:///{db}"
    spec = validate_compare({**TINY_SETTING, "name": "ctiny",
                             "compare": {"methods": ["sp"], "seeds": 2, "with_kd": False}})
    old = {(t.params["method"], t.params["seed"]): t.user_attrs["test_accuracy"]
           for t in optuna.load_study(study_name="ctiny", storage=url).trials if t.state == TrialState.COMPLETE}
    assert sorted(old) == [("kd", 0), ("none", 0), ("none", 1)]
    train = counting(compare_module.run_trial)
    monkeypatch.setattr(compare_module, "run_trial", train)
    table = run_compare(spec, storage=url, out_dir=tmp_path / "out")
    assert sorted(train.calls) == [0, 1, 1]  # kd seed 1 (failed), sp seeds 0 and 1 (waiting)
    rows = {r["method"]: r for r in table["rows"]}
    assert [(m, r["seeds"]) for m, r in rows.items()] == [("none", 2), ("kd", 2), ("sp", 2)]
    assert rows["none"]["test_mean"] == pytest.approx((old["none", 0] + old["none", 1]) / 2)
    monkeypatch.setattr(compare_module, "run_trial", lambda *a, **k: pytest.fail("retrained"))
    assert run_compare(spec, storage=url, out_dir=tmp_path / "out")["rows"] == table["rows"]


def test_a_process_that_loses_the_race_for_a_run_goes_on(tmp_path, monkeypatch):
    """SQLite has no row locks: two processes can take the same waiting run. When the other
    one finishes it between this one's check and its write of the result, the storage
    raises UpdateFinishedTrialError; the queue drops its copy and goes on with the others."""
    url = f"sqlite:///{tmp_path}/queue.db"
    real = optuna.storages.RDBStorage.set_trial_state_values
    raced = []

    def racing(self, trial_id, state, values=None):
        if state == TrialState.COMPLETE and not raced:  # the other process tells the same trial first
            raced.append(trial_id)
            study = optuna.load_study(study_name="q", storage=url)
            [running] = study.get_trials(states=(TrialState.RUNNING,))
            study.tell(running.number, 0.77)
        return real(self, trial_id, state, values)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", racing)
    train = FakeTrain()
    results = RunQueue.open("q", url).run(runs(), setting(), train=train)
    assert raced and len(train.calls) == 3
    # the first run keeps the other process's result; this one's copy is dropped
    assert {k: t.value for k, t in results.items()} == {"none/seed=0": 0.77, "none/seed=1": 0.51,
                                                        "none/seed=0/epochs=3": 0.5}
