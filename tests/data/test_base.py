"""relkd.data.base: the dataset registry, its errors and where data is looked for."""
from pathlib import Path

import pytest

from relkd.data import load_dataset
from relkd.data.base import (ALIASES, DATA_DIR_ENV, DATASETS, DEFAULT_DATASET, DataFieldError, DatasetNotFoundError,
                             RawDataset, cache_dir, env_data_dir)


def test_the_cache_follows_xdg_and_the_data_dir_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "relkd" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "relkd" / "data"
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert env_data_dir() is None
    monkeypatch.setenv(DATA_DIR_ENV, "~/datasets")
    assert env_data_dir() == Path(tmp_path / "home" / "datasets")


def test_the_registry_holds_every_source_and_the_aliases_point_into_it():
    assert {"fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic"} <= set(DATASETS)
    assert DEFAULT_DATASET in DATASETS and set(ALIASES.values()) <= set(DATASETS)


def test_errors_carry_their_field_and_are_the_usual_exceptions():
    err = DataFieldError("train_per_class", "too many")
    assert isinstance(err, ValueError) and err.field == "train_per_class" and str(err) == "too many"
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    with pytest.raises(DataFieldError) as caught:
        load_dataset("synthetic", num_classes=3, train_size=30, test_size=6, classes=[0])
    assert caught.value.field == "classes"


def test_a_loader_returns_a_raw_dataset():
    raw = DATASETS.create("synthetic", num_classes=3, train_size=12, test_size=6, image_size=4)
    assert isinstance(raw, RawDataset) and raw.val_images is None
    assert raw.train_images.shape == (12, 1, 4, 4) and len(raw.classes) == 3
