"""relkd.study.opening: a study created with its anchors and setting, or resumed only with the same setting."""
import copy

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers import RandomSampler

from relkd.results.record import SETTING_ATTR, StudyMismatchError
from relkd.study.opening import enqueue_anchors, open_study
from relkd.study.spec import validate_study
from tiny import TINY_SETTING

pytestmark = pytest.mark.usefixtures("isolated")

DOCUMENT = {**TINY_SETTING, "search": {"tap": ["last_stage", "pool"]},
            "optuna": {"study_name": "opening", "n_trials": 4, "anchors": ["none", "kd"]}}


def spec_of(document):
    return validate_study(copy.deepcopy(document))


def test_a_new_study_gets_its_anchors_and_setting_and_resuming_adds_no_anchors(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study, got_url, created = open_study(spec_of(DOCUMENT), url)
    assert created and got_url == url and SETTING_ATTR in study.user_attrs
    assert [t.user_attrs["anchor"] for t in study.trials] == ["none", "kd"]
    again, _, created = open_study(spec_of(DOCUMENT), url, enqueue_missing_anchors=True)
    assert not created and len(again.trials) == 2  # both anchors still waiting: none enqueued twice
    enqueue_anchors(again, spec_of(DOCUMENT))
    assert len(again.trials) == 2


def test_resuming_with_another_setting_names_what_differs(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    open_study(spec_of(DOCUMENT), url)
    other = copy.deepcopy(DOCUMENT)
    other["budget"] = {**other["budget"], "epochs": 3}
    with pytest.raises(StudyMismatchError, match="study 'opening' .* was created with a different setting.*epochs"):
        open_study(spec_of(other), url)
    with pytest.raises(StudyMismatchError, match="checkpoint sha256 None in the study, abc here"):
        open_study(spec_of(DOCUMENT), url, inits={"student.init": "abc"})


def first_draw(study):
    """The first value the study's sampler draws for a fresh parameter (the sampler's own sequence)."""
    return study.sampler.sample_independent(study, study.ask(), "x", FloatDistribution(0.0, 1.0))


def test_processes_that_join_a_study_do_not_replay_its_creators_draws(tmp_path, monkeypatch):
    import relkd.study.opening as opening

    doc = copy.deepcopy(DOCUMENT)
    doc["optuna"]["sampler"] = {"name": "random"}
    url = f"sqlite:///{tmp_path / 'o.db'}"
    creator, _, created = open_study(spec_of(doc), url)
    assert created and first_draw(creator) == first_draw(optuna.create_study(sampler=RandomSampler(seed=0)))
    draws = {}
    for worker in ("host-a:1", "host-b:1"):  # two workers joining at once: same trials, other processes
        monkeypatch.setattr(opening, "WORKER", worker)
        study, _, _ = open_study(spec_of(doc), url)
        draws[worker] = first_draw(study)
    assert len(set(draws.values())) == 2 and first_draw(creator) not in draws.values()
    # relkd study run resumes deterministically from the study's state: the same state, the same draws
    first, second = (open_study(spec_of(doc), url, enqueue_missing_anchors=True)[0] for _ in range(2))
    assert first_draw(first) == first_draw(second)
    assert first_draw(first) not in draws.values()
