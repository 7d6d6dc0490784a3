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


def interrupt_on_call(function, n):
    """``function`` that raises KeyboardInterrupt on its ``n``-th call (as Ctrl-C would)."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    return wrapper
