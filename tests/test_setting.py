"""relkd.setting: the values a run reads from two sections, resolved in one place."""
from relkd.setting import validate_setting

BASE = {"name": "t", "data": {"dataset": "synthetic", "batch_size": 64, "augment": True},
        "teacher": {"model": "cnn_small", "epochs": 1}, "student": {"model": "cnn_tiny"}, "budget": {"epochs": 2}}


def _setting(**sections):
    document = {k: dict(v) for k, v in BASE.items() if isinstance(v, dict)} | {"name": "t"}
    for key, value in sections.items():
        document[key] = {**document.get(key, {}), **value}
    return validate_setting(document)


def test_the_batch_size_is_the_budgets_else_the_datas():
    assert _setting().batch_size == 64
    assert _setting(budget={"batch_size": 32}).batch_size == 32
    assert _setting(teacher={"batch_size": 16}).teacher_batch_size == 16
    assert _setting(budget={"batch_size": 32}).teacher_batch_size == 64  # the teacher has its own recipe


def test_augmentation_is_the_budgets_where_set_else_the_datas():
    assert _setting().augment is True
    assert _setting(budget={"augment": False}).augment is False
    assert _setting(data={"augment": False}).augment is False
    assert _setting(data={"augment": False}, budget={"augment": True}).augment is True
