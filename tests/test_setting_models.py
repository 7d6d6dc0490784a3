"""relkd.setting_models: the ``teacher`` and ``student`` sections (model, init, freeze, adapt)."""
import pytest

from relkd.fields import FieldChecker
from relkd.setting_models import AdaptSpec, InitSpec, ModelSpec, check_model, check_ratio


def check(section, path="student"):
    c = FieldChecker()
    return check_model(c, section, path), c.errors


def test_a_full_student_section_round_trips_through_to_dict():
    spec, errors = check({"model": "cnn_tiny", "params": {"width": 4}, "init": "runs/source.pt",
                          "freeze": ["stage2", "stage1"], "adapt": {"ratio": 0.5, "measure": "macs"}})
    assert errors == []
    assert spec.init == InitSpec(path="runs/source.pt") and spec.freeze == ("stage1", "stage2")  # sorted
    assert spec.adapt == AdaptSpec(ratio=0.5, measure="macs")
    assert spec.to_dict() == {"model": "cnn_tiny", "params": {"width": 4},
                              "init": {"path": "runs/source.pt", "head": "replace"},
                              "freeze": ["stage1", "stage2"], "adapt": {**AdaptSpec(0.5, "macs").to_dict()}}
    assert "checkpoint" not in spec.adapt.to_dict()


def test_freeze_body_stands_alone():
    spec, errors = check({"model": "cnn_tiny", "freeze": "body"})
    assert errors == [] and spec.to_dict()["freeze"] == "body"
    _, errors = check({"model": "cnn_tiny", "freeze": ["stage1", "body"]})
    assert errors and errors[0].startswith("student.freeze[1]:") and "stands alone" in errors[0]
    _, errors = check({"model": "cnn_tiny", "freeze": ["stage1", "stage1"]})
    assert errors == ["student.freeze[1]: stage1 is given twice; expected each stage at most once"]


@pytest.mark.parametrize("section, field", [
    ({"model": "cnn_tinyy"}, "student.model:"),
    ({"model": "cnn_tiny", "params": {"num_classes": 3}}, "student.params.num_classes:"),
    ({"model": "cnn_tiny", "init": {"path": "a.pt", "pretrain": "b.yaml"}}, "student.init:"),
    ({"model": "cnn_tiny", "init": {"path": "a.pt", "head": "swap"}}, "student.init.head:"),
    ({"model": "cnn_tiny", "adapt": {"ratio": 0.5}}, "student.adapt:"),  # nothing pretrained to adapt
    ({"model": "cnn_tiny", "init": "a.pt", "adapt": {"ratio": 1.5}}, "student.adapt.ratio:"),
    ({"model": "cnn_tiny", "color": 1}, "student.color:"),
])
def test_errors_name_the_field(section, field):
    _, errors = check(section)
    assert any(e.startswith(field) for e in errors), errors


def test_the_teacher_has_no_adapt_field_and_its_errors_say_teacher():
    _, errors = check({"model": "cnn_tiny", "adapt": {"ratio": 0.5}}, path="teacher")
    assert errors and errors[0].startswith("teacher.adapt: unknown field")
    spec, _ = check({"model": "cnn_tiny"}, path="teacher")
    assert spec == ModelSpec("cnn_tiny") and spec.role == "teacher"


def test_a_torchvision_student_cannot_be_adapted():
    _, errors = check({"model": "tv:resnet18", "init": "a.pt", "adapt": {"ratio": 0.5}})
    assert any("cannot be pruned" in e for e in errors)


def test_check_ratio_is_strictly_between_zero_and_one():
    c = FieldChecker()
    assert check_ratio(c, 0.25, "r") == 0.25
    assert check_ratio(c, 1, "r") is None and check_ratio(c, True, "r") is None
    assert len(c.errors) == 2 and all(e.startswith("r: expected a number strictly between 0 and 1") for e in c.errors)
