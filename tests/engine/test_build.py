"""relkd.engine.build: a setting's data and models, with init checkpoints and frozen parts."""
import dataclasses

import pytest
import torch

from relkd.engine.build import adapted_model_name, build_model, init_file, load_data, transfer_ident
from relkd.fields import ConfigError
from relkd.files import file_sha256
from relkd.setting import validate_setting
from relkd.setting_models import AdaptSpec, InitSpec
from tiny import TINY_SETTING

CPU = torch.device("cpu")


@pytest.fixture
def setting(isolated):
    return validate_setting(TINY_SETTING)


def test_load_data_is_cached_and_teachers_ignore_the_subset(setting):
    data = load_data(setting)
    assert load_data(setting) is data and data.train_images.shape[0] + data.val_images.shape[0] == 240
    small = validate_setting({**TINY_SETTING, "data": {**TINY_SETTING["data"], "train_subset": 50}})
    assert load_data(small).train_images.shape[0] == 50
    assert load_data(small, subset=False).train_images.shape[0] == data.train_images.shape[0]


def test_build_model_is_seeded(setting):
    data = load_data(setting)
    a, b = (build_model(setting.student, data, seed=7, device=CPU) for _ in range(2))
    c = build_model(setting.student, data, seed=8, device=CPU)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert a.tap_shapes()["logits"] == (data.num_classes,)


def test_an_init_file_is_loaded_its_hash_kept_and_frozen_parts_stop_training(setting, tmp_path):
    data = load_data(setting)
    source = build_model(setting.student, data, seed=1, device=CPU)
    path = tmp_path / "source.pt"
    torch.save(source.net.state_dict(), path)
    spec = dataclasses.replace(setting.student, init=InitSpec(path=str(path), head="keep"), freeze=("stage1",))
    model = build_model(spec, data, seed=2, device=CPU)
    assert model.init_sha256 == file_sha256(path)
    assert all(torch.equal(x, y) for x, y in zip(model.net.parameters(), source.net.parameters()))
    assert not any(p.requires_grad for p in model.stage_module(1).parameters())
    assert transfer_ident(spec) == {"init": {"sha256": file_sha256(path), "head": "keep"}, "freeze": ["stage1"]}
    assert transfer_ident(setting.student) == {}  # keys of settings without init or freeze are unchanged


def test_errors_name_the_field(setting, tmp_path):
    missing = dataclasses.replace(setting.student, init=InitSpec(path=str(tmp_path / "none.pt")))
    with pytest.raises(ConfigError, match=r"student.init.path: .*relkd pretrain"):
        init_file(missing)
    unresolved = dataclasses.replace(setting.student, init=InitSpec(pretrain="source.yaml"))
    with pytest.raises(ConfigError, match="student.init.pretrain: the source 'source.yaml' has not been trained"):
        init_file(unresolved)
    with pytest.raises(ConfigError, match="student.adapt: the adapted model has not been made"):
        adapted_model_name(dataclasses.replace(setting.student, adapt=AdaptSpec(ratio=0.5)))
    assert init_file(setting.student) is None
