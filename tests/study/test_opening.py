"""relkd.study.opening: a study created with its anchors and setting, or resumed only with the same setting."""
import copy

import pytest

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
