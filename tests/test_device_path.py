"""The GPU path, as far as a CPU can check it: the precision setting and what it chooses per
device, TensorFloat-32 set and restored, the teacher-output cache's eviction, the memory
estimate of relation terms and the draws it skips, evaluation counted on the device."""
import copy

import pytest
import torch

from relkd.engine import TeacherOutputs, evaluate, run_trial
from relkd.engine import device as device_module
from relkd.engine import memory
from relkd.fields import ConfigError
from relkd.objective import build_objective
from relkd.setting import validate_setting
from relkd.study import counted_trials, run_study, validate_study
from tiny import TINY_SETTING

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RELKD_RUNS_DIR", str(tmp_path / "runs"))
    TeacherOutputs.clear()
    yield
    TeacherOutputs.clear()


def tiny(**top):
    doc = copy.deepcopy(TINY_SETTING)
    doc.update(top)
    return doc


def test_precision_and_tf32_fields_are_checked_and_canonical():
    for value in ("half", "bfloat16", 16, None):
        with pytest.raises(ConfigError, match="precision: expected one of auto, bf16, fp16, fp32"):
            validate_setting(tiny(precision=value))
    with pytest.raises(ConfigError, match="tf32: expected true or false"):
        validate_setting(tiny(tf32="yes"))
    default = validate_setting(tiny())
    assert default.precision == "auto" and default.tf32 is False
    assert "precision" not in default.to_dict() and "tf32" not in default.to_dict()  # old records unchanged
    chosen = validate_setting(tiny(precision="fp16", tf32=True))
    assert chosen.to_dict()["precision"] == "fp16" and chosen.to_dict()["tf32"] is True
    assert validate_setting(chosen.to_dict()) == chosen


def test_autocast_dtype_per_device_and_precision(monkeypatch):
    assert all(device_module.autocast_dtype(CPU, p) is None for p in ("auto", "bf16", "fp16", "fp32"))
    assert device_module.autocast_dtype(CUDA, "fp32") is None
    assert device_module.autocast_dtype(CUDA, "bf16") == torch.bfloat16
    assert device_module.autocast_dtype(CUDA, "fp16") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert device_module.autocast_dtype(CUDA, "auto") == torch.bfloat16
    # a pre-Ampere card only emulates bf16: auto takes fp16 (with the gradient scaler)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert device_module.autocast_dtype(CUDA, "auto") == torch.float16
    assert not device_module.grad_scaler(CPU, "fp16").is_enabled()  # the CPU runs float32: nothing to scale


def test_tf32_is_set_on_cuda_and_restored():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with device_module.tf32(CUDA, True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with device_module.tf32(CPU, True):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_fp32_and_tf32_settings_train_the_same_on_the_cpu():
    """The CPU always runs float32: the precision fields change nothing there."""
    plain = run_trial(validate_setting(tiny()), "kd")
    other = run_trial(validate_setting(tiny(precision="fp16", tf32=True)), "kd")
    assert plain.val_history == other.val_history


def test_evaluate_counts_what_argmax_says():
    from relkd.engine import build_model, load_data

    setting = validate_setting(tiny())
    data = load_data(setting)
    model = build_model(setting.student, data, 0, CPU)
    loader = data.eval_loader("val", batch_size=7, device=CPU)  # several batches, the last one short
    with torch.no_grad():
        hits = sum(int((model(x, taps=("logits",))["logits"].argmax(1) == y).sum()) for x, y in loader)
    model.train()
    assert evaluate(model, loader) == hits / loader.num_samples
    assert model.training  # its mode is restored


@pytest.mark.slow
def test_the_teacher_output_cache_evicts_the_least_recently_used(monkeypatch):
    """With augmentation every epoch has its own outputs: past the limit, the oldest epoch
    goes and the run still gives what the live teacher gives."""
    setting = validate_setting(tiny(data={**TINY_SETTING["data"], "augment": True}))
    live = run_trial(setting, "kd", teacher_cache=False)
    one_epoch = 240 * 10 * 4  # the logits of 240 samples, float32
    monkeypatch.setattr(TeacherOutputs, "limit_bytes", int(1.5 * one_epoch))
    cached = run_trial(setting, "kd")
    assert cached.val_history == live.val_history
    epochs = [key[-1] for key in TeacherOutputs._store]
    assert epochs == [1]  # epoch 0 was evicted to make room for epoch 1
    assert TeacherOutputs._bytes() <= TeacherOutputs.limit_bytes


def test_term_memory_estimate_follows_the_affinity_order():
    cubic = build_objective({"terms": [{"tap": "pool", "affinity": "angle", "weight": 1.0}]}).terms[0]
    square = build_objective({"terms": [{"tap": "pool", "affinity": "cosine", "weight": 1.0}]}).terms[0]
    assert memory.term_bytes(cubic, 64, 65536, 65536) == 4 * (64 ** 2 * 4 * 65536 + 4 * 64 ** 3)
    assert memory.term_bytes(cubic, 64, 65536, 65536) > 2**30  # the 1 GB example, and then some
    assert memory.term_bytes(square, 64, 65536, 65536) < 2**26
    setting = validate_setting(tiny())
    flat = build_objective({"terms": [{"tap": "stage1", "view": "flatten", "affinity": "angle", "weight": 1.0}]})
    d_s, d_t = memory.view_widths(flat.terms[0], setting, (1, 28, 28), 10)
    assert (d_s, d_t) == (4 * 28 * 28, 8 * 28 * 28)  # widths 4 and 8 at stage1, 28 x 28 maps


@pytest.mark.slow
def test_a_study_skips_draws_the_device_cannot_hold(monkeypatch):
    monkeypatch.setenv("RELKD_POPULATION", "1")
    monkeypatch.setattr(memory, "device_budget", lambda device: 2 * 2**20)  # 2 MiB
    doc = copy.deepcopy(TINY_SETTING)
    doc["search"] = {"terms": 1, "tap": ["stage1"], "view": ["flatten", "avgpool"], "affinity": ["angle"],
                     "normalisation": ["none"], "loss": ["mse"], "kd": False}
    doc["optuna"] = {"anchors": [], "n_trials": 3, "sampler": "random", "pruner": "none"}
    study = run_study(validate_study(doc), progress=False).study
    skipped = [t for t in study.trials if "invalid_combination" in t.user_attrs]
    assert skipped and all(t.params["term0.view"] == "flatten" for t in skipped)
    assert "angle over view flatten at stage1 needs about" in skipped[0].user_attrs["invalid_combination"][0]
    assert all(t.params["term0.view"] == "avgpool" for t in counted_trials(study))
