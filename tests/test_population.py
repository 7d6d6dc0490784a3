"""Population training (relkd.engine.population): a member of a fused population trains what
run_trial trains alone; a pruned or non-finite member leaves without disturbing the others."""
import pytest
import torch

from relkd.engine import run_trial
from relkd.engine.population import run_population
from relkd.objective import Objective, build_objective
from relkd.presets import preset
from relkd.setting import validate_setting
from tiny import TINY_SETTING

CONFIGS = ["sp+kd", "rkd", "none"]
# vmap runs the K members' convolutions as grouped ones: the same math in another order, so the
# weights agree to float32 rounding accumulated over the run, not bit for bit.
WEIGHTS = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture
def setting(isolated):
    return validate_setting(TINY_SETTING)


def assert_same_weights(a, b):
    torch.testing.assert_close(a.state_dict(), b.state_dict(), **WEIGHTS)


def assert_same_member(got, want):
    """Same validation accuracies and epochs, same loss parts (loosely) and weights."""
    assert got["val_history"] == want["val_history"]
    assert got["epochs"] == want["epochs"]
    assert got["part_means"] == pytest.approx(want["part_means"], rel=1e-4, abs=1e-6)
    assert_same_weights(got["model"], want["model"])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
def test_member_trains_what_run_trial_trains_alone(setting, fused):
    members = run_population(setting, CONFIGS, seed=0, fused=fused, return_models=True)
    assert [m["member"] for m in members] == [0, 1, 2]
    for config, member in zip(CONFIGS, members):
        alone = run_trial(setting, config, seed=0, return_model=True)
        assert member["stopped"] is None and not member["stopped_early"]
        assert member["val_accuracy"] == alone["val_accuracy"]
        assert member["objective_config"] == build_objective(config).to_config()
        assert_same_member(member, alone)
        assert member["wall_seconds"] > 0 and member["samples_per_second"] > 0


def test_pruned_member_leaves_and_the_others_are_undisturbed(setting):
    setting = setting.with_budget(epochs=3)
    full = run_population(setting, CONFIGS, seed=0, return_models=True)
    calls = []

    def report(member, epoch, accuracy):
        calls.append((member, epoch))
        return member == 1 and epoch == 0

    pruned = run_population(setting, CONFIGS, seed=0, report=report, return_models=True)
    assert pruned[1]["stopped"] == "pruned" and pruned[1]["stopped_early"]
    assert pruned[1]["epochs"] == 1 and pruned[1]["val_history"] == full[1]["val_history"][:1]
    assert [c for c in calls if c[0] == 1] == [(1, 0)]  # reported once, then never trained again
    assert sorted(calls) == sorted([(m, e) for m in (0, 2) for e in range(3)] + [(1, 0)])
    for i in (0, 2):
        assert pruned[i]["stopped"] is None
        assert_same_member(pruned[i], full[i])


def test_report_at_the_last_epoch_is_not_a_stop(setting):
    """As in fit: a stop asked for after the last epoch stops nothing."""
    members = run_population(setting, ["none"], seed=0, report=lambda member, epoch, acc: epoch == 1)
    assert members[0]["stopped"] is None and members[0]["stopped_early"] is False and members[0]["epochs"] == 2


class ExplodingKD(Objective):
    """An objective whose KD part becomes inf from its ``after + 1``-th call on."""

    def __init__(self, config, after):
        super().__init__(config)
        self.calls, self.after = 0, after

    def __call__(self, student_taps, teacher_taps=None, targets=None):
        parts = super().__call__(student_taps, teacher_taps, targets)
        self.calls += 1
        if self.calls > self.after:
            parts["kd"] = parts["kd"] * float("inf")
            parts["kd.weighted"] = parts["kd.weighted"] * float("inf")
            parts["total"] = parts["ce.weighted"] + parts["kd.weighted"]
        return parts


def test_non_finite_member_leaves_with_its_reason(setting):
    reference = run_population(setting, ["sp+kd", "none"], seed=0, return_models=True)
    members = run_population(setting, ["sp+kd", ExplodingKD(preset("kd"), after=3), "none"], seed=0,
                             return_models=True)
    bad = members[1]
    assert bad["stopped"] == "non-finite: kd" and bad["stopped_early"]
    assert "'kd'" in bad["error"] and "step 4" in bad["error"]
    assert bad["epochs"] == 0 and bad["val_accuracy"] is None
    for got, want in zip((members[0], members[2]), reference):
        assert got["stopped"] is None
        assert_same_member(got, want)


def test_every_member_leaving_ends_the_population(setting):
    members = run_population(setting, [ExplodingKD(preset("kd"), after=0)], seed=0)
    assert members[0]["stopped"] == "non-finite: kd" and members[0]["epochs"] == 0
    assert run_population(setting, [], seed=0) == []


def test_fused_evaluation_counts_like_evaluate(setting):
    """The vmapped evaluation (used on accelerators) gives each member's evaluate()."""
    from relkd.engine import build_model, evaluate, load_data
    from relkd.engine.population import FusedStudents

    data = load_data(setting)
    students = FusedStudents(build_model(setting.student, data, 0, torch.device("cpu")), 2, setting.budget, 10)
    with torch.no_grad():
        next(students.twin.parameters())[1].mul_(-1.0)  # make the two members differ
    loader = data.eval_loader("val", batch_size=16)
    assert students.evaluate_fused(loader) == [evaluate(students.export(k), loader) for k in range(2)]
