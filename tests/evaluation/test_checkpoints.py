"""relkd.evaluation.checkpoints: a setting's student checkpoints loaded and evaluated together."""
import json

import pytest
import torch

from relkd.engine import build_model, load_data
from relkd.evaluation.checkpoints import evaluate_checkpoints, load_student
from relkd.setting import validate_setting
from tiny import TINY_SETTING


@pytest.fixture
def student_file(isolated, tmp_path):
    setting = validate_setting(TINY_SETTING)
    model = build_model(setting.student, load_data(setting), seed=3, device=torch.device("cpu"))
    path = tmp_path / "student_seed0.pt"
    torch.save(model.net.state_dict(), path)
    return setting, model, path


def test_load_student_reads_the_weights_into_the_settings_student(student_file):
    setting, model, path = student_file
    loaded = load_student(setting, path)
    assert not loaded.training
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in model.net.state_dict().items())


def test_a_missing_or_foreign_checkpoint_names_the_file(student_file, tmp_path):
    setting, _, _ = student_file
    with pytest.raises(FileNotFoundError, match="--checkpoint .*nothing.pt: .*relkd train --out DIR"):
        load_student(setting, tmp_path / "nothing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"--checkpoint .*other.pt: expected the weights of student cnn_tiny"):
        load_student(setting, other)


def test_evaluate_checkpoints_writes_json_table_and_plot(student_file, tmp_path):
    setting, _, path = student_file
    out = tmp_path / "eval"
    results = evaluate_checkpoints(setting, {"a": path, "b": path}, out=out, with_teacher=False,
                                   degradations=["contrast"], severities=[1])
    assert results["a"] == results["b"] and "teacher_agreement" not in results["a"]
    document = json.loads((out / "evaluation.json").read_text())
    assert document["checkpoints"] == {"a": str(path), "b": str(path)} and document["split"] == "test"
    assert (out / "evaluation.md").read_text().startswith("| model | degradation | clean | 1 | mean |")
    assert (out / "degradation.png").is_file() and (out / "degradation.svg").is_file()
    with pytest.raises(ValueError, match="give at least one checkpoint"):
        evaluate_checkpoints(setting, {})
