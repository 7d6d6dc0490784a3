"""The search space as one table of dimensions: it draws exactly what the space drew before it
became a table (tests/data/space_draws_v0.json, captured from every shipped study file with a
seeded RandomSampler and rebuilt by scripts/regenerate_golden.py; it replays with the registries
holding the names pinned in the file, so a new registry entry changes no draw), and every use of
the space reads the table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import optuna
import pytest

from relkd.analysis.choices import choice_group
from relkd.relation import AFFINITIES
from relkd.study import load_study_spec
from relkd.study import dimensions, draws
from relkd.study import space as space_module
from relkd.study.dimensions import COMPONENT, DIMENSIONS, TERM_VALUE, Dimension, names_parser
from relkd.study.space import validate_search

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "space_draws_v0.json"
BEFORE = json.loads(GOLDEN.read_text())
_script = importlib.util.spec_from_file_location("regenerate_golden", ROOT / "scripts" / "regenerate_golden.py")
regenerate_golden = importlib.util.module_from_spec(_script)
_script.loader.exec_module(regenerate_golden)


@pytest.mark.parametrize("study_file", sorted(BEFORE))
def test_every_shipped_study_draws_what_it_drew_before(study_file):
    replay(study_file)


def replay(study_file):
    """Draw with ``studies/<study_file>``'s space, the registries as pinned, what the golden file holds."""
    with regenerate_golden.pinned_registries(BEFORE[study_file]["pinned"]):
        replay_pinned(study_file)


def replay_pinned(study_file):
    before = BEFORE[study_file]
    spec = regenerate_golden.study_spec(study_file)
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


def test_the_golden_file_is_what_the_script_regenerates():
    """scripts/regenerate_golden.py rebuilds the file byte for byte (its --check passes)."""
    assert set(BEFORE) >= set(regenerate_golden.V0_STUDIES)
    assert regenerate_golden.dumps(regenerate_golden.regenerate(BEFORE)) == GOLDEN.read_text()
    assert regenerate_golden.main(["--check"]) == 0


def test_the_pins_are_todays_registries_unless_entries_were_added_since():
    """Every pinned name is still registered; and while the registries hold what was pinned, pinning them afresh
    changes nothing, so the file is what the study files draw as they are today."""
    today = regenerate_golden.registry_pins()
    repinned = regenerate_golden.regenerate(BEFORE, repin=True)
    for study_file, before in BEFORE.items():
        assert all(set(names) <= set(today[kind]) for kind, names in before["pinned"].items()), study_file
        if before["pinned"] == today:  # nothing registered since: the replay needs no pins
            assert repinned[study_file] == before, study_file


@pytest.fixture
def throwaway_affinity(monkeypatch):
    """A non-negative affinity registered for one test: first in sorted order, so it would shift every draw of
    ``all``, and named in the advice of the non-negative rule's problems."""
    monkeypatch.setattr(AFFINITIES, "_entries", dict(AFFINITIES._entries))  # the registry as it was, afterwards

    @AFFINITIES.register("aaa_throwaway", nonnegative=True, symmetric=True, order=2)
    def aaa_throwaway(x):
        """A throw-away affinity. K = exp(-||x_i - x_j||^2)."""
        return (-(x[:, None] - x[None]).square().sum(-1)).exp()

    return "aaa_throwaway"


def test_a_new_affinity_changes_no_golden_draw(throwaway_affinity):
    study_file = "fmnist_quick.yaml"
    assert throwaway_affinity in load_study_spec(ROOT / "studies" / study_file).space.describe()["affinity"]
    for name in sorted(BEFORE):
        replay(name)
    assert throwaway_affinity in AFFINITIES  # back after the replay
    assert regenerate_golden.dumps(regenerate_golden.regenerate(BEFORE)) == GOLDEN.read_text()
    repinned = regenerate_golden.regenerate({study_file: BEFORE[study_file]}, repin=True)[study_file]
    assert throwaway_affinity in repinned["pinned"]["affinity"] and repinned["draws"] != BEFORE[study_file]["draws"]


def test_a_pinned_name_no_longer_registered_says_to_repin(monkeypatch):
    monkeypatch.setattr(AFFINITIES, "_entries", {k: v for k, v in AFFINITIES._entries.items() if k != "cosine"})
    with pytest.raises(ValueError, match=r"affinity cosine: registered when .* --repin"):
        replay("fmnist_quick.yaml")


def test_the_throwaway_affinity_is_gone_after_its_test():
    assert "aaa_throwaway" not in AFFINITIES


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
    for module in (dimensions, space_module):  # the table, and the names space.py reads it under
        monkeypatch.setattr(module, "DIMENSIONS", tuple(table))
    monkeypatch.setattr(space_module, "DEFAULT_SEARCH", dimensions.nested([(d.field, d.default) for d in table]))
    monkeypatch.setattr(dimensions, "_GROUP_PATTERNS", [(dimensions._param_pattern(d), d.group) for d in table])
    monkeypatch.setattr(draws, "validate_config", lambda config: config)  # 'mix' is not an objective field
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
