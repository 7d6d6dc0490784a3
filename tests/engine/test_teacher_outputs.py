"""relkd.engine.teacher_outputs: the teacher's taps per sample, cached in memory and on disk."""
import pytest
import torch

from relkd.data.loader import DeviceLoader
from relkd.engine.teacher_outputs import TeacherOutputs
from relkd.models import create_model


@pytest.fixture
def teacher_and_loader(isolated, monkeypatch):
    monkeypatch.setattr(TeacherOutputs, "_store", {})  # this test's own in-memory store
    torch.manual_seed(0)
    teacher = create_model("cnn_tiny", num_classes=3, width=4).eval()
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    loader = DeviceLoader(images, torch.zeros(10, dtype=torch.long), batch_size=4, shuffle=True, seed=1)
    return teacher, loader


def test_outputs_are_indexed_by_sample_and_computed_once(teacher_and_loader, monkeypatch):
    teacher, loader = teacher_and_loader
    key = ("teacher", "data", None, None)
    out = TeacherOutputs.get(key, teacher, loader, epoch=0, taps=("logits",))
    with torch.no_grad():
        direct = teacher(next(iter(DeviceLoader(loader.images, loader.labels, batch_size=10)))[0])["logits"]
    assert out["logits"].shape == (10, 3) and torch.allclose(out["logits"], direct, atol=1e-5)  # sample order
    files = sorted(p.name for p in TeacherOutputs.folder(key).iterdir())
    assert files == ["logits.json", "logits.pt"]  # no augmentation: written for other processes
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: pytest.fail("the teacher ran again"))
    assert TeacherOutputs.get(key, teacher, loader, epoch=1, taps=("logits",))["logits"] is out["logits"]


def test_another_process_loads_the_file_instead_of_running_the_teacher(teacher_and_loader):
    teacher, loader = teacher_and_loader
    key = ("teacher", "data", None, None)
    first = TeacherOutputs.get(key, teacher, loader, epoch=0, taps=("pool",))["pool"]
    TeacherOutputs.clear()  # a new process: nothing in memory, the files stay
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    again = TeacherOutputs.get(key, teacher, loader, epoch=0, taps=("pool",))["pool"]
    assert torch.equal(again, first) and len(calls) == 1  # one probe of a single image for the size, no full pass


def test_over_the_limit_the_least_recently_used_go_and_too_large_returns_none(teacher_and_loader, monkeypatch):
    teacher, loader = teacher_and_loader
    monkeypatch.setattr(TeacherOutputs, "persist", False)
    one = 10 * 3 * 4  # the logits of ten samples in float32
    monkeypatch.setattr(TeacherOutputs, "limit_bytes", one * 2)
    for name in ("a", "b", "c"):
        assert TeacherOutputs.get((name, None, None), teacher, loader, epoch=0, taps=("logits",)) is not None
    assert [k[0] for k in TeacherOutputs._store] == ["b", "c"]  # "a" evicted
    monkeypatch.setattr(TeacherOutputs, "limit_bytes", one - 1)
    assert TeacherOutputs.get(("d", None, None), teacher, loader, epoch=0, taps=("logits",)) is None
