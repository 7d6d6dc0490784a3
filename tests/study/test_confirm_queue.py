"""``relkd study confirm --queue-storage URL`` (or ``$RELKD_CONFIRM_STORAGE``): confirms on
several machines (here: processes with their own ``--out`` folders) share one run queue, so a
run one of them finished is not trained again by another; ``--storage`` stays the study's.
The study is made with optuna's create_trial and a stand-in trainer records each run, so the
file takes seconds."""
import random
import signal

import optuna
import pytest
from optuna.trial import TrialState

from relkd.cli import main
from relkd.engine.result import RunResult
from relkd.results.record import RUN_ATTR
from relkd.setting import validate_setting
from relkd.study import confirm as confirm_module
from relkd.study import confirm_budgets as budgets_module
from relkd.study.confirm import Candidate, queue_url
from tiny import TINY_SETTING, interrupt_on_call, made_study

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

SETTING = validate_setting(TINY_SETTING)
#: (validation accuracy, anchor, tuned anchor, config): anchors, a tuned kd and two searched trials.
TRIALS = [(0.70, "none", None, SETTING.preset("none")), (0.80, "kd", None, SETTING.preset("kd")),
          (0.84, "sp", None, SETTING.preset("sp")),
          (0.86, None, "kd", {**SETTING.preset("kd"), "kd": {"weight": 0.5, "temperature": 2.0}}),
          (0.85, None, None, SETTING.preset("sp+kd")), (0.83, None, None, SETTING.preset("rkd"))]


def key(config):
    return Candidate("", config).key


class FakeTrain:
    """Stands in for relkd.engine.run_trial: records (composition key, epochs, seed) of each run."""

    def __init__(self):
        self.calls = []

    def __call__(self, setting, objective, *, seed, eval_test, **kwargs):
        call = (key(objective.to_config()), setting.budget.epochs, seed)
        self.calls.append(call)
        draw = random.Random(repr(call))
        return RunResult(seed, draw.uniform(0.5, 0.9), test_accuracy=draw.uniform(0.5, 0.9), wall_seconds=1.0,
                         epochs=setting.budget.epochs)


def use(monkeypatch, train):
    monkeypatch.setattr(confirm_module, "run_trial", train)
    monkeypatch.setattr(budgets_module, "run_trial", train)


@pytest.fixture
def sigterm_handler():
    """relkd study confirm installs its SIGTERM handler in this process: put the old one back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def queue_trials(url):
    return optuna.load_study(study_name="made.confirm", storage=url).trials


def confirm(study_url, out, *flags):
    return main(["study", "confirm", "--study-name", "made", "--storage", study_url, "--out", str(out),
                 "--seeds", "2", "--quiet", *flags])


def test_two_confirms_on_one_queue_storage_share_the_runs(tmp_path, monkeypatch, sigterm_handler):
    study_url, queue = f"sqlite:///{tmp_path}/study.db", f"sqlite:///{tmp_path}/queue.db"
    made_study(SETTING, TRIALS, study_url)
    first = FakeTrain()
    use(monkeypatch, interrupt_on_call(first, 4))  # the first machine stops in its fourth run
    assert confirm(study_url, tmp_path / "a", "--epochs", "1", "--top-k", "1", "--queue-storage", queue) == 130
    assert len(first.calls) == 3
    second = FakeTrain()
    use(monkeypatch, second)
    assert confirm(study_url, tmp_path / "b", "--epochs", "1", "--top-k", "1", "--queue-storage", queue) == 0
    runs = set(first.calls) | set(second.calls)
    assert len(runs) == 8  # none, kd, sp, one searched composition; 2 seeds each
    assert not set(first.calls) & set(second.calls) and len(second.calls) == 5  # the first's runs are not redone
    trials = queue_trials(queue)
    completed = [t.user_attrs[RUN_ATTR]["id"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(completed) == len(set(completed)) == 8  # each run trained once, in the shared queue
    assert [t.state for t in trials].count(TrialState.FAIL) == 1  # the interrupted run, trained again after
    assert not (tmp_path / "b" / "confirm.db").exists() and not (tmp_path / "a" / "confirm.db").exists()
    assert (tmp_path / "b" / "confirm.md").exists()

    # the environment gives the same queue: a confirm at several budgets reuses the runs at 1 epoch
    monkeypatch.setenv("RELKD_CONFIRM_STORAGE", queue)
    third = FakeTrain()
    use(monkeypatch, third)
    assert confirm(study_url, tmp_path / "c", "--epochs", "1,2") == 0
    winner, tuned_kd = key(SETTING.preset("sp+kd")), key(TRIALS[3][3])
    kd, none = key(SETTING.preset("kd")), key(SETTING.preset("none"))
    reused = {(k, 1, s) for k in (winner, kd, none) for s in (0, 1)}
    assert reused <= runs and not reused & set(third.calls)
    assert {(tuned_kd, 1, 0), (kd, 2, 0), (none, 2, 1), (winner, 2, 1)} <= set(third.calls)
    assert len(third.calls) == len(set(third.calls)) == 4 * 2 * 2 - len(reused)  # 4 compositions, 2 budgets, 2 seeds

    # without the shared queue another machine's confirm has its own and trains every run again
    monkeypatch.delenv("RELKD_CONFIRM_STORAGE")
    fourth = FakeTrain()
    use(monkeypatch, fourth)
    assert confirm(study_url, tmp_path / "d", "--epochs", "1", "--top-k", "1") == 0
    assert sorted(fourth.calls) == sorted(runs) and (tmp_path / "d" / "confirm.db").exists()


def test_the_queue_storage_flag_and_its_default(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "confirm", "--study-name", "made", "--queue-storage", " "])
    assert exit_.value.code == 2
    assert "--queue-storage: expected a storage URL such as" in capsys.readouterr().err
    monkeypatch.delenv("RELKD_CONFIRM_STORAGE", raising=False)
    assert queue_url(None, tmp_path) == f"sqlite:///{tmp_path.as_posix()}/confirm.db"
    monkeypatch.setenv("RELKD_CONFIRM_STORAGE", "sqlite:///shared.db")
    assert queue_url(None, tmp_path) == "sqlite:///shared.db"
    assert queue_url("sqlite:///flag.db", tmp_path) == "sqlite:///flag.db"  # the flag beats the environment
    with pytest.raises(ValueError, match="^storage: expected a storage URL"):
        queue_url("", tmp_path)
