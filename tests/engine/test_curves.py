"""relkd.engine.curves: every run keeps one point per epoch of each loss part (raw and
weighted), the learning rate, validation accuracy and samples/s, consistent with the run's
own summaries (its per-epoch accuracies and its whole-run part means)."""
import math

import pytest

from relkd.engine import run_population, run_trial
from relkd.engine.curves import scalars
from relkd.objective import build_objective
from relkd.setting import validate_setting
from tiny import TINY_SETTING

KD = {"relkd_config": 1, "ce_weight": 0.25, "kd": {"weight": 0.75, "temperature": 4.0},
      "terms": [{"name": "rel", "tap": "pool", "affinity": {"name": "cosine"}, "normalisation": {"name": "none"},
                 "loss": {"name": "mse"}, "weight": 2.0}]}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))


def setting(epochs=3, schedule="cosine"):
    return validate_setting({**TINY_SETTING, "budget": {"epochs": epochs, "lr": 0.05, "schedule": schedule}})


def test_a_run_has_one_point_per_epoch_that_agrees_with_its_summaries():
    s = setting()
    result = run_trial(s, KD)
    curves = result.curves
    assert [p["epoch"] for p in curves] == [1, 2, 3]
    assert [p["val_accuracy"] for p in curves] == result.val_history
    names = set(build_objective(KD).part_names)
    assert names == {"ce", "kd", "rel"}
    for p in curves:
        assert set(p["parts"]) == set(p["weighted"]) == names
        assert p["samples_per_second"] > 0
        assert p["weighted"]["ce"] == pytest.approx(0.25 * p["parts"]["ce"], rel=1e-5)
        assert p["weighted"]["rel"] == pytest.approx(2.0 * p["parts"]["rel"], rel=1e-5)
    # every epoch has as many steps, so the whole run's mean is the mean of the epochs' means
    for name in names:
        assert result.part_means[name] == pytest.approx(sum(p["parts"][name] for p in curves) / 3, rel=1e-5)
    assert curves[0]["parts"]["ce"] != curves[-1]["parts"]["ce"]  # a curve, not the run's mean three times
    # the learning rate at each epoch's first step: the cosine schedule over 3 epochs of equal steps
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert [p["lr"] for p in curves] == pytest.approx(expected, rel=1e-6)


def test_a_run_that_evaluates_only_at_the_end_still_has_a_point_per_epoch():
    result = run_trial(setting(epochs=2), "none", every_epoch=False)
    assert [p["epoch"] for p in result.curves] == [1, 2]
    assert "val_accuracy" not in result.curves[0]
    assert result.curves[1]["val_accuracy"] == result.val_accuracy
    assert set(scalars(result.curves[0])) == {"lr", "samples_per_second", "loss/ce", "loss/ce.weighted"}


def test_a_pruned_run_has_the_points_of_the_epochs_it_trained():
    result = run_trial(setting(epochs=3), "kd", report=lambda epoch, acc: epoch == 1)
    assert result.stopped_early and [p["epoch"] for p in result.curves] == [1, 2]


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_each_member_of_a_population_has_its_own_curves(engine):
    results = run_population(setting(epochs=2), [KD, "none"], engine=engine)
    for r in results:
        assert [p["val_accuracy"] for p in r.curves] == r.val_history
        for name, mean in r.part_means.items():
            assert mean == pytest.approx(sum(p["parts"][name] for p in r.curves) / 2, rel=1e-5)
    assert set(results[0].curves[0]["parts"]) == {"ce", "kd", "rel"}
    assert set(results[1].curves[0]["parts"]) == {"ce"}
    assert [p["lr"] for p in results[0].curves] == [p["lr"] for p in results[1].curves]  # one schedule


def test_the_curves_match_a_single_run_in_a_population_of_one():
    alone = run_trial(setting(epochs=2), KD)
    member, = run_population(setting(epochs=2), [KD], engine="loop")
    for a, m in zip(alone.curves, member.curves):
        assert a["lr"] == m["lr"] and a["val_accuracy"] == pytest.approx(m["val_accuracy"])
        assert a["parts"] == pytest.approx(m["parts"], rel=1e-4)
