"""relkd.engine.teacher: a teacher trained once into the store, or used as its checkpoint holds
it (``teacher.epochs: 0``)."""
import json

import pytest
import torch

from relkd.engine import TeacherOutputs, get_teacher, run_trial
from relkd.fields import ConfigError
from relkd.files import file_sha256
from relkd.setting import validate_setting
from tiny import TINY_SETTING


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))
    TeacherOutputs.clear()


def as_it_is(init, **teacher):
    doc = json.loads(json.dumps(TINY_SETTING))
    doc["teacher"] = {"model": "cnn_tiny", "params": {"width": 8}, "init": init, "epochs": 0, **teacher}
    doc["budget"]["epochs"] = 1
    return validate_setting(doc)


@pytest.fixture
def checkpoint(tmp_path):
    """A trained teacher's weights saved as a DataParallel model's, wrapped as RepDistiller and
    Lightning save them: ``{'state_dict': {'module.…': tensor}}``."""
    trained = get_teacher(validate_setting(TINY_SETTING))
    state = {k: v.detach().cpu().clone() for k, v in trained.model.net.state_dict().items()}
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 240}, path)
    return path, state, trained


def test_a_teacher_with_no_epochs_is_its_checkpoint_evaluated_not_trained(checkpoint, tmp_path):
    path, state, trained = checkpoint
    before = file_sha256(path)
    teacher = get_teacher(as_it_is(str(path)))
    assert teacher.built and teacher.meta["train_seconds"] == 0.0 and teacher.meta["init_sha256"] == before
    got = teacher.model.net.state_dict()
    assert all(torch.equal(got[k].cpu(), v) for k, v in state.items())  # head included: nothing trained or replaced
    # the same weights on the same splits: the accuracies the trained teacher had
    assert teacher.val_accuracy == trained.val_accuracy and teacher.test_accuracy == trained.test_accuracy
    result = run_trial(as_it_is(str(path)), "kd", teacher=teacher)
    assert 0.0 <= result.val_accuracy <= 1.0
    after = teacher.model.net.state_dict()
    assert all(torch.equal(after[k].cpu(), v) for k, v in state.items()) and file_sha256(path) == before
    again = get_teacher(as_it_is(str(path)))  # cached under the file's content
    assert not again.built and again.key == teacher.key


def test_a_teacher_with_no_epochs_needs_a_checkpoint_with_its_head():
    with pytest.raises(ConfigError, match=r"teacher.epochs: 0 trains nothing, so the teacher must be a trained "
                                          r"checkpoint: give teacher.init"):
        validate_setting({**TINY_SETTING, "teacher": {"model": "cnn_tiny", "epochs": 0}})
    with pytest.raises(ConfigError, match=r"teacher.init.head: teacher.epochs 0 uses the file's classifier as it "
                                          r"is, so head must be keep \(or left out\), got 'replace'"):
        as_it_is({"path": "teacher.pth", "head": "replace"})
    with pytest.raises(ConfigError, match=r"budget.epochs: expected an integer >= 1"):
        validate_setting({**TINY_SETTING, "budget": {"epochs": 0}})


def test_the_head_defaults_to_the_files_when_the_teacher_is_not_trained(checkpoint):
    path, _, _ = checkpoint
    assert as_it_is(str(path)).teacher.init.head == "keep"
    assert as_it_is({"path": str(path)}).teacher.init.head == "keep"
    trained = validate_setting({**TINY_SETTING, "teacher": {**TINY_SETTING["teacher"], "init": str(path)}})
    assert trained.teacher.init.head == "replace"  # a teacher that trains gets a new head, as before


def test_a_safetensors_teacher_loads_and_bad_ones_are_refused_naming_the_field(checkpoint, tmp_path):
    from safetensors.torch import save_file

    _, state, trained = checkpoint
    good = tmp_path / "teacher.safetensors"
    save_file({f"net.{k}": v.contiguous() for k, v in state.items()}, str(good))
    teacher = get_teacher(as_it_is(str(good)))
    assert teacher.val_accuracy == trained.val_accuracy and teacher.meta["init_sha256"] == file_sha256(good)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConfigError, match=r"teacher.init: '.*garbage.safetensors' is not a safetensors file "
                                          r"safetensors can read"):
        get_teacher(as_it_is(str(garbage)))
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ConfigError, match=r"teacher.init: .*missing keys.*unexpected keys \(e.g. \['encoder.weight'\]"):
        get_teacher(as_it_is(str(other)))
