"""The study runner by job: run_study returns and writes what the study produced, a trial
builds its objective once and passes it down, and library errors name arguments while the
command line names its flags."""
from __future__ import annotations

import pytest

from relkd.cli import main
from relkd.cli_args import as_flags
from relkd.fields import ConfigError, read_yaml_file, yaml_dump
from relkd.analysis import write_outputs
from relkd.study import run_study, validate_study
from tiny import TINY_SETTING

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

STUDY = {**TINY_SETTING, "search": {"tap": ["last_stage", "pool"]},
         "optuna": {"n_trials": 4, "anchors": ["none", "kd"], "sampler": {"name": "tpe", "n_startup_trials": 2}}}


@pytest.mark.slow
def test_run_study_from_python_writes_the_best_config_and_the_plots(isolated):
    result = write_outputs(run_study(validate_study(STUDY), progress=False))
    assert result.best_config == isolated / "runs" / "tiny" / "best.yaml"
    exported = read_yaml_file(result.best_config)
    assert exported["terms"] == result.study.best_trial.user_attrs["objective_config"]["terms"]
    assert result.plot_dir == isolated / "runs" / "tiny" / "plots"
    assert {"history.png", "marginals.svg"} <= {p.name for p in result.plots} and all(p.is_file() for p in result.plots)
    worker = run_study(validate_study({**STUDY, "optuna": {**STUDY["optuna"], "n_trials": 5}}), progress=False)
    assert worker.best_config is None and worker.plots == []


@pytest.mark.slow
def test_a_trial_builds_its_objective_once_and_the_engine_does_not_validate_it_again(monkeypatch):
    """The space's draw makes the canonical config (one validation, in space.sample), the
    trial builds the objective from it (the one build), and the engine takes the built
    objective (no third validation, no second build). The old code passed the config down,
    so the engine built and validated it again."""
    import sys

    import relkd.config as config_module
    import relkd.objective as objective_module
    from relkd.study import space as space_module
    from relkd.study import trial as trial_module

    validations, builds = [], []
    real = config_module.validate_config

    def counting(config, *args, **kwargs):
        validations.append(1)
        return real(config, *args, **kwargs)

    for name, module in list(sys.modules.items()):  # wherever relkd took the function from
        if name.startswith("relkd") and getattr(module, "validate_config", None) is real:
            monkeypatch.setattr(module, "validate_config", counting)
    real_init = objective_module.Objective.__init__
    monkeypatch.setattr(objective_module.Objective, "__init__",
                        lambda self, config: builds.append(1) or real_init(self, config))
    seen = []
    real_sample = space_module.SearchSpace.sample

    def sample(self, trial):  # the trial starts here: count from its draw
        validations.clear()
        builds.clear()
        return real_sample(self, trial)

    monkeypatch.setattr(space_module.SearchSpace, "sample", sample)
    real_run = trial_module.run_trial
    monkeypatch.setattr(trial_module, "run_trial", lambda s, objective, *a, **k: seen.append(
        (type(objective).__name__, len(validations), len(builds))) or real_run(s, objective, *a, **k))
    study = {**STUDY, "search": {"terms": 1, "tap": "pool", "view": "avgpool", "affinity": "cosine",
                                 "normalisation": "mean", "loss": "mse", "kd": False},
             "optuna": {"n_trials": 1, "anchors": [], "sampler": "random"}}
    run_study(validate_study(study), progress=False)
    assert seen == [("Objective", 2, 1)]  # drawn (validated), built once (validated) before the run
    assert (len(validations), len(builds)) == (2, 1)  # and neither again during the run


@pytest.mark.slow
def test_a_study_whose_student_starts_from_a_pretrain_source_trains_its_trials(isolated, monkeypatch):
    """The engine never trains a ``{pretrain: SOURCE.yaml}`` source itself: run_study
    resolves it to the source's checkpoint before the first trial."""
    import copy
    import json

    monkeypatch.chdir(isolated)
    source = copy.deepcopy(TINY_SETTING)
    del source["teacher"]
    source["budget"] = {"epochs": 1, "lr": 0.05}
    (isolated / "src.yaml").write_text(json.dumps(source))
    doc = copy.deepcopy(STUDY)
    doc["student"] = {**doc["student"], "init": {"pretrain": "src.yaml"}}
    doc["optuna"] = {"n_trials": 2, "anchors": ["none", "kd"], "sampler": "random"}
    result = run_study(validate_study(doc), progress=False)
    assert result.error is None and result.counts["complete"] == 2
    assert all(t.user_attrs.get("init_sha256") for t in result.study.trials)


@pytest.mark.parametrize("message, shown", [
    ("top_k: expected an integer >= 1, got 0", "--top-k: expected an integer >= 1, got 0"),
    ("seeds: expected each seed once, got [0, 0]", "--seeds: expected each seed once, got [0, 0]"),
    ("trial: study 'x' has no trial 9", "--trial: study 'x' has no trial 9"),
    ("study_name: expected a name without '/'", "--study-name: expected a name without '/'"),
    ("no study 'x': runs/x/optuna.db does not exist; run `relkd study run STUDY.yaml` first or give the storage "
     "argument", "no study 'x': runs/x/optuna.db does not exist; run `relkd study run STUDY.yaml` first or give "
     "--storage"),
    ("choose another study name (optuna.study_name or StudySpec.renamed)",
     "choose another study name (optuna.study_name or --study-name)"),
    ("trials: not an argument", "trials: not an argument"),
    ("no trial: top_k is fine here", "no trial: top_k is fine here"),  # an argument only where a message opens
])
def test_the_cli_shows_its_flags_where_the_library_names_its_arguments(message, shown):
    assert as_flags(ValueError(message)) == shown
    assert as_flags(ConfigError([message])) == message  # a file's field is no flag


@pytest.mark.slow
def test_library_errors_name_arguments_and_the_command_line_its_flags(isolated, capsys):
    from relkd.study import export_trials, load_relkd_study, load_study_spec

    with pytest.raises(ValueError, match=r"first or give the storage argument$"):
        load_relkd_study("tiny")
    assert main(["study", "status", "--study-name", "tiny"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("first or give --storage")
    result = run_study(validate_study(STUDY), progress=False)
    with pytest.raises(ValueError, match=r"^top_k: expected an integer >= 1, got 0"):
        export_trials(result.study, result.storage, isolated / "x.yaml", top_k=0)
    with pytest.raises(ValueError, match=r"^trial: study 'tiny' has no trial 99"):
        export_trials(result.study, result.storage, isolated / "x.yaml", trial=99)
    assert main(["study", "export", "--study-name", "tiny", "--out", "x.yaml", "--trial", "99"]) == 2
    assert "relkd: error: --trial: study 'tiny' has no trial 99" in capsys.readouterr().err
    study_file = isolated / "study.yaml"
    study_file.write_text(yaml_dump(STUDY))
    with pytest.raises(ValueError, match=r"^study_name: expected a name without '/'"):
        load_study_spec(study_file).renamed("../x")
    assert main(["study", "run", str(study_file), "--study-name", "../x", "--quiet"]) == 2
    assert "relkd: error: --study-name: expected a name without '/'" in capsys.readouterr().err
