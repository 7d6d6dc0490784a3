"""timm models (relkd.models.timm_models): built from timm with the data's classes and channels,
taps from timm's feature information, token features of vision transformers, weights from a
local file, bad input named by field, and a transformer teacher with a CNN student that trains.
timm is in the test extra: skipped without it locally, failed under CI=true (conftest.require)."""
import copy

import pytest
import torch

from relkd.engine import run_trial
from relkd.fields import ConfigError
from relkd.models import create_model, describe_models, list_models, timm_models
from relkd.setting import validate_setting
from tiny import TINY_SETTING

pytestmark = pytest.mark.needs("timm")

#: a ViT small enough for a test: 28x28 gray images in 7x7 patches, 2 blocks of width 32
TINY_VIT = {"img_size": 28, "patch_size": 7, "depth": 2, "embed_dim": 32, "num_heads": 2}
#: a Swin small enough for a test (its stages give channels-last maps)
TINY_SWIN = {"img_size": 32, "window_size": 2, "depths": [1, 1, 1, 1], "embed_dim": 16, "num_heads": [1, 1, 1, 1]}


def module_outputs(model, x, modules):
    """What ``modules`` of ``model.net`` output on ``x``, by a hook of this test's own."""
    seen = {}
    handles = [model.net.get_submodule(m).register_forward_hook(
        lambda mod, args, out, m=m: seen.__setitem__(m, out)) for m in modules]
    try:
        logits = model.net(x)
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def test_a_timm_cnn_has_a_tap_per_feature_info_stage_and_the_classifier_input_as_pool():
    torch.manual_seed(0)
    model = create_model("timm:resnet18", num_classes=7, in_channels=1).eval()
    info = model.net.feature_info
    assert model.points.stages == tuple(f["module"] for f in info) == ("act1", "layer1", "layer2", "layer3", "layer4")
    assert model.tap_names == ("stage1", "stage2", "stage3", "stage4", "stage5", "last_stage", "pool", "logits")
    assert model.body_stages == ("stage2", "stage3", "stage4", "last_stage")  # act1 (reduction 2) is the stem
    x = torch.randn(3, 1, 32, 32)
    out = model(x)
    seen, logits = module_outputs(model, x, model.points.stages)
    for i, module in enumerate(model.points.stages, 1):
        assert torch.equal(out[f"stage{i}"], seen[module])
        assert out[f"stage{i}"].shape[1] == info[i - 1]["num_chs"]
    assert torch.equal(out["logits"], logits) and out["logits"].shape == (3, 7)
    assert torch.allclose(model.net.fc(out["pool"]), logits)


def test_a_vision_transformer_gives_token_features_and_a_swin_its_maps_channels_first():
    vit = create_model("timm:vit_tiny_patch16_224", num_classes=10, in_channels=1, **TINY_VIT).eval()
    out = vit(torch.randn(2, 1, 28, 28))
    assert out["stage1"].shape == out["last_stage"].shape == (2, 1 + 16, 32)  # a class token and 4x4 patches
    assert out["pool"].shape == (2, 32) and vit.input_size == (1, 28, 28) and not vit.points.stem
    swin = create_model("timm:swin_tiny_patch4_window7_224", num_classes=10, in_channels=3, **TINY_SWIN).eval()
    x = torch.randn(2, 3, 32, 32)
    out = swin(x)
    seen, _ = module_outputs(swin, x, swin.points.stages)
    assert swin.points.channels_last
    for i, module in enumerate(swin.points.stages, 1):
        assert seen[module].shape[-1] == swin.net.feature_info[i - 1]["num_chs"]  # (B, H, W, C) in timm
        assert torch.equal(out[f"stage{i}"], seen[module].permute(0, 3, 1, 2))
    assert out["stage1"].shape == (2, 16, 8, 8)


def test_weights_from_a_safetensors_file_load_bit_identical(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_model("timm:resnet18", num_classes=10, in_channels=1)
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    torch.manual_seed(2)
    loaded = create_model("timm:resnet18", num_classes=10, in_channels=1, weights=str(tmp_path / "r18.safetensors"))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def _setting(teacher):
    doc = copy.deepcopy(TINY_SETTING)
    doc["teacher"] = {**doc["teacher"], **teacher}
    return doc


@pytest.mark.parametrize("teacher, field, words", [
    ({"model": "timm:resnet181"}, "teacher.model", "unknown timm model 'resnet181'; did you mean 'resnet18"),
    ({"model": "timm:resnet18", "params": {"pretrained": True}}, "teacher.params.pretrained", "never downloads"),
    ({"model": "timm:resnet18", "params": {"weights": "no/such.safetensors"}}, "teacher.params.weights",
     "no such file"),
])
def test_bad_timm_teachers_name_the_field(teacher, field, words):
    with pytest.raises(ConfigError) as err:
        validate_setting(_setting(teacher))
    assert any(e.startswith(f"{field}:") and words in e for e in err.value.errors), err.value.errors


def test_params_go_to_timm_create_model_and_a_wrong_one_is_named():
    model = create_model("timm:resnet18", num_classes=10, in_channels=1, drop_rate=0.5)
    assert model.net.drop_rate == 0.5
    with pytest.raises(ValueError, match=r"timm model 'resnet18': timm.create_model does not take these params "
                                         r"\(no_such_arg\)"):
        create_model("timm:resnet18", no_such_arg=1)


def test_without_timm_a_timm_model_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(timm_models, "installed", lambda: False)
    with pytest.raises(ValueError, match=r"^timm models need timm, which is not installed: "
                                         r"pip install 'relkd\[timm\]'$"):
        create_model("timm:resnet18")
    assert "not installed" in timm_models.status_line() and "relkd[timm]" in timm_models.status_line()


def test_list_models_shows_timm_and_a_timm_models_taps(capsys):
    from relkd.cli import main

    assert "timm:resnet18" in list_models("timm:resnet1*", timm=True)
    (row,) = describe_models("timm:vit_tiny_patch16_224", timm=True)
    assert row.family == "timm" and row.input_size == (3, 224, 224)
    assert row.taps["stage12"] == row.taps["last_stage"] == (197, 192) and row.taps["pool"] == (192,)
    assert main(["list", "models", "--pattern", "timm:resnet18", "--timm"]) == 0
    out = capsys.readouterr().out
    assert "timm:resnet18" in out and "stage5[512, 7, 7]" in out and "installed" in out


@pytest.mark.usefixtures("isolated")
def test_a_vit_for_another_image_size_is_refused_naming_the_parameter():
    setting = validate_setting(_setting({"model": "timm:vit_tiny_patch16_224", "params": {**TINY_VIT, "img_size": 32}}))
    with pytest.raises(ConfigError, match=r"teacher.params.img_size: timm:vit_tiny_patch16_224 takes 32x32 images only "
                                          r"and the data are 28x28: set teacher.params.img_size: 28"):
        run_trial(setting, "kd", seed=0)


@pytest.mark.usefixtures("isolated")
def test_a_transformer_teacher_teaches_a_cnn_student():
    """A ViT teacher and a CNN student: relation terms on its tokens (mean and class token),
    a FitNet hint on pool and KD train together, every part finite."""
    setting = validate_setting(_setting({"model": "timm:vit_tiny_patch16_224", "params": TINY_VIT, "epochs": 1}))
    objective = {"ce_weight": 1.0, "kd": {"weight": 0.5, "temperature": 4.0}, "terms": [
        {"tap": "last_stage", "view": "auto", "affinity": "cosine", "loss": "mse", "weight": 1.0},
        {"tap": {"student": "stage2", "teacher": "stage1"}, "view": "cls", "affinity": "cosine", "loss": "mse",
         "weight": 1.0},
        {"kind": "feature", "tap": "pool", "method": {"name": "fitnet"}, "weight": 0.1},
    ]}
    result = run_trial(setting, objective, seed=0)
    assert result.epochs == 2 and 0.0 <= result.val_accuracy <= 1.0
    assert len(result.part_means) >= 4 and all(torch.isfinite(torch.tensor(v)) for v in result.part_means.values())
