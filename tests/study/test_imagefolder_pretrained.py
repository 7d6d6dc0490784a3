"""The worked example "Your teacher, your data" end to end: studies/imagefolder_pretrained.yaml on a
2,000-image folder and a teacher checkpoint made by scripts/imagefolder_example.py, streamed,
the teacher used as it is (epochs 0): its weights are bit-identical after the study."""
import importlib.util
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from relkd.engine import get_teacher
from relkd.fields import read_yaml_file
from relkd.files import file_sha256
from relkd.study import run_study, validate_study

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def example_script():
    spec = importlib.util.spec_from_file_location("imagefolder_example", ROOT / "scripts" / "imagefolder_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_example_study_runs_on_a_streamed_folder_with_the_teacher_as_it_is(tmp_path):
    example = example_script()
    data_dir = example.make_folder(tmp_path / "data", per_class=200, source="synthetic")
    assert len(list((data_dir / "train").rglob("*.png"))) == 2000
    checkpoint = example.train_teacher(data_dir, tmp_path / "teacher.pt", epochs=1)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    before = file_sha256(checkpoint)

    doc = read_yaml_file(ROOT / "studies" / "imagefolder_pretrained.yaml")
    assert doc["data"]["loader"] == "stream" and doc["teacher"]["epochs"] == 0
    doc["data"]["data_dir"], doc["teacher"]["init"] = str(data_dir), str(checkpoint)
    doc["budget"]["epochs"] = 1
    doc["optuna"].update(n_trials=2, anchors=["kd"], timeout=None)
    spec = validate_study(doc)
    result = run_study(spec, storage=f"sqlite:///{tmp_path}/s.db", progress=False)
    trials = [t for t in result.study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(trials) >= 2 and any(t.state == TrialState.COMPLETE for t in trials)
    assert result.study.best_value > 0.1  # the student learnt from the streamed folder

    teacher = get_teacher(spec.setting)  # the one the study used, from the cache
    assert not teacher.built and teacher.meta["train_seconds"] == 0.0 and teacher.meta["init_sha256"] == before
    got = teacher.model.net.state_dict()
    assert set(got) == set(saved) and all(torch.equal(got[k].cpu(), v) for k, v in saved.items())
    assert file_sha256(checkpoint) == before
