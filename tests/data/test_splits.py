"""relkd.data.splits: stratified splits, kept classes and labels, and ``load_dataset``."""
import pytest
import torch

from relkd.data.base import DataFieldError
from relkd.data.dataset import canonical_dataset_name, list_datasets, load_dataset
from relkd.data.splits import labelled_positions, resolve_classes, split_indices

LABELS = torch.arange(100) % 4


def test_the_validation_split_is_stratified_disjoint_and_independent_of_the_subset():
    train, val = split_indices(LABELS, 0.2, split_seed=0)
    assert len(train) == 80 and torch.bincount(LABELS[val]).tolist() == [5, 5, 5, 5]
    assert not set(train.tolist()) & set(val.tolist()) and torch.equal(train, train.sort().values)
    sub_train, sub_val = split_indices(LABELS, 0.2, split_seed=0, train_subset=20)
    assert torch.equal(sub_val, val) and len(sub_train) == 20 and set(sub_train.tolist()) <= set(train.tolist())
    assert not torch.equal(split_indices(LABELS, 0.2, split_seed=1)[1], val)


def test_train_per_class_keeps_a_superset_for_a_larger_number():
    few, _ = split_indices(LABELS, 0.2, train_per_class=2)
    more, _ = split_indices(LABELS, 0.2, train_per_class=5)
    assert torch.bincount(LABELS[few]).tolist() == [2] * 4 and set(few.tolist()) <= set(more.tolist())
    with pytest.raises(DataFieldError, match="give train_subset or train_per_class, not both"):
        split_indices(LABELS, 0.2, train_subset=10, train_per_class=2)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\)"):
        split_indices(LABELS, 1.0)


def test_labelled_positions_stratified_nested_and_bounded():
    eight = labelled_positions(LABELS, 8)
    assert torch.bincount(LABELS[eight]).tolist() == [2, 2, 2, 2]
    assert set(eight.tolist()) <= set(labelled_positions(LABELS, 20).tolist())
    uneven = torch.tensor([0] * 9 + [1])
    assert sorted(uneven[labelled_positions(uneven, 2)].tolist()) == [0, 1]  # every class keeps one
    with pytest.raises(DataFieldError, match="labelled=3 must be between the 4 classes"):
        labelled_positions(LABELS, 3)


def test_classes_by_index_or_name():
    names = ("cat", "dog", "bird")
    assert resolve_classes(["bird", 0], names) == (2, 0)
    for bad, message in ((["cat", "cat"], "given twice"), ([5, 0], "not an index 0..2"), (["cat"], "at least two"),
                         (["cta", "dog"], "cat")):
        with pytest.raises(DataFieldError, match=message):
            resolve_classes(bad, names)


def test_names_are_forgiving_and_unknown_ones_are_refused():
    assert canonical_dataset_name("FMNIST") == "fashion-mnist" and canonical_dataset_name("cifar_10") == "cifar10"
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    with pytest.raises(ValueError, match="synthetic"):
        canonical_dataset_name("synthetc")


def test_load_dataset_keeps_classes_and_labels_and_fingerprints_the_result():
    data = load_dataset("synthetic", num_classes=4, train_size=40, test_size=8, image_size=6, val_fraction=0.25,
                        classes=[3, 1], labelled=4)
    assert data.classes == ("class_3", "class_1")  # in the order asked: labels 0 and 1
    assert set(data.test_labels.tolist()) <= {0, 1} and data.num_classes == 2 and data.image_size == 6
    assert int((data.train_labels >= 0).sum()) == 4 and set(data.train_labels.tolist()) == {-1, 0, 1}
    assert "(4 labelled)" in data.summary()
    again = load_dataset("synthetic", num_classes=4, train_size=40, test_size=8, image_size=6, val_fraction=0.25,
                         classes=[3, 1], labelled=4)
    other = load_dataset("synthetic", num_classes=4, train_size=40, test_size=8, image_size=6, val_fraction=0.25,
                         classes=[3, 1], labelled=6)
    assert again.fingerprint() == data.fingerprint() != other.fingerprint()
    images, labels = data.split("val")
    assert images.dtype == torch.uint8 and len(images) == len(labels)
    with pytest.raises(ValueError, match="split"):
        data.split("dev")


def test_a_dataset_registered_with_an_underscore_is_found_by_its_own_name(monkeypatch):
    """Found by tests/contracts/test_extension.py: ``_`` was always turned into ``-``, so a dataset named
    ``my_data`` could never be loaded ("unknown dataset 'my_data'; did you mean 'my_data'?")."""
    from relkd.data import DATASETS, canonical_dataset_name

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # the registration goes with the test
    DATASETS.register("probe_under_score", description="a test name", source="test")(lambda data_dir=None: None)
    assert canonical_dataset_name("probe_under_score") == "probe_under_score"
    assert canonical_dataset_name("PROBE_UNDER_SCORE") == "probe_under_score"
    assert canonical_dataset_name("fashion_mnist") == "fashion-mnist"  # the old spellings still work
    assert canonical_dataset_name("FMNIST") == "fashion-mnist"
