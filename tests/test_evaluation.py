"""relkd.evaluation: metrics on hand-made examples, the degradations' strength and
determinism, and evaluation of a tiny trained model."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from relkd.engine import evaluate, load_data, run_trial
from relkd.evaluation import (
    BLUR_SIGMA,
    CONTRAST_FACTOR,
    DEGRADATIONS,
    NOISE_STD,
    OCCLUSION_SIDE,
    classification_metrics,
    degrade,
    evaluate_model,
    evaluate_models,
    expected_calibration_error,
    format_degradation_table,
    plot_degradation,
    predict_logits,
)
from relkd.setting import validate_setting
from tiny import TINY_SETTING

KINDS = ("gaussian_noise", "gaussian_blur", "contrast", "occlusion")
TABLES = {"gaussian_noise": NOISE_STD, "gaussian_blur": BLUR_SIGMA, "contrast": CONTRAST_FACTOR,
          "occlusion": OCCLUSION_SIDE}


def logits_from_probs(rows):
    """Logits whose softmax is exactly the given probability rows."""
    return torch.tensor(rows, dtype=torch.float64).log()


# ----------------------------------------------------------------------------- metrics


def test_ece_on_a_hand_made_example():
    # conf, correct:  0.9 yes, 0.9 no, 0.9 yes  -> bin (13/15, 14/15]: acc 2/3, conf 0.9
    #                 0.7 yes                   -> bin (10/15, 11/15]: acc 1,   conf 0.7
    #                 0.55 no                   -> bin ( 8/15,  9/15]: acc 0,   conf 0.55
    # ECE = (3 |2/3 - 0.9| + |1 - 0.7| + |0 - 0.55|) / 5 = (0.7 + 0.3 + 0.55) / 5 = 0.31
    logits = logits_from_probs([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 0, 1, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.31, abs=1e-12)
    # One bin: acc 3/5 = 0.6, mean conf (3 * 0.9 + 0.7 + 0.55) / 5 = 0.79 -> ECE 0.19
    assert expected_calibration_error(logits, labels, n_bins=1) == pytest.approx(0.19, abs=1e-12)
    assert classification_metrics(logits, labels)["ece"] == pytest.approx(0.31, abs=1e-12)


def test_ece_is_zero_when_perfectly_calibrated():
    # 10 samples at confidence 0.8 with 8 right; 5 at 0.6 with 3 right; 3 confident and right.
    rows = [[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 5 + [[1 - 1e-15, 1e-15]] * 3
    labels = [0] * 8 + [1] * 2 + [1] * 3 + [0] * 2 + [0] * 3
    assert expected_calibration_error(logits_from_probs(rows), torch.tensor(labels)) == pytest.approx(0, abs=1e-12)
    # ... and positive as soon as one prediction changes side
    labels[0] = 1
    assert expected_calibration_error(logits_from_probs(rows), torch.tensor(labels)) == pytest.approx(0.1 / 18 * 10,
                                                                                                       abs=1e-12)


def test_nll_and_accuracy_match_torch():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(50, 7, generator=g)
    labels = torch.randint(0, 7, (50,), generator=g)
    m = classification_metrics(logits, labels)
    assert m["nll"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    assert m["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert m["num_samples"] == 50 and m["accuracy"] <= m["top5_accuracy"] <= 1
    assert "teacher_agreement" not in m
    json.dumps(m, allow_nan=False)


def test_top5_counts_the_fifth_but_not_the_sixth_rank():
    scores = torch.tensor([[8.0, 7, 6, 5, 4, 3, 2, 1]] * 2)  # class 4 ranks 5th, class 5 ranks 6th
    m = classification_metrics(scores, torch.tensor([4, 5]))
    assert m["top_k"] == 5 and m["top5_accuracy"] == 0.5 and m["accuracy"] == 0.0
    # fewer than five classes: top-C, always right
    three = classification_metrics(torch.tensor([[3.0, 2, 1]]), torch.tensor([2]))
    assert three["top_k"] == 3 and three["top5_accuracy"] == 1.0 and three["accuracy"] == 0.0


def test_per_class_accuracy_and_teacher_agreement():
    # labels 0 0 1 1 1 2, predictions 0 1 1 1 0 2: class a 1/2, class b 2/3, class c 1/1, class d no samples
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    logits = F.one_hot(preds, 4).double()
    teacher = F.one_hot(torch.tensor([0, 1, 2, 1, 3, 2]), 4).double()  # agrees on 4 of 6
    m = classification_metrics(logits, labels, teacher_logits=teacher, class_names=["a", "b", "c", "d"])
    assert m["per_class_accuracy"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": 1.0, "d": None}
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["teacher_agreement"] == pytest.approx(4 / 6)
    assert classification_metrics(logits, labels)["per_class_accuracy"]["0"] == 0.5  # default names
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        classification_metrics(logits, labels, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="teacher logits"):
        classification_metrics(logits, labels, teacher_logits=teacher[:3])
    with pytest.raises(ValueError, match="labels range"):
        classification_metrics(logits, torch.tensor([0, 0, 1, 1, 1, 4]))


# ----------------------------------------------------------------------------- degradations


def uniform_images(n=16, c=3, h=28, w=28, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_entries_document_their_strengths():
    assert set(KINDS) <= set(DEGRADATIONS.list())  # the shipped kinds; a new one meets the same contract
    for kind in DEGRADATIONS.list():
        entry = DEGRADATIONS.info(kind)
        table = entry.property("strengths")
        assert len(table) == 5 and table == TABLES.get(kind, table)
        assert "=" in entry.description  # the formula
        for value in table:  # the docstring states every strength
            assert f"{value:g}" in entry.doc, (kind, value)
        assert entry.param("severity").allowed() == "an integer in [1, 5]"
    # the registry creates a bound degradation: (images, generator) -> images
    x = uniform_images(2)
    blur = DEGRADATIONS.create("gaussian_blur", severity=2)
    assert torch.equal(blur(x, torch.Generator()), degrade(x, "gaussian_blur", 2))


@pytest.mark.parametrize("kind", KINDS)
def test_degradation_is_deterministic_in_range_and_keeps_shape(kind):
    x = uniform_images()
    before = x.clone()
    rng = torch.get_rng_state()
    for severity in (1, 5):
        a = degrade(x, kind, severity, seed=3)
        assert torch.equal(a, degrade(x, kind, severity, seed=3))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert not torch.equal(a, x)
        other = degrade(x, kind, severity, seed=4)
        assert torch.equal(a, other) != DEGRADATIONS.info(kind).property("random")
    assert torch.equal(x, before)  # the input is not modified
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not used
    as_uint8 = (x * 255).round().to(torch.uint8)
    out = degrade(as_uint8, kind, 3, seed=0)
    assert out.dtype == torch.float32
    assert torch.allclose(out, degrade(as_uint8.float() / 255, kind, 3, seed=0))
    assert degrade(x.double(), kind, 2).dtype == torch.float64


def test_bad_degradation_arguments_say_what_is_allowed():
    x = uniform_images(2)
    with pytest.raises(ValueError, match="did you mean 'gaussian_noise'.*Valid names: contrast, gaussian_blur"):
        degrade(x, "gausian_noise", 1)
    for bad in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"severity'?: expected an integer in \[1, 5\]"):
            degrade(x, "contrast", bad)
    with pytest.raises(ValueError, match=r"severity must be an integer in 1\.\.5"):
        DEGRADATIONS.info("contrast").obj(x, torch.Generator(), severity=9)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        degrade(x * 255, "contrast", 1)
    with pytest.raises(ValueError, match="severity: expected an integer"):
        evaluate_models({"m": torch.nn.Identity()}, None, severities=(1, 7))  # checked before any work


def clipped_gaussian_std(std, a):
    """Std of N(0, std^2) clipped to [-a, a]:
    Var = std^2 (1 - 2Q(k) - 2k phi(k)) + 2 a^2 Q(k), k = a / std, Q the normal tail."""
    k = a / std
    tail = 0.5 * math.erfc(k / math.sqrt(2))
    phi = math.exp(-k * k / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(std**2 * (1 - 2 * tail - 2 * k * phi) + 2 * a**2 * tail)


@pytest.mark.parametrize("severity", range(1, 6))
def test_noise_has_the_intended_std(severity):
    x = torch.full((64, 1, 32, 32), 0.5)
    out = degrade(x, "gaussian_noise", severity, seed=severity)
    n = out.numel()
    std = NOISE_STD[severity - 1]
    expected = clipped_gaussian_std(std, 0.5)  # equals std up to 0.1% below severity 5
    # the sample std's standard error is about std / sqrt(2n): allow 5 of them
    assert float(out.std()) == pytest.approx(expected, abs=5 * std / math.sqrt(2 * n))
    assert float(out.mean()) == pytest.approx(0.5, abs=5 * std / math.sqrt(n))


@pytest.mark.parametrize("severity", range(1, 6))
def test_blur_of_an_impulse_has_variance_sigma_squared(severity):
    x = torch.zeros(1, 1, 41, 41)
    x[0, 0, 20, 17] = 1.0
    out = degrade(x, "gaussian_blur", severity)[0, 0].double()
    sigma = BLUR_SIGMA[severity - 1]
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # the kernel sums to 1
    pos = torch.arange(41, dtype=torch.float64)
    rows, cols = out.sum(1), out.sum(0)
    assert float((rows * pos).sum()) == pytest.approx(20, abs=1e-4)
    assert float((cols * pos).sum()) == pytest.approx(17, abs=1e-4)
    assert float((rows * (pos - 20) ** 2).sum()) == pytest.approx(sigma**2, rel=0.005)
    assert float((cols * (pos - 17) ** 2).sum()) == pytest.approx(sigma**2, rel=0.005)


def test_blur_equals_reflect_padded_separable_convolution():
    x = uniform_images(4)
    for severity, sigma in enumerate(BLUR_SIGMA, start=1):
        r = math.ceil(4 * sigma)
        g = torch.exp(-0.5 * (torch.arange(-r, r + 1) / sigma) ** 2)
        g = g / g.sum()
        padded = F.pad(x.reshape(12, 1, 28, 28), (r, r, r, r), mode="reflect")
        reference = F.conv2d(F.conv2d(padded, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1)).reshape(x.shape)
        assert torch.allclose(degrade(x, "gaussian_blur", severity), reference, atol=1e-5)
    # images smaller than the kernel: still mirrored, a constant image stays constant
    tiny_constant = torch.full((2, 1, 3, 5), 0.3)
    assert torch.allclose(degrade(tiny_constant, "gaussian_blur", 5), tiny_constant, atol=1e-6)


@pytest.mark.parametrize("severity", range(1, 6))
def test_contrast_scales_each_images_std(severity):
    x = uniform_images()
    out = degrade(x, "contrast", severity)
    c = CONTRAST_FACTOR[severity - 1]
    assert torch.allclose(out.std(dim=(2, 3)), c * x.std(dim=(2, 3)), rtol=1e-4)
    assert torch.allclose(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("severity", range(1, 6))
def test_occlusion_blacks_out_one_square_of_the_intended_size(severity):
    x = torch.ones(300, 3, 28, 28)
    out = degrade(x, "occlusion", severity, seed=1)
    f = OCCLUSION_SIDE[severity - 1]
    side = math.floor(f * 28 + 0.5)
    zero = out == 0
    assert torch.equal(zero[:, :1].expand_as(zero), zero)  # the same square in every channel
    assert torch.all(zero[:, 0].sum(dim=(1, 2)) == side * side)
    # a square: its rows and columns each form one run of `side` pixels
    assert torch.all(zero[:, 0].any(dim=2).sum(1) == side) and torch.all(zero[:, 0].any(dim=1).sum(1) == side)
    assert float(zero.double().mean()) == pytest.approx(f * f, abs=2 * f / 28)  # rounding of the side
    # the position is uniform: every admissible top row occurs, and the square is on average centred
    tops = zero[:, 0].any(dim=2).double().argmax(dim=1).double()
    assert int(tops.min()) == 0 and int(tops.max()) == 28 - side
    assert float(tops.mean()) == pytest.approx((28 - side) / 2, abs=0.25 * (28 - side) / 2 + 0.5)


@pytest.fixture(scope="module")
def tiny():
    """A 4-class synthetic setting, its data and a student trained in a few seconds."""
    cfg = copy.deepcopy(TINY_SETTING)
    cfg["data"]["params"]["num_classes"] = 4
    cfg["budget"].update(epochs=4, lr=0.1)
    setting = validate_setting(cfg)
    model = run_trial(setting, "none", return_model=True).model
    return setting, load_data(setting), model


@pytest.mark.parametrize("kind", KINDS)
def test_strength_increases_with_severity(kind, tiny):
    images = tiny[1].test_images
    clean = images.float() / 255
    mse = [float((degrade(images, kind, s, seed=0) - clean).square().mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(mse, mse[1:])), mse
    assert mse[0] > 0


# ----------------------------------------------------------------------------- models


def test_predict_logits_matches_the_loaders_normalisation(tiny):
    _, data, model = tiny
    model.train()
    images = data.test_images
    logits = predict_logits(model, images, data.mean, data.std, batch_size=7)
    assert model.training  # mode restored
    assert logits.shape == (images.shape[0], data.num_classes) and logits.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        direct = torch.cat([model(x)["logits"] for x, _ in data.eval_loader("test", batch_size=1000)])
    assert torch.allclose(logits, direct, atol=1e-5)
    as_float = images.float() / 255
    assert torch.allclose(predict_logits(model, as_float, data.mean, data.std), logits, atol=1e-4)
    assert torch.equal(as_float, images.float() / 255)  # the caller's float images are untouched


def test_evaluate_model_on_a_tiny_trained_model(tiny):
    _, data, model = tiny
    result = evaluate_model(model, data, teacher=model, batch_size=16)
    assert set(result) == {"split", "seed", "accuracy", "top5_accuracy", "top_k", "ece", "nll",
                           "per_class_accuracy", "num_samples", "teacher_agreement", "degradation"}
    assert result["accuracy"] == evaluate(model, data.eval_loader("test"))
    assert result["teacher_agreement"] == 1.0 and result["top_k"] == 4 and result["top5_accuracy"] == 1.0
    assert result["num_samples"] == data.test_labels.numel() and result["nll"] > 0
    for key in ("accuracy", "top5_accuracy", "ece"):
        assert 0.0 <= result[key] <= 1.0
    assert set(result["per_class_accuracy"]) == set(data.classes)
    assert all(0.0 <= v <= 1.0 for v in result["per_class_accuracy"].values())
    assert list(result["degradation"]) == list(KINDS)
    for kind, by_severity in result["degradation"].items():
        assert list(by_severity) == [1, 2, 3, 4, 5]
        assert all(0.0 <= v <= 1.0 for v in by_severity.values())
    assert result["accuracy"] > 0.5  # the model learned something, so the next check means something
    # loose: the strongest noise and blur do not help
    assert result["degradation"]["gaussian_noise"][5] <= result["accuracy"] + 0.05
    assert result["degradation"]["gaussian_blur"][5] < result["accuracy"]
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["degradation"]["contrast"]["3"] == result["degradation"]["contrast"][3]


def test_every_model_sees_the_same_degraded_images(tiny):
    _, data, model = tiny
    other = copy.deepcopy(model)  # a different model, without training another one
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    plan = dict(degradations=("gaussian_noise", "occlusion"), severities=(5, 3), seed=7)
    together = evaluate_models({"a": model, "b": other}, data, **plan)
    alone = evaluate_model(other, data, **plan)
    assert together["a"]["nll"] != together["b"]["nll"]  # two different models
    assert together["b"] == alone == evaluate_model(other, data, **plan)  # identical on every call
    assert list(alone["degradation"]["occlusion"]) == [3, 5]
    reseeded = evaluate_model(other, data, **dict(plan, seed=8))
    assert reseeded["accuracy"] == alone["accuracy"]  # the clean split does not depend on the seed


# ----------------------------------------------------------------------------- table and plot


def fake_result(clean, drop):
    """An evaluate_model-shaped result whose accuracy falls by ``drop`` per severity."""
    return {"accuracy": clean,
            "degradation": {kind: {s: max(0.0, clean - drop * s * (i + 1) / 4) for s in range(1, 6)}
                            for i, kind in enumerate(KINDS)}}


def test_table_has_a_row_per_model_and_kind():
    results = {"baseline": fake_result(0.9, 0.1), "kd": fake_result(0.92, 0.05), "best": fake_result(0.93, 0.02)}
    table = format_degradation_table(results)
    lines = table.splitlines()
    assert lines[0] == "| model | degradation | clean | 1 | 2 | 3 | 4 | 5 | mean |"
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [tuple(r.split(" | ")[:2]) for r in rows] == [(f"| {label}", kind) for label in results for kind in KINDS]
    # baseline, gaussian_noise: clean 90%, severity 1: 0.9 - 0.1 / 4 = 87.5%, mean of 87.5 85 82.5 80 77.5 = 82.5
    assert rows[0] == "| baseline | gaussian_noise | 90.00 | 87.50 | 85.00 | 82.50 | 80.00 | 77.50 | 82.50 |"
    assert "gaussian_noise: noise std 0.04, 0.08, 0.12, 0.18, 0.26" in table
    assert format_degradation_table(json.loads(json.dumps(results))) == table  # JSON's string severities


def test_plot_writes_png_and_svg(tmp_path):
    results = json.loads(json.dumps({"baseline": fake_result(0.9, 0.1), "kd": fake_result(0.92, 0.05)}))
    paths = plot_degradation(results, tmp_path / "plots" / "degradation")
    assert [p.name for p in paths] == ["degradation.png", "degradation.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 20_000
    svg = paths[1].read_text()
    assert "<svg" in svg and svg.count("<path") > 20
    with pytest.raises(ValueError, match="no results"):
        plot_degradation({}, tmp_path / "x")


def test_a_checkpoint_that_does_not_fit_is_refused_with_the_reason(tiny, tmp_path):
    from relkd.evaluation import load_student
    from relkd.models import create_model

    setting, data, model = tiny
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    loaded = load_student(setting, good, data=data)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    other = tmp_path / "ten_classes.pt"
    torch.save(create_model(setting.student.model, num_classes=10, in_channels=1, **setting.student.params)
               .state_dict(), other)
    with pytest.raises(ValueError) as err:
        load_student(setting, other, data=data)
    message = str(err.value)
    assert f"--checkpoint {other}" in message and "for 4 classes" in message
    assert "(10, " in message and "another number of classes" in message
    assert "head: replace" not in message  # advice for an init, not for evaluation
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError) as err:
        load_student(setting, text, data=data)
    assert "weights_only=True" in str(err.value) and "weights_only` set to `False" not in str(err.value)
