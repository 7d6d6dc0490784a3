"""Importance over pruned trials: every searched trial that trained counts at the highest rung it
reached (score = rung index + accuracy there), built on hand-made in-memory studies."""
from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from relkd.analysis.importance import SCORE, rung_scores, study_importance
from relkd.results.record import LADDER_ATTR

DISTRIBUTIONS = {"c": CategoricalDistribution(["good", "bad"]), "x": FloatDistribution(0.0, 1.0)}


def _study() -> optuna.Study:
    return optuna.create_study(direction="maximize")


def _complete(study: optuna.Study, accuracies: list[float], c: str = "good", x: float = 0.5, **user_attrs) -> int:
    """A completed searched trial reporting ``accuracies`` after epochs 1, 2, ...; its number."""
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, params={"c": c, "x": x}, distributions=DISTRIBUTIONS,
        intermediate_values={i + 1: a for i, a in enumerate(accuracies)}, value=accuracies[-1],
        user_attrs=user_attrs))
    return study.trials[-1].number


def _pruned(study: optuna.Study, accuracies: list[float] | dict[int, float], c: str = "bad", x: float = 0.5,
            params: bool = True, **user_attrs) -> int:
    """A pruned trial that reported ``accuracies`` (after epochs 1, 2, ... or at the given steps); its number."""
    values = accuracies if isinstance(accuracies, dict) else {i + 1: a for i, a in enumerate(accuracies)}
    study.add_trial(create_trial(
        state=TrialState.PRUNED, params={"c": c, "x": x} if params else {},
        distributions=DISTRIBUTIONS if params else {}, intermediate_values=values, user_attrs=user_attrs))
    return study.trials[-1].number


def test_a_study_of_pruned_trials_gets_importances():
    study = _study()
    _complete(study, [0.5, 0.6, 0.7, 0.8], c="good", x=0.9)
    for i in range(6):
        _pruned(study, [0.1 + 0.05 * i] * (1 + i % 3), c="bad" if i % 2 else "good", x=0.1 * i)
    result = study_importance(study)
    assert result["trials_used"] == 7
    assert result["pruned_used"] == 6
    assert result["score"] == SCORE == "rung index + accuracy at the highest rung reached"
    assert set(result["importances"]) == {"c", "x"}
    assert sum(result["importances"].values()) == pytest.approx(1.0)


def test_too_few_trained_trials_still_raise():
    study = _study()
    _complete(study, [0.5, 0.6])
    _pruned(study, [0.3])
    _pruned(study, {}, invalid_combination=["a problem"])
    _pruned(study, {}, params=False, skipped="the study already has 2 trials")
    with pytest.raises(ValueError, match="importance needs at least 3"):
        study_importance(study)


def test_a_trial_stopped_at_a_lower_rung_scores_below_every_trial_that_went_higher():
    study = _study()
    early = _pruned(study, [0.95])  # best epoch-1 accuracy, stopped there
    later = _pruned(study, [0.05, 0.10])  # worst accuracies, but reached epoch 2
    done = _complete(study, [0.2, 0.3, 0.4])
    scores = rung_scores(study)
    assert scores[early] == pytest.approx(0.95)
    assert scores[later] == pytest.approx(1.10)
    assert scores[done] == pytest.approx(2.40)
    assert scores[early] < scores[later] < scores[done]


def test_within_a_rung_trials_rank_by_accuracy():
    study = _study()
    low = _pruned(study, [0.5, 0.2])
    high = _pruned(study, [0.1, 0.7])
    scores = rung_scores(study)
    assert scores[low] < scores[high]


def test_invalid_draws_skipped_trials_and_anchors_are_left_out():
    study = _study()
    searched = [_complete(study, [0.5, 0.6]), _pruned(study, [0.4]), _complete(study, [0.3, 0.5])]
    invalid = _pruned(study, {}, invalid_combination=["normalisation needs a distance"])
    skipped = _pruned(study, {}, params=False, skipped="the study already has 3 trials")
    study.add_trial(create_trial(state=TrialState.COMPLETE, params={}, distributions={},
                                 intermediate_values={1: 0.9, 2: 0.95}, value=0.95, user_attrs={"anchor": "kd"}))
    anchor = study.trials[-1].number
    nonfinite_early = _pruned(study, {}, pruned_reason="non-finite loss: nan at step 3")
    nonfinite_late = _pruned(study, [0.35], pruned_reason="non-finite loss: inf at step 80")
    scores = rung_scores(study)
    assert set(scores) == {*searched, nonfinite_late}
    assert not {invalid, skipped, anchor, nonfinite_early} & set(scores)
    assert scores[nonfinite_late] == pytest.approx(0.35)
    result = study_importance(study)
    assert result["trials_used"] == 4
    assert result["pruned_used"] == 2


def test_a_non_finite_accuracy_does_not_count_as_reaching_its_rung():
    study = _study()
    trial = _pruned(study, {1: 0.4, 2: math.nan}, pruned_reason="non-finite loss: nan")
    assert rung_scores(study)[trial] == pytest.approx(0.4)


def test_pruned_used_counts_the_pruned_trials_among_those_scored():
    study = _study()
    for i in range(3):
        _complete(study, [0.3, 0.4, 0.5 + 0.1 * i], x=0.2 * i)
    for i in range(4):
        _pruned(study, [0.2 + 0.05 * i] * (1 + i % 2), x=0.1 + 0.2 * i)
    for _ in range(2):
        _pruned(study, {}, invalid_combination=["no"])
    result = study_importance(study)
    assert (result["trials_used"], result["pruned_used"]) == (7, 4)


def test_rungs_come_from_the_study_ladder():
    study = _study()
    study.set_user_attr(LADDER_ATTR, {"rungs": [3, 1], "eta": 3})
    between = _pruned(study, [0.3, 0.8])  # steps 1 and 2, not 3: counts at rung 1
    top = _complete(study, [0.1, 0.2, 0.6])
    below = _pruned(study, {2: 0.9})  # no value at step 1: reached no rung
    scores = rung_scores(study)
    assert scores[between] == pytest.approx(0.3)
    assert scores[top] == pytest.approx(1.6)
    assert below not in scores
    # without the ladder every epoch is a rung
    assert rung_scores(study, rungs=[1, 2, 3])[between] == pytest.approx(1.8)


def test_explicit_rungs_override_the_ladder():
    study = _study()
    study.set_user_attr(LADDER_ATTR, {"rungs": [1, 3]})
    one = _pruned(study, [0.3])
    two = _pruned(study, [0.3, 0.8])
    three = _complete(study, [0.1, 0.2, 0.6])
    scores = rung_scores(study, rungs=[2])
    assert one not in scores
    assert scores[two] == pytest.approx(0.8)
    assert scores[three] == pytest.approx(0.2)
    assert rung_scores(study, rungs=(2, 1)) == rung_scores(study, rungs=[1, 2])
    with pytest.raises(ValueError, match="rungs"):
        rung_scores(study, rungs=[])


def test_without_a_ladder_the_rungs_are_every_epoch_seen():
    study = _study()
    short = _pruned(study, [0.9])
    long = _complete(study, [0.1, 0.2, 0.3, 0.4, 0.5])
    scores = rung_scores(study)
    assert scores == {short: pytest.approx(0.9), long: pytest.approx(4.5)}


def test_a_completed_trial_without_reports_counts_at_the_top_rung():
    study = _study()
    study.add_trial(create_trial(state=TrialState.COMPLETE, params={"c": "good", "x": 0.1},
                                 distributions=DISTRIBUTIONS, value=0.45))
    legacy = study.trials[-1].number
    reported = _complete(study, [0.2, 0.5])
    scores = rung_scores(study)
    assert scores[legacy] == pytest.approx(1.45)
    assert scores[reported] == pytest.approx(1.5)


LADDER_DISTRIBUTIONS = {"c": CategoricalDistribution(["good", "bad"]),
                        "tap": CategoricalDistribution(["a", "b", "c", "d"])}


def _ladder_study(decisive: str, n: int = 36, seed: int = 3) -> optuna.Study:
    """A study run like a ladder over rungs 1, 3, 9: the accuracy is decided by ``decisive``
    ("c": "good" always better than "bad"; "tap": "a" always better than the others), the other
    parameter is noise; the weaker trials are stopped at the lower rungs, as the ladder stops them.
    PED-ANOVA compares the top 10% of the scores (4 of 36 trials) with all: among equally good
    trials which 4 lead is chance, so the noise parameter can look important on some draws (a
    float one often does at this size, hence a categorical one); the seed is fixed (0-7 all rank
    "tap" right and most rank "c" right; 3 does both with a margin)."""
    rng = random.Random(seed)
    study = _study()
    study.set_user_attr(LADDER_ATTR, {"rungs": [1, 3, 9]})
    for i in range(n):
        params = {"c": "good" if i % 2 else "bad", "tap": rng.choice("abcd")}
        good = params["c"] == "good" if decisive == "c" else params["tap"] == "a"
        quality = (0.8 if good else 0.3) + rng.uniform(-0.05, 0.05)
        curve = {step: quality * (0.5 + 0.5 * step / 9) for step in range(1, 10)}
        stop = 9 if quality > 0.82 else 3 if good else 1  # the better trials are promoted further
        values = {step: v for step, v in curve.items() if step <= stop}
        if stop == 9:  # reached the budget
            study.add_trial(create_trial(state=TrialState.COMPLETE, params=params, distributions=LADDER_DISTRIBUTIONS,
                                         intermediate_values=values, value=values[9]))
        else:
            study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=LADDER_DISTRIBUTIONS,
                                         intermediate_values=values))
    return study


@pytest.mark.parametrize("decisive", ["c", "tap"])
def test_the_parameter_that_decides_the_score_is_the_most_important(decisive):
    study = _ladder_study(decisive)
    pruned = len(study.get_trials(states=(TrialState.PRUNED,)))
    assert pruned >= 30
    result = study_importance(study, "ped_anova")
    assert (result["trials_used"], result["pruned_used"]) == (36, pruned)
    top = next(iter(result["importances"]))
    assert top == decisive, result["importances"]
