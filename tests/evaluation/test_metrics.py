"""relkd.evaluation.metrics: calibration, classification metrics and the evaluation of models."""
import math

import pytest
import torch

from relkd.data import load_dataset
from relkd.evaluation.metrics import TestEvaluation as Evaluation  # not a test class
from relkd.evaluation.metrics import (classification_metrics, evaluate_model, evaluate_models,
                                      expected_calibration_error, predict_logits)
from relkd.models import create_model

LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
LABELS = torch.tensor([0, 1, 1, 1])


def test_ece_of_certain_and_uniform_predictions():
    certain = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert expected_calibration_error(certain, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(certain, torch.tensor([1, 0])) == pytest.approx(1.0)
    uniform = torch.zeros(4, 2)  # confidence 1/2, half right
    assert expected_calibration_error(uniform, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        expected_calibration_error(uniform, torch.tensor([0, 0, 1, 1]), n_bins=0)


def test_classification_metrics_on_four_samples():
    m = classification_metrics(LOGITS, LABELS, teacher_logits=LOGITS.flip(1), class_names=["a", "b", "c"])
    assert m["accuracy"] == 0.5 and m["top_k"] == 3 and m["top5_accuracy"] == 1.0 and m["num_samples"] == 4
    assert m["per_class_accuracy"] == {"a": 1.0, "b": 1 / 3, "c": None}
    assert m["nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(LOGITS.double(), LABELS)))
    assert m["teacher_agreement"] == 0.25  # flipped: only the sample predicting the middle class agrees


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(2, 3), torch.tensor([0, 3]), "labels range over 0..3 but there are 3 classes"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "labels must be integers"),
    (torch.zeros(2, 3), torch.tensor([0]), r"logits must be \(N, C\) and labels \(N,\)"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "no samples to evaluate"),
])
def test_bad_inputs_say_what_is_wrong(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(logits, labels)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_classes=3, train_size=30, test_size=12, image_size=8)


def test_predict_logits_batches_and_restores_the_mode(data):
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=3, width=4).train()
    whole = predict_logits(model, data.test_images, data.mean, data.std)
    assert model.training and whole.shape == (12, 3) and whole.dtype == torch.float32
    assert torch.allclose(predict_logits(model, data.test_images, data.mean, data.std, batch_size=5), whole, atol=1e-5)
    floats = data.test_images.float() / 255  # float images in [0, 1] read the same
    assert torch.allclose(predict_logits(model, floats, data.mean, data.std), whole, atol=1e-4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict_logits(model, data.test_images, data.mean, data.std, batch_size=0)


def test_evaluate_models_degrades_once_for_every_model(data):
    torch.manual_seed(0)
    a, b = create_model("cnn_tiny", num_classes=3, width=4), create_model("cnn_tiny", num_classes=3, width=4)
    results = evaluate_models({"a": a, "b": b}, data, degradations=["contrast", "contrast"], severities=[2, 1],
                              teacher=a)
    assert list(results) == ["a", "b"] and results["a"]["teacher_agreement"] == 1.0
    assert list(results["a"]["degradation"]) == ["contrast"] and list(results["a"]["degradation"]["contrast"]) \
        == [1, 2]
    alone = evaluate_model(b, data, degradations=["contrast"], severities=[1, 2], teacher=a)
    assert alone["degradation"] == results["b"]["degradation"] and alone["accuracy"] == results["b"]["accuracy"]
    with pytest.raises(ValueError, match="severity:"):
        evaluate_model(a, data, degradations=["contrast"], severities=[9])
    with pytest.raises(ValueError, match="no models to evaluate"):
        evaluate_models({}, data)


def test_the_summary_over_seeds_is_the_mean_of_each_metric():
    per_seed = [{"ece": 0.1, "nll": 1.0, "degradation": {"contrast": {1: 0.5}}},
                {"ece": 0.3, "nll": 2.0, "degradation": {"contrast": {1: 0.7}}}]
    summary = Evaluation(setting=None).summary(per_seed)
    assert summary["ece"] == pytest.approx(0.2) and summary["nll"] == 1.5 and "top5_accuracy" not in summary
    assert math.isclose(summary["degradation"]["contrast"][1], 0.6)
