"""The search space as one table of dimensions: it draws exactly what the space drew before it
became a table (tests/data/space_draws_v0.json, captured from every shipped study file with a
seeded RandomSampler), and every use of the space reads the table."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from relkd.analysis.choices import choice_group
from relkd.study import load_study_spec
from relkd.study import space as space_module
from relkd.study.space import COMPONENT, DIMENSIONS, TERM_VALUE, Dimension, names_parser, validate_search

ROOT = Path(__file__).resolve().parents[1]
BEFORE = json.loads((Path(__file__).parent / "data" / "space_draws_v0.json").read_text())


@pytest.mark.parametrize("study_file", sorted(BEFORE))
def test_every_shipped_study_draws_what_it_drew_before(study_file):
    spec = load_study_spec(ROOT / "studies" / study_file)
    before = BEFORE[study_file]
    assert spec.space.describe() == before["describe"]
    if before["grid"] is not None:
        assert spec.space.grid() == before["grid"]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7), direction="maximize")
    for draw in before["draws"]:
        trial = study.ask()
        config, problems = spec.space.sample(trial)
        assert trial.params == draw["params"]
        assert {k: optuna.distributions.distribution_to_json(v) for k, v in trial.distributions.items()} \
            == draw["distributions"]
        assert (config, problems) == (draw["config"], draw["problems"])
        if not problems:
            assert spec.space.params_for(config) == {k: v for k, v in trial.params.items()}
        study.tell(trial, 0.0)


def test_params_for_inverts_sample_over_many_draws():
    space = validate_search({"terms": {"low": 0, "high": 3}, "view": ["avgpool", "maxpool"]},
                            taps=["stage2", "last_stage", "pool"])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    valid = 0
    for _ in range(200):
        trial = study.ask()
        config, problems = space.sample(trial)
        if not problems:
            valid += 1
            assert space.params_for(config) == trial.params
        study.tell(trial, 0.0)
    assert valid > 20


def test_one_new_dimension_reaches_validation_sampling_inverse_grid_description_and_groups(monkeypatch):
    """Adding a search field is one entry of DIMENSIONS: here a per-term 'mix' value."""
    mix = Dimension("mix", "avg", names_parser(("avg", "max"), "mix"), "{term}.mix", "view", role=TERM_VALUE)
    table = list(DIMENSIONS)
    table.insert(2, mix)
    monkeypatch.setattr(space_module, "DIMENSIONS", tuple(table))
    monkeypatch.setattr(space_module, "DEFAULT_SEARCH", space_module._nested([(d.field, d.default) for d in table]))
    monkeypatch.setattr(space_module, "_GROUP_PATTERNS", [(space_module._param_pattern(d), d.group) for d in table])
    monkeypatch.setattr(space_module, "validate_config", lambda config: config)  # 'mix' is not an objective field
    space = space_module.validate_search({"terms": 1, "mix": ["avg", "max"], "component_params": "default",
                                          "weight": [1.0, 10.0], "kd": False, "ce_weight": 1.0,
                                          "affinity": "cosine", "normalisation": "mean", "loss": "mse"})
    assert space.describe()["mix"] == ["avg", "max"]
    with pytest.raises(space_module.ConfigError, match=r"search.mix: unknown mix 'sum'"):
        space_module.validate_search({"mix": "sum"})
    assert "term0.mix" in space.grid()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    config, problems = space.sample(trial)
    assert not problems and config["terms"][0]["mix"] in ("avg", "max") and "term0.mix" in trial.params
    assert space.params_for(config)["term0.mix"] == config["terms"][0]["mix"]
    assert space_module.choice_group("term3.mix") == "view"


@pytest.mark.parametrize("dim", DIMENSIONS, ids=lambda d: d.field)
def test_every_dimension_names_its_group_for_the_analysis(dim):
    name = dim.param_name(0, "rbf", "gamma")
    assert choice_group(name) == dim.group


def test_components_read_their_registry():
    components = [d for d in DIMENSIONS if d.role == COMPONENT]
    assert [d.field for d in components] == ["affinity", "normalisation", "loss", "method"]
    assert all(d.registry.kind.split()[-1] == d.field for d in components)  # "feature method" for method
