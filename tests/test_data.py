"""Tests of relkd.data: datasets, splits, device loaders, batch-wise augmentation.

No test downloads anything: every test runs with an empty cache and no $RELKD_DATA_DIR
(see the autouse fixture), and the missing-dataset tests pass download=False or hide
Debian's folder.
"""
from __future__ import annotations

import gzip
import inspect
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relkd import data as D
from relkd.data import fashion_mnist as FM
from relkd.data import synthetic
from relkd.data.base import ALIASES
from relkd.data import (
    DATASETS,
    DatasetNotFoundError,
    DeviceLoader,
    canonical_dataset_name,
    list_datasets,
    load_dataset,
    normalize,
    random_crop_flip,
    split_indices,
)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """A fresh, empty cache and no $RELKD_DATA_DIR for every test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Pretend Debian's dataset-fashion-mnist is not installed."""
    monkeypatch.setattr(FM, "DEBIAN_FASHION_MNIST_DIRS", (tmp_path / "not-installed",))


# ----------------------------------------------------------------------------------------
# Helpers that write datasets in their real on-disk formats


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """IDX (big-endian header: 0, 0, type 0x08 = uint8, ndim; then the dims; then bytes)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_fake_fmnist(folder: Path, n_train: int = 50, n_test: int = 20, compress: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


def make_fake_cifar(root: Path, hundred: bool = False, per_file: int = 20) -> dict:
    """A tiny CIFAR-10 (or -100) in the real format: pickled dicts with ``data`` (N, 3072)
    uint8 rows in CHW order and ``labels`` (``fine_labels``), plus the meta file."""
    rng = np.random.default_rng(1)
    num_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = (["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]) + (
        ["test"] if hundred else ["test_batch"]
    )
    written = {}
    for i, name in enumerate(files):
        n = per_file * (5 if hundred and name == "train" else 1)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) + i) % num_classes]
        entry = {"batch_label": name, "data": data, "filenames": [f"{name}_{j}.png" for j in range(n)]}
        if hundred:
            entry["fine_labels"] = labels
            entry["coarse_labels"] = [v // 5 for v in labels]
        else:
            entry["labels"] = labels
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        written[name] = (data, labels)
    names = [f"class{i}" for i in range(num_classes)]
    meta = {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]} if hundred else {
        "label_names": names, "num_cases_per_batch": per_file, "num_vis": 3072}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return written


def make_image_folder(root: Path, splits=("train", "test"), per_class: int = 4, size: tuple[int, int] = (20, 16)):
    from PIL import Image

    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}
    for split in splits:
        for cls, colour in colours.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
                arr[...] = colour
                arr[0, 0] = (i, i, i)
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def reference_crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-sample loop: the obvious definition (mirror, zero-pad, take the window)."""
    out = []
    h, w = images.shape[-2:]
    for img, (dy, dx), fl in zip(images, offsets.tolist(), flips.tolist()):
        if fl:
            img = img.flip(-1)
        padded = F.pad(img, (pad, pad, pad, pad))
        out.append(padded[:, dy:dy + h, dx:dx + w])
    return torch.stack(out)


# ----------------------------------------------------------------------------------------
# Names


def test_list_datasets():
    assert list_datasets() == sorted(DATASETS) and len(list_datasets()) == len(DATASETS)
    assert D.DEFAULT_DATASET == "fashion-mnist" and D.DEFAULT_DATASET in list_datasets()
    assert {"cifar10", "cifar100"} <= set(list_datasets("cifar*"))
    assert all(n.startswith("cifar") for n in list_datasets("cifar*")) and list_datasets("nothing*") == []
    assert set(ALIASES.values()) <= set(list_datasets())  # every alias names a registered dataset


@pytest.mark.parametrize("name", DATASETS.list())
def test_every_dataset_is_found_documented_and_takes_its_parameters(name):
    """What a registered loader must meet (so a new dataset is tested without editing this file):
    documented, loadable under its own name (any case), called with ``data_dir`` and its ``Param``s,
    whose defaults are the function's and satisfy their own bounds, and unknown parameters refused
    before any file is looked for."""
    entry = DATASETS.get(name)
    assert entry.description and entry.doc
    assert canonical_dataset_name(name) == name == canonical_dataset_name(name.upper())
    signature = inspect.signature(entry.obj).parameters
    assert "data_dir" in signature and signature["data_dir"].default is None
    assert set(signature) == {"data_dir", *(p.name for p in entry.params)}
    for p in entry.params:
        assert p.check(p.default) == p.default == signature[p.name].default
    assert entry.resolve_params({}) == entry.defaults()
    with pytest.raises(ValueError, match=f"dataset '{name}' has no parameter 'not_a_parameter'"):
        load_dataset(name, not_a_parameter=1)


def test_unknown_dataset_name_suggests():
    with pytest.raises(ValueError) as err:
        load_dataset("fashon-mnist")
    text = str(err.value)
    assert "did you mean 'fashion-mnist'" in text
    for name in list_datasets():
        assert name in text


def test_unknown_dataset_parameter():
    with pytest.raises(ValueError, match="no parameter 'nosie'; did you mean 'noise'"):
        load_dataset("synthetic", nosie=0.1)


def test_aliases_and_case():
    a = load_dataset("Synthetic", train_size=40, test_size=10)
    assert a.name == "synthetic"


# ----------------------------------------------------------------------------------------
# Splits


def test_split_disjoint_stratified_deterministic():
    labels = torch.arange(1000) % 10
    labels[:100] = 3  # unbalanced: class 3 is bigger
    tr, va = split_indices(labels, 0.2, split_seed=0)
    assert len(va) == 200 and len(tr) == 800
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(1000))
    assert torch.equal(tr, tr.sort().values)
    # each class's share in val is its share overall, up to rounding
    whole = torch.bincount(labels, minlength=10).double()
    held = torch.bincount(labels[va], minlength=10).double()
    assert torch.all((held - 0.2 * whole).abs() <= 1)
    # same seed, same split; another seed, another split
    tr2, va2 = split_indices(labels, 0.2, split_seed=0)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = split_indices(labels, 0.2, split_seed=1)
    assert not torch.equal(va, va3)
    assert torch.equal(torch.bincount(labels[va3], minlength=10), held.long())


def test_split_keeps_every_class_in_train():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    tr, va = split_indices(labels, 0.5, split_seed=0)
    assert set(labels[tr].tolist()) == {0, 1, 2}


def test_split_rejects_bad_arguments():
    labels = torch.arange(20) % 2
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(ValueError, match="val_fraction"):
            split_indices(labels, bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="train_subset"):
            split_indices(labels, 0.1, train_subset=bad)
    with pytest.raises(ValueError, match="at most 18"):
        split_indices(labels, 0.1, train_subset=19)


def test_train_subset_stratified_deterministic_and_val_unchanged():
    labels = torch.arange(1000) % 10
    tr_full, va_full = split_indices(labels, 0.1, split_seed=5)
    tr, va = split_indices(labels, 0.1, split_seed=5, train_subset=200)
    assert len(tr) == 200
    assert torch.equal(va, va_full)  # val does not depend on the subset
    assert set(tr.tolist()) <= set(tr_full.tolist())
    assert torch.bincount(labels[tr], minlength=10).tolist() == [20] * 10
    tr_again, _ = split_indices(labels, 0.1, split_seed=5, train_subset=200)
    assert torch.equal(tr, tr_again)
    tr_other, _ = split_indices(labels, 0.1, split_seed=6, train_subset=200)
    assert not torch.equal(tr, tr_other)
    # uneven totals: counts still proportional
    tr_odd, _ = split_indices(labels, 0.1, split_seed=5, train_subset=205)
    counts = torch.bincount(labels[tr_odd], minlength=10)
    assert counts.sum() == 205 and counts.max() - counts.min() <= 1


def test_load_dataset_splits_and_subset():
    data = load_dataset("synthetic", val_fraction=0.2, split_seed=3, train_subset=100)
    assert len(data.train_labels) == 100 and len(data.val_labels) == 120 and len(data.test_labels) == 200
    assert torch.bincount(data.train_labels, minlength=10).tolist() == [10] * 10
    assert set(data.train_index.tolist()).isdisjoint(data.val_index.tolist())
    raw = synthetic.load_synthetic()
    assert torch.equal(data.train_images, raw.train_images[data.train_index])
    assert torch.equal(data.val_labels, raw.train_labels[data.val_index])
    again = load_dataset("synthetic", val_fraction=0.2, split_seed=3, train_subset=100)
    assert again.fingerprint() == data.fingerprint()
    other = load_dataset("synthetic", val_fraction=0.2, split_seed=4, train_subset=100)
    assert other.fingerprint() != data.fingerprint()


def test_dataset_splits_attributes():
    data = load_dataset("synthetic")
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 28)
    assert data.allows_flip is False and data.crop_padding == 2
    assert len(data.classes) == 10 and len(data.mean) == 1 and len(data.std) == 1
    assert "synthetic: train 540, val 60, test 200" in repr(data)
    with pytest.raises(ValueError, match="unknown split 'tset'; did you mean 'test'"):
        data.split("tset")


# ----------------------------------------------------------------------------------------
# Synthetic


def test_synthetic_deterministic_and_seeded():
    a = synthetic.load_synthetic(seed=1)
    b = synthetic.load_synthetic(seed=1)
    c = synthetic.load_synthetic(seed=2)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, c.train_images)
    assert a.train_images.shape == (600, 1, 28, 28)
    assert torch.bincount(a.train_labels).tolist() == [60] * 10
    rgb = synthetic.load_synthetic(channels=3, image_size=32, num_classes=4, train_size=40, test_size=8)
    assert rgb.train_images.shape == (40, 3, 32, 32)


def test_synthetic_is_learnable():
    """A tiny CNN with global pooling gets well above chance (10 %) in a few epochs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is faster, and steadier on a busy machine
    try:
        _train_tiny_cnn_on_synthetic()
    finally:
        torch.set_num_threads(threads)


def _train_tiny_cnn_on_synthetic():
    torch.manual_seed(0)
    data = load_dataset("synthetic")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    loader = data.train_loader(batch_size=64, seed=0)
    for epoch in range(8):
        for x, y in loader.epoch(epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.eval_loader("val"))
    assert correct / len(data.val_labels) > 0.4


# ----------------------------------------------------------------------------------------
# Augmentation and loaders


def test_random_crop_flip_matches_reference_including_extremes():
    g = torch.Generator().manual_seed(0)
    for c, h, w, pad in ((1, 28, 28, 2), (3, 32, 32, 4), (2, 5, 7, 3), (1, 6, 6, 0)):
        x = torch.randint(0, 256, (9, c, h, w), dtype=torch.uint8, generator=g)
        offsets = torch.randint(0, 2 * pad + 1, (9, 2), generator=g)
        flips = torch.rand(9, generator=g) < 0.5
        offsets[-1] = 2 * pad  # the last image's window reaches furthest
        flips[-1] = True
        got = random_crop_flip(x, offsets, flips, pad)
        assert got.shape == x.shape and got.dtype == x.dtype
        assert torch.equal(got, reference_crop_flip(x, offsets, flips, pad))
        no_flip = torch.zeros_like(flips)
        assert torch.equal(random_crop_flip(x, offsets, None, pad), reference_crop_flip(x, offsets, no_flip, pad))
        assert torch.equal(random_crop_flip(x.float(), offsets, flips, pad), got.float())
    # identity
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=g)
    assert torch.equal(random_crop_flip(x, torch.full((4, 2), 2), torch.zeros(4, dtype=torch.bool), 2), x)


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    y = normalize(x, (0.5, 0.0, 1.0), (0.5, 1.0, 2.0))
    assert y.dtype == torch.float32 and y.is_contiguous()
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-1.0, 0.0, -0.5]))
    assert torch.allclose(y[1, :, 0, 0], torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="1 or 3 values"):
        normalize(x, (0.5, 0.5), (1.0, 1.0))


def _loader(n=300, c=1, size=28, **kw):
    g = torch.Generator().manual_seed(42)
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    defaults = dict(batch_size=64, shuffle=True, augment=True, seed=7, pad=2, flip=True)
    defaults.update(kw)
    return DeviceLoader(images, labels, **defaults)


def test_loader_batches_cover_epoch():
    loader = _loader()
    assert len(loader) == 5
    seen = []
    for x, y, idx in loader.epoch(0, with_indices=True):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert torch.equal(y, loader.labels[idx])
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(300))
    assert [b.tolist() for b in loader.batch_indices(0)] == [i.tolist() for i in seen]
    assert torch.equal(torch.cat(seen), loader.permutation(0))
    dropped = _loader(drop_last=True)
    assert len(dropped) == 4 and all(x.shape[0] == 64 for x, _ in dropped.epoch(0))


def test_loader_same_seed_epoch_same_batches_and_augmentation():
    a, b = _loader(), _loader()
    for (xa, ya), (xb, yb) in zip(a.epoch(3), b.epoch(3)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x0 = torch.cat([x for x, _ in a.epoch(0)])
    x1 = torch.cat([x for x, _ in a.epoch(1)])
    assert not torch.equal(x0, x1)
    assert not torch.equal(a.permutation(0), a.permutation(1))
    other_seed = _loader(seed=8)
    assert not torch.equal(other_seed.permutation(3), a.permutation(3))


def test_augmentation_depends_on_sample_not_batching():
    """A sample's crop and flip in an epoch do not depend on batch size or order."""
    a = _loader(batch_size=64)
    b = _loader(batch_size=50, shuffle=False)
    xa = torch.empty(300, 1, 28, 28)
    for x, _, idx in a.epoch(2, with_indices=True):
        xa[idx] = x
    xb = torch.cat([x for x, _ in b.epoch(2)])
    assert torch.equal(xa, xb)


def test_crop_keeps_shape_and_shifts():
    loader = _loader(flip=False, pad=2, shuffle=False)
    offsets, flips = loader.augmentation(0)
    assert not flips.any() and offsets.min() >= 0 and offsets.max() <= 4
    x = torch.cat([x for x, _ in loader.epoch(0)])
    expected = normalize(reference_crop_flip(loader.images, offsets, flips, 2), loader.mean, loader.std)
    assert x.shape == (300, 1, 28, 28)
    assert torch.equal(x, expected)
    assert (offsets != 2).any(dim=1).float().mean() > 0.5  # most samples actually move


def test_flip_flips_half_the_samples():
    loader = _loader(n=2000, pad=0, flip=True, shuffle=False, batch_size=500)
    x = torch.cat([x for x, _ in loader.epoch(0)])
    plain = normalize(loader.images, loader.mean, loader.std)
    flipped = torch.all((x == plain.flip(-1)).flatten(1), dim=1)
    same = torch.all((x == plain).flatten(1), dim=1)
    assert torch.all(flipped ^ same)  # each sample is either mirrored or untouched
    assert 0.45 < flipped.float().mean() < 0.55
    _, flips = loader.augmentation(0)
    assert torch.equal(flipped, flips)


def test_no_augmentation_and_eval_loader():
    data = load_dataset("synthetic")
    assert data.train_loader(augment=False).augments is False
    no_flip = data.train_loader()  # synthetic forbids flips
    assert no_flip.flip is False and not no_flip.augmentation(0)[1].any()
    ev = data.eval_loader("val", batch_size=16)
    assert not ev.shuffle and not ev.augments
    x = torch.cat([x for x, _ in ev])
    assert torch.allclose(x, normalize(data.val_images, data.mean, data.std))
    test = data.eval_loader("test")
    assert test.num_samples == 200


def test_normalisation_gives_zero_mean_unit_std_on_train():
    data = load_dataset("synthetic")
    x = torch.cat([x for x, _ in data.eval_loader("train")])
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    rgb = load_dataset("synthetic", channels=3, num_classes=4, train_size=80, test_size=8)
    x = torch.cat([x for x, _ in rgb.eval_loader("train")])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_loader_validates_arguments():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(images, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, torch.zeros(4, dtype=torch.int64), batch_size=0)


def test_splits_to_device_and_loader_device():
    data = load_dataset("synthetic", train_size=40, test_size=10, device="cpu")
    assert data.device == torch.device("cpu")
    loader = data.train_loader(8, device="cpu")
    assert loader.images.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loader_on_cuda_matches_cpu():
    data = load_dataset("synthetic")
    cpu = data.train_loader(64, "cpu", seed=1)
    gpu = data.train_loader(64, "cuda", seed=1)
    for (xc, yc), (xg, yg) in zip(cpu.epoch(0), gpu.epoch(0)):
        assert xg.device.type == "cuda"
        assert torch.allclose(xc, xg.cpu()) and torch.equal(yc, yg.cpu())


# ----------------------------------------------------------------------------------------
# Fashion-MNIST


def test_fashion_mnist_missing_error_says_how_to_get_it(no_debian):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", download=False)
    assert isinstance(err.value, FileNotFoundError)
    text = str(err.value)
    assert "sudo apt-get install dataset-fashion-mnist" in text
    assert "--data-dir" in text and "RELKD_DATA_DIR" in text
    assert "train-images-idx3-ubyte" in text and "not-installed" in text


def test_fashion_mnist_explicit_dir_is_strict(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="leave out data_dir") as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files_in_data_dir(tmp_path, compress):
    arrays = make_fake_fmnist(tmp_path / "fm", compress=compress)
    data = load_dataset("fashion-mnist", data_dir=tmp_path / "fm", val_fraction=0.2)
    assert (len(data.train_labels), len(data.val_labels), len(data.test_labels)) == (40, 10, 20)
    assert torch.equal(data.test_images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert data.classes[0] == "T-shirt/top" and data.allows_flip and data.crop_padding == 2
    # unpacked once into the cache in torchvision's layout
    cached = list((D.cache_dir() / "fashion-mnist").glob("*/FashionMNIST/raw/train-images-idx3-ubyte"))
    assert len(cached) == 1
    assert not list((D.cache_dir() / "fashion-mnist").glob("*/FashionMNIST/raw/.*tmp"))
    again = load_dataset("fashion-mnist", data_dir=tmp_path / "fm", val_fraction=0.2)
    assert again.fingerprint() == data.fingerprint()


def test_fashion_mnist_cache_write_is_safe_when_concurrent(tmp_path):
    """Several writers unpacking into the same cache folder at once all end with complete
    files, and no temporary file is left behind."""
    import multiprocessing as mp

    make_fake_fmnist(tmp_path / "src", n_train=2000)
    files = FM.find_idx_files(tmp_path / "src")
    root = tmp_path / "cache"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=FM.materialise_idx, args=(files, root)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FM.FASHION_MNIST_FILES)
    for base in FM.FASHION_MNIST_FILES:
        assert (raw / base).read_bytes() == gzip.decompress(files[base].read_bytes())


def test_fashion_mnist_from_env_and_torchvision_layout(tmp_path, monkeypatch, no_debian):
    make_fake_fmnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    data = load_dataset("fashion-mnist", download=False)
    assert data.source == str(tmp_path)
    assert len(data.test_labels) == 20


def test_fashion_mnist_env_dir_falls_through_to_debian(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    make_fake_fmnist(debian)
    monkeypatch.setattr(FM, "DEBIAN_FASHION_MNIST_DIRS", (debian,))
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "empty"))
    data = load_dataset("fashion-mnist", download=False)
    assert data.source == str(debian)


def test_fashion_mnist_truncated_file_gives_clear_error(tmp_path):
    make_fake_fmnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="could not read Fashion-MNIST"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.fmnist
def test_real_fashion_mnist_from_debian():
    data = load_dataset("fashion-mnist", download=False)
    assert data.source == str(DEBIAN_FMNIST)
    assert len(data.train_labels) + len(data.val_labels) == 60000
    assert (len(data.val_labels), len(data.test_labels)) == (6000, 10000)
    assert data.train_images.shape[1:] == (1, 28, 28) and data.train_images.dtype == torch.uint8
    assert sorted(data.test_labels.unique().tolist()) == list(range(10))
    assert torch.bincount(data.val_labels).tolist() == [600] * 10
    assert abs(data.mean[0] - 0.286) < 0.002 and abs(data.std[0] - 0.353) < 0.002


# ----------------------------------------------------------------------------------------
# CIFAR


def test_fake_cifar10(tmp_path, caplog):
    written = make_fake_cifar(tmp_path)
    data = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.1)
    assert (len(data.train_labels), len(data.val_labels), len(data.test_labels)) == (90, 10, 20)
    assert data.in_channels == 3 and data.image_size == 32 and data.num_classes == 10
    assert data.classes[3] == "class3" and data.allows_flip and data.crop_padding == 4
    # pixel layout: CHW rows of the pickles
    expected = torch.from_numpy(written["test_batch"][0].reshape(-1, 3, 32, 32))
    assert torch.equal(data.test_images, expected)
    assert data.test_labels.tolist() == written["test_batch"][1]
    assert "do not match the checksums" in caplog.text  # torchvision's md5 check rejected them
    # the folder itself may be given, and $RELKD_DATA_DIR works
    same = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", val_fraction=0.1)
    assert same.fingerprint() == data.fingerprint()


def test_fake_cifar100_from_env(tmp_path, monkeypatch):
    written = make_fake_cifar(tmp_path, hundred=True)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    data = load_dataset("cifar100", val_fraction=0.0)
    assert data.num_classes == 100 and len(data.train_labels) == 100 and len(data.val_labels) == 0
    assert data.test_labels.tolist() == written["test"][1]


def test_cifar_missing_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    text = str(err.value)
    assert "cifar-10-batches-py" in text and "cifar-10-python.tar.gz" in text and "--data-dir" in text
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100")


def test_cifar_missing_file(tmp_path):
    make_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing file.*data_batch_4"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_corrupt_file(tmp_path):
    make_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read CIFAR-10"):
        load_dataset("cifar10", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------
# Image folders


def test_imagefolder(tmp_path):
    make_image_folder(tmp_path)
    data = load_dataset("imagefolder", data_dir=tmp_path, image_size=12, val_fraction=0.25)
    assert data.classes == ("cat", "dog", "eel")
    assert data.train_images.shape[1:] == (3, 12, 12) and data.train_images.dtype == torch.uint8
    assert (len(data.train_labels), len(data.val_labels), len(data.test_labels)) == (9, 3, 12)
    assert torch.bincount(data.val_labels).tolist() == [1, 1, 1]
    # colours survive the resize: class 0 red, 1 green, 2 blue
    centre = data.test_images[:, :, 6, 6].long()
    assert torch.equal(centre.argmax(1), data.test_labels)
    assert data.crop_padding == 1 and data.allows_flip
    # decoded once, then read from the cache
    assert len(list((D.cache_dir() / "imagefolder").glob("*.pt"))) == 1
    again = load_dataset("imagefolder", data_dir=tmp_path, image_size=12, val_fraction=0.25)
    assert again.fingerprint() == data.fingerprint()
    grey = load_dataset("imagefolder", data_dir=tmp_path, image_size=8, channels=1, flip=False, cache=False)
    assert grey.train_images.shape[1:] == (1, 8, 8) and not grey.allows_flip


def test_imagefolder_with_val_folder(tmp_path):
    make_image_folder(tmp_path, splits=("train", "val", "test"), per_class=2)
    data = load_dataset("imagefolder", data_dir=tmp_path, image_size=8, val_fraction=0.5)
    assert (len(data.train_labels), len(data.val_labels), len(data.test_labels)) == (6, 6, 6)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no root directory"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetNotFoundError, match="ROOT/train/<class>"):
        load_dataset("imagefolder", data_dir=tmp_path)
    make_image_folder(tmp_path)
    (tmp_path / "test" / "fox").mkdir()
    with pytest.raises(ValueError, match="fox"):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
