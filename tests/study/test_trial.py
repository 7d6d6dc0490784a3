"""relkd.study.trial's public names: TrialRunner, and the old name kept for one release."""
import pytest

from relkd.study import trial


def test_the_old_name_of_the_trial_runner_still_works_and_warns():
    with pytest.warns(DeprecationWarning, match="TrialObjective is deprecated; use TrialRunner"):
        assert trial.TrialObjective is trial.TrialRunner
    with pytest.raises(AttributeError, match="has no attribute 'TrialObjectives'"):
        trial.TrialObjectives  # noqa: B018
