"""torchvision's named weights (relkd.models.tv): read from the local torch cache, never
downloaded; a name torchvision does not know, or weights absent from the cache, are refused
naming the field and the file expected."""
from pathlib import Path

import pytest
import torch

from relkd.fields import ConfigError
from relkd.models import create_model, model_entry
from relkd.models.tv import is_weights_name, named_weights_file
from relkd.setting import validate_setting
from tiny import TINY_SETTING

RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name of torchvision's ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache of this test's own (torch.hub.get_dir() reads TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_named_weights_are_read_from_the_local_cache(torch_home):
    torch.manual_seed(3)
    source = create_model("tv:resnet18", num_classes=1000, in_channels=3)
    torch_home.mkdir(parents=True)
    torch.save(source.net.state_dict(), torch_home / RESNET18_FILE)  # as torchvision's download stores it
    assert named_weights_file("tv:resnet18", "DEFAULT") == named_weights_file("resnet18", "IMAGENET1K_V1") \
        == torch_home / RESNET18_FILE
    loaded = create_model("tv:resnet18", num_classes=1000, in_channels=3, weights="IMAGENET1K_V1")
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    ten = create_model("tv:resnet18", num_classes=10, in_channels=1, weights="DEFAULT")  # a new head, as a file's
    assert torch.equal(ten.net.conv1.weight, source.net.conv1.weight)
    assert ten.net.fc.weight.shape == (10, 512)


def test_absent_or_unknown_named_weights_name_the_file_or_the_names(torch_home):
    with pytest.raises(ValueError) as err:
        create_model("tv:resnet18", weights="IMAGENET1K_V1")
    assert str(torch_home / RESNET18_FILE) in str(err.value) and "never downloads" in str(err.value)
    with pytest.raises(ValueError, match=r"IMAGENET1K_V2.*did you mean .IMAGENET1K_V1.\? "
                                         r"Valid names: DEFAULT, IMAGENET1K_V1"):
        create_model("tv:resnet18", weights="IMAGENET1K_V2")
    doc = {**TINY_SETTING, "teacher": {"model": "tv:resnet18", "params": {"weights": "IMAGENET1K_V1"}}}
    with pytest.raises(ConfigError) as err:
        validate_setting(doc)
    assert any(e.startswith("teacher.params.weights:") and RESNET18_FILE in e for e in err.value.errors), \
        err.value.errors
    doc["teacher"]["params"]["weights"] = "no/such/file.pt"
    with pytest.raises(ConfigError, match=r"teacher.params.weights: weights file 'no/such/file.pt' does not exist"):
        validate_setting(doc)


def test_a_weights_name_is_told_from_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_weights_name("IMAGENET1K_V1") and is_weights_name("DEFAULT")
    assert not is_weights_name("r18.pt") and not is_weights_name("weights/DEFAULT")
    Path("DEFAULT").write_bytes(b"")  # a file of that name in the working folder is a file
    assert not is_weights_name("DEFAULT")
    assert model_entry("tv:resnet18").param_errors({"weights": ""}) == []
