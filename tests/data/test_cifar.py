"""relkd.data.cifar: CIFAR-10/100 read from torchvision's layout, and what a missing copy says."""
import logging
import pickle

import numpy as np
import pytest
import torch

import relkd.data.cifar as cifar
from relkd.data.base import DATASETS, DatasetNotFoundError


def load(name, data_dir, **params):
    """A registered loader called as load_dataset calls it: ``data_dir`` beside its checked parameters."""
    entry = DATASETS.get(name)
    return entry.obj(data_dir=data_dir, **entry.resolve_params(params))


def write_cifar10(root, n=4):
    """A hand-made CIFAR-10 in torchvision's on-disk format (pickled batches, no release checksums)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    names = [f"c{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return batches


def test_a_hand_made_copy_is_read_with_a_warning(tmp_path, caplog):
    batches = write_cifar10(tmp_path)
    with caplog.at_level(logging.WARNING):
        raw = load("cifar10", tmp_path / "cifar-10-batches-py")  # the folder itself works too
    assert "do not match the checksums" in caplog.text
    assert raw.train_images.shape == (20, 3, 32, 32) and raw.test_images.shape == (4, 3, 32, 32)
    first = torch.from_numpy(batches["data_batch_1"]["data"][1].reshape(3, 32, 32))
    assert torch.equal(raw.train_images[1], first)  # rows are CHW
    assert raw.train_labels[:4].tolist() == [0, 1, 2, 3] and raw.classes[0] == "c0"
    assert raw.allows_flip and raw.crop_padding == 4


def test_a_missing_file_or_folder_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="CIFAR-100") as caught:
        load("cifar100", tmp_path)
    assert str(tmp_path) in str(caught.value)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing file.*test_batch"):
        load("cifar10", tmp_path)


def test_the_registry_entries_describe_the_data():
    assert {DATASETS.get(name).obj.__module__ for name in ("cifar10", "cifar100")} == {cifar.__name__}
    entry = DATASETS.get("cifar100")
    assert (entry.property("num_classes"), entry.property("channels"), entry.property("image_size")) == (100, 3, 32)
    assert entry.defaults()["download"] is False
