"""relkd.data.imagefolder: your own images in class folders, listed as files, decoded once and cached."""
import pytest
import torch
from PIL import Image

import relkd.data.imagefolder as imagefolder
from relkd.data.base import DATASETS, DatasetNotFoundError, cache_dir
from relkd.data.image_files import ImageFiles


def load(name, data_dir, **params):
    """A registered loader called as load_dataset calls it: ``data_dir`` beside its checked parameters."""
    entry = DATASETS.get(name)
    return entry.obj(data_dir=data_dir, **entry.resolve_params(params))


def make_folder(root, splits=("train", "test"), classes=("cat", "dog"), per_class=2):
    for split in splits:
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for k in range(per_class):
                Image.new("RGB", (12, 8), (40 * i + k, 100, 200)).save(root / split / name / f"{k}.png")


def test_images_are_resized_cropped_and_labelled_by_sorted_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_folder(tmp_path / "root", classes=("dog", "cat"))
    files = load("imagefolder", tmp_path / "root", image_size=4, channels=1)
    assert isinstance(files.train_images, ImageFiles) and files.train_images.shape == (4, 1, 4, 4)
    assert not list(cache_dir().glob("**/*.pt"))  # listed, nothing decoded
    raw = files.materialise()
    assert raw.classes == ("cat", "dog") and raw.train_labels.tolist() == [0, 0, 1, 1]
    assert raw.train_images.shape == (4, 1, 4, 4) and raw.train_images.dtype == torch.uint8
    assert raw.val_images is None and raw.crop_padding == 1
    assert len(list((cache_dir() / "imagefolder").glob("*.pt"))) == 1
    assert torch.equal(files.train_images.read(), raw.train_images)  # a batch read from the files: the same pixels
    again = load("imagefolder", tmp_path / "root", image_size=4, channels=1).materialise()
    assert torch.equal(again.train_images, raw.train_images)


def test_a_val_folder_is_used_as_the_validation_split(tmp_path):
    make_folder(tmp_path, splits=("train", "val", "test"))
    raw = load("imagefolder", tmp_path, image_size=4, cache=False).materialise()
    assert raw.val_images.shape == (4, 3, 4, 4) and raw.val_labels.tolist() == [0, 0, 1, 1]


def test_a_wrong_layout_says_what_is_expected(tmp_path):
    make_folder(tmp_path, splits=("train",))
    with pytest.raises(DatasetNotFoundError, match="no folder .*test. Expected layout"):
        load("imagefolder", tmp_path, cache=False)
    make_folder(tmp_path, splits=("test",), classes=("cat", "dog", "eel"))
    with pytest.raises(ValueError, match="has class folder\\(s\\) eel that .*train lacks"):
        load("imagefolder", tmp_path, cache=False)


def test_the_loader_is_registered_from_this_module_with_its_parameters():
    entry = DATASETS.get("imagefolder")
    assert entry.obj.__module__ == imagefolder.__name__
    assert entry.defaults() == {"image_size": 32, "channels": 3, "flip": True, "cache": True}
    with pytest.raises(ValueError, match="channels"):
        entry.resolve_params({"channels": 2})


def test_a_folder_with_no_images_says_so(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        (tmp_path / split / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match=r"Found no valid file for the classes cat.*Expected layout"):
        load("imagefolder", tmp_path, cache=False)
