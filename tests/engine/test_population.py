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
# vmap and the fold run the K members' convolutions as grouped ones: the same math in another
# order, so the weights agree to float32 rounding accumulated over the run, not bit for bit.
WEIGHTS = {"rtol": 1e-4, "atol": 5e-5}


@pytest.fixture
def setting(isolated):
    return validate_setting(TINY_SETTING)


def assert_same_weights(a, b):
    torch.testing.assert_close(a.state_dict(), b.state_dict(), **WEIGHTS)


def assert_same_member(got, want):
    """Same validation accuracies and epochs, same loss parts (loosely) and weights."""
    assert got.val_history == want.val_history
    assert got.epochs == want.epochs
    assert got.part_means == pytest.approx(want.part_means, rel=1e-4, abs=1e-6)
    assert_same_weights(got.model, want.model)


# sp+kd's SP weight (3000) makes steps of about 0.2 in the first convolution's weights: over the
# run that amplifies the grouped convolution's backward rounding (1e-5 of the gradient, see
# test_a_folded_step_is_each_members_step) to 1e-2 in the weights, with the same accuracies. The
# folded trajectories are compared on the other presets, and its steps on sp+kd.
ENGINE_CONFIGS = {"fold": ["kd", "rkd", "none"], "vmap": CONFIGS, "loop": CONFIGS}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fold", "vmap", "loop"])
def test_member_trains_what_run_trial_trains_alone(setting, engine):
    configs = ENGINE_CONFIGS[engine]
    members = run_population(setting, configs, seed=0, engine=engine, return_models=True)
    assert [m.member for m in members] == [0, 1, 2]
    for config, member in zip(configs, members):
        alone = run_trial(setting, config, seed=0, return_model=True)
        assert member.stopped is None and not member.stopped_early
        assert member.val_accuracy == alone.val_accuracy
        assert member.objective_config == build_objective(config).to_config()
        assert_same_member(member, alone)
        assert member.wall_seconds > 0 and member.samples_per_second > 0


def test_pruned_member_leaves_and_the_others_are_undisturbed(setting):
    setting = setting.with_budget(epochs=3)
    full = run_population(setting, CONFIGS, seed=0, return_models=True)
    calls = []

    def report(member, epoch, accuracy):
        calls.append((member, epoch))
        return member == 1 and epoch == 0

    pruned = run_population(setting, CONFIGS, seed=0, report=report, return_models=True)
    assert pruned[1].stopped == "pruned" and pruned[1].stopped_early
    assert pruned[1].epochs == 1 and pruned[1].val_history == full[1].val_history[:1]
    assert [c for c in calls if c[0] == 1] == [(1, 0)]  # reported once, then never trained again
    assert sorted(calls) == sorted([(m, e) for m in (0, 2) for e in range(3)] + [(1, 0)])
    for i in (0, 2):
        assert pruned[i].stopped is None
        assert_same_member(pruned[i], full[i])


def test_report_at_the_last_epoch_is_not_a_stop(setting):
    """As in fit: a stop asked for after the last epoch stops nothing."""
    members = run_population(setting, ["none"], seed=0, report=lambda member, epoch, acc: epoch == 1)
    assert members[0].stopped is None and members[0].stopped_early is False and members[0].epochs == 2


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


@pytest.mark.slow
def test_non_finite_member_leaves_with_its_reason(setting):
    reference = run_population(setting, ["sp+kd", "none"], seed=0, return_models=True)
    members = run_population(setting, ["sp+kd", ExplodingKD(preset("kd"), after=3), "none"], seed=0,
                             return_models=True)
    bad = members[1]
    assert bad.stopped == "non-finite: kd" and bad.stopped_early
    assert "'kd'" in bad.error and "step 4" in bad.error
    assert bad.epochs == 0 and bad.val_accuracy is None
    for got, want in zip((members[0], members[2]), reference):
        assert got.stopped is None
        assert_same_member(got, want)


def test_every_member_leaving_ends_the_population(setting):
    members = run_population(setting, [ExplodingKD(preset("kd"), after=0)], seed=0)
    assert members[0].stopped == "non-finite: kd" and members[0].epochs == 0
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


@pytest.mark.slow
def test_a_folded_step_is_each_members_step(setting):
    """One batch of sp+kd: every folded member's gradient is the model's alone, to float32 rounding."""
    import copy

    from relkd.engine import build_model, get_teacher, load_data
    from relkd.engine.fold import FoldedStudents

    data = load_data(setting)
    teacher = get_teacher(setting)
    template = build_model(setting.student, data, 0, torch.device("cpu"))
    objective = build_objective(preset("sp+kd"))
    x, y = next(iter(data.train_loader(32, torch.device("cpu"), seed=0, augment=False, shuffle=False)))
    with torch.no_grad():
        teacher_taps = teacher.model(x, taps=objective.taps)
    alone = copy.deepcopy(template).train()
    objective(alone(x, taps=objective.taps), teacher_taps, y)["total"].backward()
    students = FoldedStudents(template, 3, setting.budget, 10)
    sum(objective(taps, teacher_taps, y)["total"] for taps in students.forward(x, objective.taps)).backward()
    for name, param in students.net.named_parameters():
        want = dict(alone.named_parameters())[name].grad
        for member in param.grad.view(3, -1):
            torch.testing.assert_close(member, want.flatten(), rtol=1e-5, atol=1e-4 * float(want.abs().max()))


def test_auto_folds_on_an_accelerator_when_the_student_folds(setting, monkeypatch):
    from relkd.engine import build_model, load_data, population
    from relkd.engine.fold import FoldedStudents

    monkeypatch.setattr(population, "_on_cpu", lambda model: False)
    template = build_model(setting.student, load_data(setting), 0, torch.device("cpu"))
    assert isinstance(population.make_students("auto", template, 2, setting.budget, 10), FoldedStudents)


def test_folded_evaluation_and_export_are_each_members(setting):
    from relkd.engine import build_model, evaluate, load_data
    from relkd.engine.fold import FoldedStudents

    data = load_data(setting)
    template = build_model(setting.student, data, 0, torch.device("cpu"))
    students = FoldedStudents(template, 3, setting.budget, 10)
    with torch.no_grad():  # make the members differ: member 1's first convolution changes sign
        conv = students.net.net.stages.stage1[0][0]
        conv.weight[4:8].mul_(-1.0)
    loader = data.eval_loader("val", batch_size=16)
    assert students.evaluate(loader) == [evaluate(students.export(k), loader) for k in range(3)]
    torch.testing.assert_close(students.export(0).state_dict(), template.state_dict())
    students.keep([1, 2])  # member 1 is now the first
    assert students.count == 2 and students.evaluate(loader)[0] == evaluate(students.export(0), loader)
    assert torch.equal(students.export(0).net.stages.stage1[0][0].weight, -template.net.stages.stage1[0][0].weight)


class ChannelMixer(torch.nn.Module):
    """A network whose forward averages over channels between two convolutions."""

    def __init__(self):
        super().__init__()
        from torch import nn

        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 10)

    def forward(self, x):
        x = self.conv1(x).mean(1, keepdim=True)  # every channel of the sample, so every member's when folded
        return self.fc(torch.flatten(self.pool(self.conv2(x)), 1))


def test_a_model_that_does_not_fold_is_refused_and_auto_takes_vmap(setting, monkeypatch):
    from relkd.engine import population
    from relkd.engine.fold import FoldedStudents, FoldError
    from relkd.engine.population import FusedStudents, LoopStudents, make_students
    from relkd.models import TapPoints, TappedModel

    template = TappedModel(ChannelMixer(), TapPoints(stages=("conv1", "conv2"), classifier="fc"),
                           model_name="mixer", input_size=(1, 28, 28))
    with pytest.raises(FoldError, match="'mixer' does not fold"):
        FoldedStudents(template, 2, setting.budget, 10)
    assert isinstance(make_students("auto", template, 2, setting.budget, 10), LoopStudents)  # the CPU's fastest
    monkeypatch.setattr(population, "_on_cpu", lambda model: False)  # as on an accelerator
    assert isinstance(make_students("auto", template, 2, setting.budget, 10), FusedStudents)
    with pytest.raises(FoldError):
        make_students("fold", template, 2, setting.budget, 10)
    with pytest.raises(ValueError, match="engine: expected one of auto, fold, vmap, loop"):
        make_students("grouped", template, 2, setting.budget, 10)


def test_frozen_stages_stay_frozen_when_folded(setting):
    from relkd.engine import build_model, load_data
    from relkd.engine.fold import FoldedStudents

    data = load_data(setting)
    template = build_model(setting.student, data, 0, torch.device("cpu"))
    for p in template.net.stages.stage1.parameters():
        p.requires_grad_(False)
    students = FoldedStudents(template, 2, setting.budget, 10)
    assert not any(p.requires_grad for p in students.net.net.stages.stage1.parameters())
    assert all(p.requires_grad for p in students.net.net.fc.parameters())


@pytest.mark.slow
def test_the_gpu_benchmark_runs_end_to_end(tmp_path):
    """benchmarks/gpu.py, on the CPU with synthetic data: every K of the table measured, its JSON written."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RELKD_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--pairs", "quick", "--ks", "2",
                           "--data", "synthetic", "--subset", "100", "--teacher-epochs", "1", "--out",
                           str(tmp_path / "out")], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| cnn_small -> cnn_tiny | synthetic quick-shaped | 2 |" in done.stdout
    (file,) = (tmp_path / "out").glob("gpu_*.json")
    rows = json.loads(file.read_text())["rows"]
    assert [r["k"] for r in rows] == [1, 2] and rows[0]["ratio"] == 1.0
    assert all(r["trials_per_hour"] > 0 and r["samples_per_second"] > 0 and len(r["val_accuracy"]) == r["k"]
               for r in rows)
