"""A worker stopped by SIGTERM (a scheduler's preemption) puts its running trial back
(relkd.study.trial.put_back_stopped): the trial fails, marked ``skipped`` with the number of its
copy; the copy waits with the same parameters, composition and role (tuned anchor), holds the
same grid cell, records the chain as Optuna's retries do (``failed_trial``, ``retry_history``),
is counted once and trained once, by the next worker. Ctrl-C keeps a sampler's draw out of the
queue. The signal is raised inside a trial's first epoch, from the reporter, with the handler
the CLI installs (relkd.study.trial.preempt_on_sigterm); tiny models, synthetic data."""
import copy
import os
import signal
import subprocess
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from relkd.results.record import TUNED_ATTR, TrialRecord, counted_trials, set_trial_attrs, trial_counts
from relkd.study import population as population_module
from relkd.study import run_study, validate_study
from relkd.results.record import is_copy, replays
from relkd.study.trial import Preempted, TrialRunner, preempt_on_sigterm, put_back_stopped
from relkd.study.tuned_anchors import searched_index
from relkd.fields import yaml_dump
from held_worker import hold_env
from tiny import HELD_RELKD, TINY_SETTING, stop, wait_for_held_trial

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

#: The reporter as TrialRunner has it (a static method), put back after a test stopped a trial.
REPORTER = TrialRunner.__dict__["reporter"]
#: CE alone with a searched weight: no teacher, so a study takes a few seconds.
CE_ONLY = {"terms": 0, "kd": False, "ce_weight": {"low": 0.1, "high": 1.0, "log": True}}


def study_doc(search=CE_ONLY, **optuna_section):
    doc = copy.deepcopy(TINY_SETTING)
    doc["search"] = copy.deepcopy(search)
    doc["optuna"] = {"sampler": {"name": "random"}, "anchors": [], "pruner": "none", **optuna_section}
    return doc


@pytest.fixture
def sigterm_handler():
    """SIGTERM handled as ``relkd study run|worker`` handle it, for the test only."""
    previous = preempt_on_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_in_first_epoch(monkeypatch, how, which=lambda draw: True):
    """The first trial that ``which`` accepts is stopped when it reports its first epoch:
    ``how`` is "sigterm" (the signal, delivered to this thread at once) or "ctrl-c"."""
    real, stopped = TrialRunner.reporter, []

    def reporter(draw):
        report = real(draw)

        def stopping(epoch, accuracy):
            go_on = report(epoch, accuracy)  # the epoch is in the storage first
            if not stopped and which(draw):
                stopped.append(draw.trial.number)
                if how == "sigterm":
                    signal.raise_signal(signal.SIGTERM)
                raise KeyboardInterrupt
            return go_on

        return stopping

    monkeypatch.setattr(TrialRunner, "reporter", staticmethod(reporter))
    return stopped


def copies_of(study, number):
    return [t for t in study.trials if (t.system_attrs.get("retry_history") or [None])[-1] == number]


def test_put_back_copies_what_defines_the_run_and_a_second_copy_of_a_trial_is_not_trained():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.suggest_float("tuned.kd.ce_weight", 0.1, 10.0, log=True)
    assert put_back_stopped(trial, "preempted", draws=True) is None  # it has drawn no composition yet
    set_trial_attrs(trial, config={"ce_weight": 0.5, "terms": []}, tuned_anchor="kd", seed=0, pruned_reason="x")
    assert put_back_stopped(trial, "interrupted") is None  # Ctrl-C: a draw of the sampler draws again
    assert "skipped" not in study.trials[0].user_attrs
    number = put_back_stopped(trial, "preempted", draws=True)
    study.tell(trial, state=TrialState.FAIL)
    original, put = study.trials
    assert number == put.number == 1 and put.state == TrialState.WAITING and put.params == original.params
    assert original.user_attrs["skipped"] == "preempted while training: put back as trial 1 with the same parameters"
    assert put.user_attrs == {"objective_config": {"ce_weight": 0.5, "terms": []}, TUNED_ATTR: "kd", "seed": 0}
    assert put.system_attrs == {"failed_trial": 0, "retry_history": [0]}  # as Optuna's retries record it
    assert is_copy(put.system_attrs) and replays(TrialRecord.of(put), put.system_attrs)
    assert searched_index(study, 2) == 1  # the copy stands in the place of trial 0
    # the worker could not mark it failed, so Optuna's heartbeat retried it as well: two copies of trial 0
    with warnings.catch_warnings():  # experimental, as relkd uses it (relkd.study.storage.open_storage)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, original)
    first, second = study.ask(), study.ask()
    system = study._storage.get_trial_system_attrs
    TrialRunner._check_copy_is_new(first, system(first._trial_id))  # the earlier one trains
    with pytest.raises(optuna.TrialPruned):
        TrialRunner._check_copy_is_new(second, system(second._trial_id))
    assert second.user_attrs["skipped"] == "trial 0 is trained again in trial 1 (running)"
    # a copy stopped again is copied again, its chain longer
    again = put_back_stopped(first, "preempted", draws=True)
    assert study.trials[again].system_attrs == {"failed_trial": 0, "retry_history": [0, 1]}


@pytest.mark.slow
def test_a_preempted_trial_is_put_back_with_its_parameters_and_the_next_worker_trains_it(
        tmp_path, monkeypatch, sigterm_handler):
    spec = validate_study(study_doc(n_trials=2))
    storage = f"sqlite:///{tmp_path}/s.db"
    stopped = stop_in_first_epoch(monkeypatch, "sigterm")
    with pytest.raises(Preempted):
        run_study(spec, storage=storage, progress=False)
    study = optuna.load_study(study_name="tiny", storage=storage)
    interrupted = study.trials[stopped[0]]
    assert interrupted.state == TrialState.FAIL and sorted(interrupted.intermediate_values) == [1]
    [put] = copies_of(study, interrupted.number)
    assert interrupted.user_attrs["skipped"] == (f"preempted while training: put back as trial {put.number} with "
                                                 f"the same parameters")
    assert put.state == TrialState.WAITING and put.params == interrupted.params
    assert put.distributions == interrupted.distributions
    assert put.user_attrs["objective_config"] == interrupted.user_attrs["objective_config"]
    assert put.system_attrs["failed_trial"] == interrupted.number and not put.intermediate_values
    assert trial_counts(study)["fail"] == 0 and trial_counts(study)["skipped"] == 1  # counted once, as put back

    monkeypatch.setattr(TrialRunner, "reporter", REPORTER)  # the next worker is not stopped
    result = run_study(spec, storage=storage, progress=False, enqueue_missing_anchors=False)
    study = result.study
    trained = study.trials[put.number]
    assert trained.state == TrialState.COMPLETE and trained.params == interrupted.params
    assert trained.user_attrs["objective_config"] == interrupted.user_attrs["objective_config"]
    assert sorted(trained.intermediate_values) == [1, 2]
    assert result.trials_run == 2 and len(counted_trials(study)) == 2 and put.number in {
        t.number for t in counted_trials(study)}
    assert copies_of(study, interrupted.number) == [trained]  # trained once, by one trial
    assert not [t for t in study.trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    counts = trial_counts(study)
    assert (counts["complete"], counts["fail"], counts["skipped"]) == (2, 0, 1)


@pytest.mark.slow
def test_ctrl_c_fails_a_draw_of_the_sampler_without_putting_it_back(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path}/s.db"
    stopped = stop_in_first_epoch(monkeypatch, "ctrl-c")
    with pytest.raises(KeyboardInterrupt) as err:
        run_study(validate_study(study_doc(n_trials=2)), storage=storage, progress=False)
    assert not isinstance(err.value, Preempted)
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(stopped[0], TrialState.FAIL)]
    assert "skipped" not in study.trials[0].user_attrs


@pytest.mark.slow
def test_a_preempted_grid_trial_keeps_its_cell_and_the_grid_ends_with_every_cell_once(
        tmp_path, monkeypatch, sigterm_handler):
    """The copy holds the interrupted trial's grid cell; a copy that took a cell of its own would
    leave that cell untrained and train the other one twice."""
    grid = {"terms": 0, "kd": False, "ce_weight": [0.25, 0.5, 1.0], "weight": [1.0], "component_params": "default"}
    spec = validate_study(study_doc(grid, sampler="grid"))
    storage = f"sqlite:///{tmp_path}/g.db"
    stop_in_first_epoch(monkeypatch, "sigterm")
    with pytest.raises(Preempted):
        run_study(spec, storage=storage, progress=False)
    monkeypatch.setattr(TrialRunner, "reporter", REPORTER)
    result = run_study(spec, storage=storage, progress=False, enqueue_missing_anchors=False)
    assert result.stopped_because == "every cell of the grid has been run"
    study = result.study
    [interrupted] = [t for t in study.trials if t.state == TrialState.FAIL]
    [put] = copies_of(study, interrupted.number)
    assert put.state == TrialState.COMPLETE and put.system_attrs["grid_id"] == interrupted.system_attrs["grid_id"]
    assert sorted(t.params["ce_weight"] for t in counted_trials(study)) == [0.25, 0.5, 1.0]


@pytest.mark.slow
def test_a_preempted_tuned_anchor_is_trained_again_as_that_tuned_anchor(tmp_path, monkeypatch, sigterm_handler):
    """The first searched trial tunes kd and is preempted: its copy tunes kd (not the role of its
    own place) and takes no place among the searched trials, so the next trial tunes sp, as it
    would have without the preemption; each anchor is tuned once."""
    search = {"tap": ["last_stage", "pool"], "terms": {"low": 1, "high": 1}}
    spec = validate_study(study_doc(search, anchors=["none", "kd", "sp"], n_trials=5,
                                    tune_anchors={"anchors": 1, "trials": 1}))
    storage = f"sqlite:///{tmp_path}/t.db"
    stopped = stop_in_first_epoch(monkeypatch, "sigterm", which=lambda draw: draw.anchor is None)
    with pytest.raises(Preempted):
        run_study(spec, storage=storage, progress=False)
    monkeypatch.setattr(TrialRunner, "reporter", REPORTER)
    study = run_study(spec, storage=storage, progress=False, enqueue_missing_anchors=False).study
    interrupted = study.trials[stopped[0]]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs[TUNED_ATTR] == "kd"
    [put] = copies_of(study, interrupted.number)
    assert put.state == TrialState.COMPLETE and put.user_attrs[TUNED_ATTR] == "kd"
    assert put.params == interrupted.params and all(name.startswith("tuned.kd.") for name in put.params)
    assert put.user_attrs["objective_config"] == interrupted.user_attrs["objective_config"]
    tuned = [(t.number, t.user_attrs.get(TUNED_ATTR)) for t in counted_trials(study) if t.number > put.number]
    assert tuned == [(put.number + 1, "sp")], [(t.number, t.state, t.user_attrs) for t in study.trials]
    assert searched_index(study, put.number + 1) == 1  # after the interrupted trial (0), not its copy too
    assert len(counted_trials(study)) == 5 and trial_counts(study)["skipped"] == 1


@pytest.mark.slow
def test_a_preempted_population_puts_back_every_drawn_member(tmp_path, monkeypatch, sigterm_handler):
    storage = f"sqlite:///{tmp_path}/p.db"
    real = population_module.run_population

    def preempted(setting, configs, **kwargs):
        report = kwargs["report"]

        def first_epoch(*args):
            go_on = report(*args)
            signal.raise_signal(signal.SIGTERM)
            return go_on

        kwargs["report"] = first_epoch
        return real(setting, configs, **kwargs)

    monkeypatch.setattr(population_module, "run_population", preempted)
    spec = validate_study(study_doc(n_trials=2))
    with pytest.raises(Preempted):
        run_study(spec, storage=storage, progress=False, population=2)
    study = optuna.load_study(study_name="tiny", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(failed) == 2 and len(waiting) == 2
    for t in failed:
        [put] = copies_of(study, t.number)
        assert put in waiting and put.params == t.params and f"as trial {put.number} " in t.user_attrs["skipped"]
    monkeypatch.setattr(population_module, "run_population", real)
    study = run_study(spec, storage=storage, progress=False, population=2, enqueue_missing_anchors=False).study
    assert sorted(t.number for t in counted_trials(study)) == sorted(t.number for t in waiting)


@pytest.mark.slow
def test_sigterm_to_a_worker_process_puts_its_searched_trial_back(tmp_path):
    """``relkd study worker`` in its own process, held in its first trial's first epoch
    (tests/held_worker.py), gets SIGTERM: it exits with 130 and its trial waits for the next worker."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml_dump(study_doc(n_trials=1)))
    storage = f"sqlite:///{tmp_path}/w.db"
    proc = subprocess.Popen([*HELD_RELKD, "study", "worker", str(path), "--storage", storage, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **hold_env("searched", tmp_path / "hold")})
    try:
        held = wait_for_held_trial("tiny", storage, proc, None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        stop([proc])
    assert proc.returncode == 130 and "relkd: interrupted" in err and "Traceback" not in err, err
    study = optuna.load_study(study_name="tiny", storage=storage)
    interrupted = study.trials[held.number]
    [put] = copies_of(study, held.number)
    assert interrupted.state == TrialState.FAIL and f"as trial {put.number} " in interrupted.user_attrs["skipped"]
    assert put.state == TrialState.WAITING and put.params == interrupted.params
    (tmp_path / "hold").unlink()
    study = run_study(validate_study(study_doc(n_trials=1)), storage=storage, progress=False,
                      enqueue_missing_anchors=False).study
    assert [t.number for t in counted_trials(study)] == [put.number]
    assert study.trials[put.number].params == interrupted.params
