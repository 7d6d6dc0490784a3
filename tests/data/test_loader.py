"""relkd.data.loader: crops and flips, normalisation, seeds and ``DeviceLoader``."""
import pytest
import torch

from relkd.data.loader import DeviceLoader, mix_seed, normalize, random_crop_flip

IMAGES = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).reshape(2, 1, 3, 3)


def test_crop_and_flip_against_padding_by_hand():
    same = random_crop_flip(IMAGES, torch.full((2, 2), 1), None, pad=1)
    assert torch.equal(same, IMAGES)  # (pad, pad) is the identity
    padded = torch.nn.functional.pad(IMAGES, (1, 1, 1, 1))
    offsets = torch.tensor([[0, 2], [2, 0]])
    out = random_crop_flip(IMAGES, offsets, torch.tensor([True, False]), pad=1)
    assert torch.equal(out[0], torch.nn.functional.pad(IMAGES[0:1].flip(-1), (1, 1, 1, 1))[0, :, 0:3, 2:5])
    assert torch.equal(out[1], padded[1, :, 2:5, 0:3])


def test_normalize_per_channel_and_its_errors():
    images = torch.full((1, 2, 1, 1), 255, dtype=torch.uint8)
    assert normalize(images, (0.5, 0.0), (0.5, 2.0)).flatten().tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(images, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="mean and std need 1 or 2 values, got 3 and 1"):
        normalize(images, (0.1, 0.2, 0.3), (1.0,))


def test_mix_seed_is_stable_and_63_bit():
    assert mix_seed("a", 1) == mix_seed("a", 1) != mix_seed("a", 2)
    assert 0 <= mix_seed(0) < 2 ** 63


def test_epochs_are_reproducible_and_augmentation_depends_on_the_sample_not_the_batch():
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10)
    make = lambda b: DeviceLoader(images, labels, b, shuffle=True, augment=True, seed=3, pad=1, flip=True)  # noqa: E731
    a, b = make(4), make(3)
    assert len(a) == 3 and len(DeviceLoader(images, labels, 4, drop_last=True)) == 2
    xs, ys, idx = zip(*a.epoch(1, with_indices=True))
    assert sorted(torch.cat(ys).tolist()) == list(range(10)) and torch.equal(torch.cat(idx), torch.cat(ys))
    by_sample = {int(i): x for x, _, index in b.epoch(1, with_indices=True) for i, x in zip(index, x)}
    assert all(torch.equal(x, by_sample[int(i)]) for x, i in zip(torch.cat(xs), torch.cat(idx)))
    assert not torch.equal(a.permutation(1), a.permutation(2))
    plain = list(DeviceLoader(images, labels, 10))[0][0]
    assert torch.allclose(plain, images.float() / 255)  # mean 0, std 1: only scaled


@pytest.mark.parametrize("kwargs, message", [
    ({"images": torch.zeros(2, 1, 2, 2)}, "images must be a uint8"),
    ({"labels": torch.zeros(3, dtype=torch.long)}, "labels must be 1-D with 2 entries"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"pad": -1}, "pad must be a non-negative integer"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = {"images": torch.zeros(2, 1, 2, 2, dtype=torch.uint8), "labels": torch.zeros(2, dtype=torch.long),
            **kwargs}
    with pytest.raises(ValueError, match=message):
        DeviceLoader(**args)
