"""relkd.engine.resume: a teacher's training and a pretraining run that stop after epoch 2 of 4
resume from their saved state, and end with the weights of an uninterrupted run, bit for bit
on the CPU; a state saved for another run is not resumed; the saved state goes when the run ends."""
import pytest
import torch

import relkd.engine.training as training
from relkd.cache import file_sha256
from relkd.engine import get_teacher
from relkd.engine.resume import DEFAULT_EVERY, EpochCheckpoint, save_interval
from relkd.engine.teacher import TEACHERS, teacher_key
from relkd.pretrain import PRETRAINED, get_pretrained, pretrain_key
from relkd.engine import load_data
from relkd.setting import validate_setting
from tiny import TINY_SETTING, interrupt_on_call


def tiny(epochs=4, augment=True):
    doc = {**TINY_SETTING, "teacher": {**TINY_SETTING["teacher"], "epochs": epochs, "schedule": "onecycle"},
           "budget": {"epochs": epochs, "lr": 0.05, "schedule": "cosine"}}
    doc["data"] = {**doc["data"], "augment": augment}
    return validate_setting(doc)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_equal_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def straight_then_stopped(build, tmp_path, monkeypatch):
    """``build()`` run through in one cache, then stopped in another at epoch 3's evaluation (the
    3rd call: the state after epoch 2 is saved by then); the uninterrupted result, with the
    environment left pointing at the second cache."""
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "straight"))
    straight = build()
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "resumed"))
    monkeypatch.setattr(training, "evaluate", interrupt_on_call(training.evaluate, 3))
    with pytest.raises(KeyboardInterrupt):
        build()
    monkeypatch.undo()
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "resumed"))
    return straight


@pytest.mark.parametrize("augment", [True, False])
def test_a_teacher_stopped_after_epoch_2_of_4_resumes_to_the_same_weights(tmp_path, monkeypatch, augment):
    s = tiny(augment=augment)
    straight = straight_then_stopped(lambda: get_teacher(s, checkpoint_every=2), tmp_path, monkeypatch)
    progress = TEACHERS.folder_of(teacher_key(s), s.teacher.model) / "progress.pt"
    assert progress.is_file() and torch.load(progress, weights_only=True)["epochs_done"] == 2
    calls = {"n": 0}
    original = training.evaluate

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", counted)
    resumed = get_teacher(s, checkpoint_every=2)
    assert calls["n"] == 2  # epochs 3 and 4 only
    assert resumed.key == straight.key
    assert_equal_states(weights(resumed.checkpoint), weights(straight.checkpoint))
    assert file_sha256(resumed.checkpoint) == file_sha256(straight.checkpoint)
    assert resumed.val_accuracy == straight.val_accuracy
    assert not progress.exists()  # gone once the teacher is stored


@pytest.mark.parametrize("labelled", [None, 64], ids=["all-labelled", "labelled-64"])
def test_a_pretraining_run_resumes_with_its_history_and_curves(tmp_path, monkeypatch, labelled):
    """With data.labelled, CE alone trains on the labelled samples for as many steps as an epoch
    over all: its epochs cross the loader's, and a resumed run must read on at the same batch."""
    s = tiny()
    if labelled:
        s = validate_setting({**s.to_dict(), "data": {**s.to_dict()["data"], "labelled": labelled}},
                             teacher_required=False)
    straight = straight_then_stopped(lambda: get_pretrained(s, checkpoint_every=1), tmp_path, monkeypatch)
    resumed = get_pretrained(s, checkpoint_every=1)
    assert_equal_states(weights(resumed.checkpoint), weights(straight.checkpoint))
    assert resumed.meta["val_accuracy"] == straight.meta["val_accuracy"]
    assert resumed.meta["train_seconds"] > 0
    folder = PRETRAINED.folder_of(pretrain_key(s, load_data(s)), s.student.model)
    assert not (folder / "progress.pt").exists()


def test_a_saved_state_of_another_run_or_a_damaged_one_is_not_resumed(tmp_path, caplog):
    path = tmp_path / "progress.pt"
    EpochCheckpoint(path, 1, ident="run-a").save(1, {"history": [0.5]})
    assert EpochCheckpoint(path, 1, ident="run-a").load()["history"] == [0.5]
    assert EpochCheckpoint(path, 1, ident="run-b").load() is None
    assert "another run's" in caplog.text
    path.write_bytes(b"not a checkpoint")
    assert EpochCheckpoint(path, 1, ident="run-a").load() is None
    assert "unreadable" in caplog.text


def test_when_a_state_is_saved():
    every = EpochCheckpoint(None, 2)
    assert [e for e in range(1, 7) if every.due(e, 6)] == [2, 4]  # never after the last epoch
    assert not any(EpochCheckpoint(None, 0).due(e, 6) for e in range(1, 7))


def test_the_interval_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("RELKD_CHECKPOINT_EVERY", raising=False)
    assert save_interval() == DEFAULT_EVERY and save_interval(3) == 3
    monkeypatch.setenv("RELKD_CHECKPOINT_EVERY", "0")
    assert save_interval() == 0
    monkeypatch.setenv("RELKD_CHECKPOINT_EVERY", "often")
    with pytest.raises(ValueError, match="RELKD_CHECKPOINT_EVERY: expected a whole number"):
        save_interval()
    with pytest.raises(ValueError, match="every: expected"):
        save_interval(-1)
