"""The tiny setting most tests train with: synthetic data, cnn_tiny teacher and student."""

TINY_SETTING = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"dataset": "synthetic", "batch_size": 32, "params": {"train_size": 240, "test_size": 60}},
    "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 2, "lr": 0.05},
    "student": {"model": "cnn_tiny", "params": {"width": 4}},
    "budget": {"epochs": 2, "lr": 0.05},
}
