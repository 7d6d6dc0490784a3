"""relkd.data.stream: streamed batches are the device-resident path's batches, read through
DataLoader workers; which path a dataset takes (data.loader, data.max_resident_gib); image
folders streamed without being decoded whole; an unreadable image refused, naming it."""
import copy

import pytest
import torch
from PIL import Image

import relkd.data.imagefolder as imagefolder
from relkd.data import DataFieldError, DeviceLoader, StreamLoader, load_dataset
from relkd.data.image_files import ImageFiles
from relkd.data.stream import resolve_loader
from relkd.engine import TeacherOutputs, run_trial
from relkd.fields import ConfigError
from relkd.setting import comparable_setting, validate_setting
from tiny import TINY_SETTING

GIB = 2**30


def batches(loader, epoch):
    return [tuple(t.clone() for t in b) for b in loader.epoch(epoch, with_indices=True)]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_streamed_batches_are_the_resident_batches_bit_for_bit(workers, drop_last):
    data = load_dataset("synthetic", train_size=150, test_size=20, image_size=12)
    options = dict(shuffle=True, augment=True, seed=3, mean=data.mean, std=data.std, pad=2, flip=True,
                   drop_last=drop_last)
    resident = DeviceLoader(data.train_images, data.train_labels, 32, **options)
    streamed = StreamLoader(data.train_images, data.train_labels, 32, workers=workers, **options)
    assert len(streamed) == len(resident) == (4 if drop_last else 5) and streamed.augments
    for epoch in (0, 1):
        ours, theirs = batches(streamed, epoch), batches(resident, epoch)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(batches(streamed, 0)[0][0], batches(streamed, 1)[0][0])  # a new order and crops


def test_which_path_a_dataset_takes():
    assert resolve_loader("auto", GIB, 4.0) == "device" and resolve_loader("auto", 5 * GIB, 4.0) == "stream"
    assert resolve_loader("stream", 1, 4.0) == "stream" and resolve_loader("device", GIB, 4.0) == "device"
    with pytest.raises(DataFieldError) as err:
        resolve_loader("device", 5 * GIB, 4.0)
    assert err.value.field == "loader" and "5.00 GiB, over data.max_resident_gib (4 GiB)" in str(err.value)


def test_a_streamed_dataset_has_the_resident_fingerprint_and_streams_every_split():
    resident = load_dataset("synthetic", train_size=120, test_size=30, loader="device")
    streamed = load_dataset("synthetic", train_size=120, test_size=30, loader="stream", workers=0)
    assert resident.loader == "device" and streamed.loader == "stream" and "streamed" in streamed.summary()
    assert streamed.fingerprint() == resident.fingerprint()  # the same data: the same teacher cache
    assert isinstance(streamed.train_loader(16), StreamLoader)
    assert isinstance(streamed.eval_loader("test"), StreamLoader)
    assert type(resident.train_loader(16)) is DeviceLoader
    subset = dict(train_subset=40, val_fraction=0.25, labelled=20)  # splits and subsets: the same samples
    a, b = (load_dataset("synthetic", train_size=120, test_size=30, loader=mode, **subset)
            for mode in ("device", "stream"))
    assert a.fingerprint() == b.fingerprint() and torch.equal(a.train_labels, b.train_labels)
    assert torch.equal(a.val_images, b.val_images) and len(b.train_labels) == 40
    tiny = load_dataset("synthetic", train_size=120, test_size=30, loader="auto", max_resident_gib=1e-6)
    assert tiny.loader == "stream"  # over the limit: streamed
    assert tiny.train_loader(16).workers == 0  # images in host memory: read in this process by default
    files = ImageFiles("/x", ("/x/a.png",), 8, 1)
    assert StreamLoader(files, torch.zeros(1, dtype=torch.int64)).workers >= 1  # files: decoded by workers


def make_folder(root, per_class=6, size=(20, 14), classes=("ant", "bee", "cat")):
    for split in ("train", "test"):
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for k in range(per_class):
                Image.new("RGB", size, (30 * i + 5 * k, 90 + k, 200 - 20 * i)).save(root / split / name / f"{k}.png")


def test_an_image_folder_streams_without_being_decoded_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_folder(tmp_path / "root")
    resident = load_dataset("imagefolder", tmp_path / "root", image_size=8, val_fraction=0.2, loader="device")

    def never(files):
        raise AssertionError("the streamed path decoded a whole split")

    monkeypatch.setattr(imagefolder, "_decode_all", never)
    streamed = load_dataset("imagefolder", tmp_path / "root", image_size=8, val_fraction=0.2, loader="stream",
                            workers=0)
    assert isinstance(streamed.train_images, ImageFiles) and streamed.train_images.shape == (14, 3, 8, 8)
    assert streamed.fingerprint() == resident.fingerprint()  # from the files' list, sizes and times
    assert streamed.mean == pytest.approx(resident.mean) and streamed.std == pytest.approx(resident.std)
    a = batches(streamed.train_loader(5, seed=1), 0)
    b = batches(resident.train_loader(5, seed=1), 0)
    assert all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))
    bad = tmp_path / "root" / "train" / "ant" / "0.png"
    bad.write_bytes(b"not an image")
    message = r"cannot read the image '.*ant/0.png'.*remove or replace it"
    with pytest.raises(ValueError, match=message):  # refused, not skipped: found by the statistics' sample here
        load_dataset("imagefolder", tmp_path / "root", image_size=8, loader="stream", workers=0)
    with pytest.raises(ValueError, match=message):  # in a batch, on a folder too large for the sample to read it
        next(StreamLoader(ImageFiles(str(tmp_path), (str(bad),), 8, 3), torch.zeros(1, dtype=torch.int64),
                          workers=0).epoch(0))


def setting(**data):
    doc = copy.deepcopy(TINY_SETTING)
    doc["data"].update(data)
    return validate_setting(doc)


KD_AND_SP = {"ce_weight": 1.0, "kd": {"weight": 0.5, "temperature": 4.0},
             "terms": [{"tap": "pool", "affinity": "cosine", "loss": "mse", "weight": 1.0}]}


@pytest.mark.usefixtures("isolated")
def test_a_run_on_streamed_data_trains_as_the_resident_run_does():
    resident = run_trial(setting(loader="device"), KD_AND_SP, seed=0, teacher_cache=False)
    streamed = run_trial(setting(loader="stream", workers=0), KD_AND_SP, seed=0, teacher_cache=False)
    assert streamed.val_history == resident.val_history and streamed.part_means == resident.part_means


def test_streamed_teacher_outputs_are_files_mapped_on_the_host_and_shared(isolated):
    """Not augmented: the teacher's outputs of streamed data are written once to the cache folder and
    mapped into host memory (never held on the device); the run equals the resident cached run."""
    resident = run_trial(setting(loader="device"), KD_AND_SP, seed=0)
    TeacherOutputs.clear()
    streamed = run_trial(setting(loader="stream", workers=0), KD_AND_SP, seed=0)
    assert streamed.val_history == resident.val_history and streamed.part_means == resident.part_means
    files = sorted((isolated / "cache" / "teacher_outputs").rglob("*.f32"))
    assert [f.name for f in files] == ["logits.f32", "pool.f32"]
    (mapped,) = TeacherOutputs._mapped.values()
    assert sorted(mapped) == ["logits", "pool"] and all(t.device.type == "cpu" for t in mapped.values())
    before = [f.stat().st_mtime_ns for f in files]
    TeacherOutputs.clear()  # another process: reads the files, does not write them again
    again = run_trial(setting(loader="stream", workers=0), KD_AND_SP, seed=0)
    assert again.part_means == streamed.part_means and [f.stat().st_mtime_ns for f in files] == before
    files[0].write_bytes(files[0].read_bytes()[:-4])  # a damaged file is computed again, never used
    TeacherOutputs.clear()
    assert run_trial(setting(loader="stream", workers=0), KD_AND_SP, seed=0).part_means == streamed.part_means
    augmented = setting(loader="stream", workers=0, augment=True)  # other images every epoch: live
    TeacherOutputs.clear()
    run_trial(augmented, KD_AND_SP, seed=0)
    assert not TeacherOutputs._mapped


@pytest.mark.usefixtures("isolated")
def test_bad_loader_fields_are_named_before_anything_trains():
    with pytest.raises(ConfigError, match=r"data.loader: expected one of auto, device, stream"):
        setting(loader="disk")
    with pytest.raises(ConfigError, match=r"data.workers"):
        setting(workers=-1)
    with pytest.raises(ConfigError, match=r"data.loader: loader: device keeps the splits on the device"):
        run_trial(setting(loader="device", max_resident_gib=1e-6), "none", seed=0)
    assert setting(loader="stream", workers=2).to_dict()["data"]["loader"] == "stream"
    assert "loader" not in setting().to_dict()["data"]  # the default is not written: older records stay the same
    # a streamed worker and a device-resident one may share a study: the same batches
    assert comparable_setting(setting(loader="stream", workers=2).to_dict()) == comparable_setting(setting().to_dict())
