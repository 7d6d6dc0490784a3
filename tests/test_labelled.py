"""Few labels (``data.labelled``): only some of the student's training samples keep their labels,
CE learns from those, KD and the relation terms from every sample; the teacher keeps every
label (synthetic data, tiny models)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from relkd.data import DataFieldError, labelled_positions, load_dataset
from relkd.engine import load_data, run_trial
from relkd.fields import ConfigError
from relkd.objective import build_objective, labelled_cross_entropy
from relkd.setting import validate_setting
from tiny import TINY_SETTING

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def test_labelled_positions_are_stratified_deterministic_and_grow_as_supersets():
    labels = torch.arange(300) % 3
    labels[:60] = 0  # imbalanced: class 0 has 140 samples, classes 1 and 2 80 each
    few = labelled_positions(labels, 30, split_seed=4)
    assert torch.equal(few, labelled_positions(labels, 30, split_seed=4))
    assert not torch.equal(few, labelled_positions(labels, 30, split_seed=5))
    assert torch.bincount(labels[few]).tolist() == [14, 8, 8]  # in proportion to the classes' sizes
    more = labelled_positions(labels, 90, split_seed=4)
    assert set(few.tolist()) <= set(more.tolist())
    assert torch.equal(few, torch.sort(few).values) and few.unique().numel() == 30


def test_every_class_keeps_a_label_even_when_its_share_rounds_to_none():
    labels = torch.cat([torch.zeros(200, dtype=torch.int64), torch.ones(2, dtype=torch.int64),
                        torch.full((2,), 2)])
    kept = labels[labelled_positions(labels, 3)]
    assert torch.bincount(kept, minlength=3).tolist() == [1, 1, 1]
    assert torch.bincount(labels[labelled_positions(labels, 10)]).tolist() == [8, 1, 1]


@pytest.mark.parametrize("labelled, words", [(0, "positive integer"), (True, "positive integer"),
                                             (2, "between the 3 classes"), (301, "its 300 samples")])
def test_bad_numbers_of_labels_name_the_field_and_the_range(labelled, words):
    with pytest.raises(DataFieldError, match=words) as err:
        labelled_positions(torch.arange(300) % 3, labelled)
    assert err.value.field == "labelled"


def test_a_dataset_with_few_labels_marks_the_others_minus_one_and_leaves_val_and_test_alone():
    full = load_dataset("synthetic", train_size=400, test_size=60, train_subset=200)
    few = load_dataset("synthetic", train_size=400, test_size=60, train_subset=200, labelled=40)
    assert torch.equal(few.train_images, full.train_images)
    kept = few.train_labels >= 0
    assert int(kept.sum()) == 40 and bool((few.train_labels[~kept] == -1).all())
    assert torch.equal(few.train_labels[kept], full.train_labels[kept])
    assert torch.equal(few.val_labels, full.val_labels) and torch.equal(few.test_labels, full.test_labels)
    assert few.fingerprint() != full.fingerprint()
    assert "(40 labelled)" in few.summary()


def test_cross_entropy_over_the_labelled_samples_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g, requires_grad=True)
    targets = torch.randint(5, (16,), generator=g)
    every = labelled_cross_entropy(logits, targets)
    assert torch.equal(every, F.cross_entropy(logits, targets))  # bit for bit: old runs repeat
    assert torch.equal(torch.autograd.grad(every, logits)[0],
                       torch.autograd.grad(F.cross_entropy(logits, targets), logits)[0])
    some = targets.clone()
    some[::2] = -1
    value = labelled_cross_entropy(logits, some)
    assert torch.allclose(value, F.cross_entropy(logits[1::2], targets[1::2]))
    grad = torch.autograd.grad(value, logits)[0]
    assert bool((grad[::2] == 0).all()) and bool((grad[1::2] != 0).any())
    none = labelled_cross_entropy(logits, torch.full_like(targets, -1))
    assert float(none.detach()) == 0.0 and float(torch.autograd.grad(none, logits)[0].abs().sum()) == 0.0


def test_kd_still_teaches_on_the_unlabelled_samples():
    objective = build_objective("kd")
    g = torch.Generator().manual_seed(1)
    s = torch.randn(8, 4, generator=g, requires_grad=True)
    t = torch.randn(8, 4, generator=g)
    targets = torch.full((8,), -1)
    targets[0] = 2
    parts = objective({"logits": s}, {"logits": t}, targets)
    grad = torch.autograd.grad(parts["total"], s)[0]
    assert bool((grad[1:].abs().sum(1) > 0).all())  # KD's gradient reaches every unlabelled sample
    assert torch.isfinite(parts["ce"])


def few_labels(labelled, **data):
    doc = copy.deepcopy(TINY_SETTING)
    doc["data"].update(labelled=labelled, **data)
    return doc


def test_the_setting_validates_labelled_and_writes_it_only_when_set():
    assert validate_setting(few_labels(50)).data.labelled == 50
    assert validate_setting(few_labels(50)).to_dict()["data"]["labelled"] == 50
    assert "labelled" not in validate_setting(copy.deepcopy(TINY_SETTING)).to_dict()["data"]
    with pytest.raises(ConfigError, match="data.labelled"):
        validate_setting(few_labels(0))
    with pytest.raises(ConfigError, match=r"data.labelled: 500 labelled samples are more than data.train_subset's 100"):
        validate_setting(few_labels(500, train_subset=100))
    with pytest.raises(ConfigError, match=r"data.labelled: labelled=2 must be between the 10 classes"):
        load_data(validate_setting(few_labels(2)))


def test_runs_with_few_labels_train_the_student_on_them_and_the_teacher_on_every_label():
    setting = validate_setting(few_labels(20))
    assert load_data(setting, subset=False).labelled is None
    assert bool((load_data(setting, subset=False).train_labels >= 0).all())
    student = load_data(setting)
    assert int((student.train_labels >= 0).sum()) == 20
    kd = run_trial(setting, "kd", seed=0)
    none = run_trial(setting, "none", seed=0)
    assert 0 <= none.val_accuracy <= 1 and 0 <= kd.val_accuracy <= 1
    assert kd.part_means["kd"] > 0 and none.part_means["ce"] > 0
    # the labels are part of what a run sees: all labels train another student than 20 of them
    every = run_trial(validate_setting(copy.deepcopy(TINY_SETTING)), "none", seed=0)
    assert every.val_history != none.val_history or every.part_means != none.part_means


def test_ce_alone_trains_on_the_labelled_samples_only_for_as_many_steps_as_distillation(monkeypatch):
    """With data.labelled, ``none`` sees only the labelled images (what the unlabelled ones hold
    changes nothing for it, but does for KD), and takes as many optimizer steps as a run over
    every sample."""
    import dataclasses

    import relkd.engine.runs as runs
    import relkd.engine.training as training

    setting = validate_setting(few_labels(20))
    data = load_data(setting)
    unlabelled = data.train_labels < 0
    noisy = dataclasses.replace(data, train_images=data.train_images.masked_fill(unlabelled[:, None, None, None], 255),
                                _fingerprint=None)
    steps, real_step = [], training.optimizer_step
    monkeypatch.setattr(training, "optimizer_step", lambda *a: steps.append(1) or real_step(*a))

    def trained(config, images):
        monkeypatch.setattr(runs, "load_data", lambda s: images)
        steps.clear()
        result = run_trial(setting, config, seed=0, teacher_cache=False)
        return result.val_history, len(steps)

    none, none_steps = trained("none", data)
    assert trained("none", noisy) == (none, none_steps)
    kd_noisy = trained("kd", noisy)[0]  # trains the teacher first (its steps are counted too)
    kd, kd_steps = trained("kd", data)
    assert kd_noisy != kd
    assert none_steps == kd_steps == setting.budget.epochs * (data.train_labels.numel() // 32)


def test_populations_leave_ce_alone_with_few_labels_to_single_runs():
    from relkd.engine import run_population

    with pytest.raises(ValueError, match=r"with data.labelled the members \[0\] without a teacher"):
        run_population(validate_setting(few_labels(20)), ["none", "kd"])


def test_a_population_asked_for_with_few_labels_is_an_error_naming_where_it_came_from(tmp_path, monkeypatch):
    from relkd.study.spec import validate_study
    from relkd.study.worker import run_study

    study = {**few_labels(20), "name": "few", "optuna": {"population": 4, "n_trials": 1}}
    with pytest.raises(ConfigError, match=r"optuna.population: a study with data.labelled trains one trial at a time"):
        validate_study(copy.deepcopy(study))
    study["optuna"]["population"] = "auto"
    spec = validate_study(copy.deepcopy(study))
    for flag, env, field in ((3, None, "population: 3"), (None, "2", "RELKD_POPULATION: 2")):
        if env is not None:
            monkeypatch.setenv("RELKD_POPULATION", env)
        with pytest.raises(ValueError, match=rf"{field}: a study with data.labelled trains one trial at a time"):
            run_study(spec, storage=f"sqlite:///{tmp_path}/few.db", population=flag, progress=False)
    assert not (tmp_path / "few.db").exists()  # refused before the study was created
