"""Splits: classes kept, stratified train/val split, per-class subsets, and the DatasetSplits a run trains on."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..registry import unknown_name_message
from .base import ALIASES, DATASETS, DEFAULT_DATASET, DataFieldError, RawDataset
from .loader import DeviceLoader

__all__ = ["DatasetSplits", "canonical_dataset_name", "labelled_positions", "list_datasets", "load_dataset",
           "resolve_classes", "split_indices"]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------
# Splits


def resolve_classes(classes: Sequence[int | str], names: Sequence[str]) -> tuple[int, ...]:
    """The dataset class indices of ``classes`` (indices or names of ``names``), in the
    given order. Raises :class:`DataFieldError` (naming the bad entry and the valid classes) for an
    unknown name, an index out of range, a repeated class or fewer than two classes."""
    names = tuple(names)
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise DataFieldError("classes", f"classes must be a list of class indices or names, got {classes!r}")
    valid = ", ".join(f"{i}: {n}" for i, n in enumerate(names[:12])) + (" ..." if len(names) > 12 else "")
    out: list[int] = []
    for item in classes:
        if isinstance(item, str):
            if item not in names:
                raise DataFieldError("classes", unknown_name_message("class", item, list(names)))
            index = names.index(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            index = item
        else:
            raise DataFieldError("classes", f"class {item!r} is not an index 0..{len(names) - 1} or a class "
                                            f"name; the classes are {valid}")
        if index in out:
            raise DataFieldError("classes", f"class {item!r} ({names[index]}) is given twice; expected each class "
                                            f"at most once")
        out.append(index)
    if len(out) < 2:
        raise DataFieldError("classes", f"keep at least two classes, got {list(classes)!r}")
    return tuple(out)


def _keep_classes(raw: RawDataset, keep: tuple[int, ...]) -> RawDataset:
    """``raw`` restricted to the classes ``keep`` (every split), labels remapped to
    ``0..len(keep)-1`` in the order of ``keep``."""
    table = torch.full((len(raw.classes),), -1, dtype=torch.int64)
    table[torch.tensor(keep)] = torch.arange(len(keep))

    def select(images: Tensor | None, labels: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        if images is None or labels is None:
            return images, labels
        new = table[labels.to(torch.int64)]
        mask = new >= 0
        return images[mask], new[mask]

    xtr, ytr = select(raw.train_images, raw.train_labels)
    xte, yte = select(raw.test_images, raw.test_labels)
    xva, yva = select(raw.val_images, raw.val_labels)
    return dataclasses.replace(raw, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
                               val_images=xva, val_labels=yva, classes=tuple(raw.classes[i] for i in keep))


def _largest_remainder(class_counts: Tensor, total: int) -> Tensor:
    """Split ``total`` over classes in proportion to ``class_counts`` (Hamilton's method:
    floors, then one more for the largest remainders; ties go to the lower class)."""
    counts = class_counts.to(torch.float64)
    n = counts.sum()
    if n == 0 or total == 0:
        return torch.zeros_like(class_counts)
    quota = counts * (total / n)
    base = quota.floor().to(torch.int64)
    left = total - int(base.sum())
    if left > 0:
        remainder = quota - base.to(torch.float64)
        order = sorted(range(len(counts)), key=lambda c: (-float(remainder[c]), c))
        for c in order[:left]:
            base[c] += 1
    return torch.minimum(base, class_counts)


def _class_orders(labels: Tensor, num_classes: int, g: torch.Generator) -> list[Tensor]:
    """One random order of each class's positions in ``labels``, drawn from ``g`` in class order."""
    orders = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        orders.append(members[torch.randperm(members.numel(), generator=g)])
    return orders


def split_indices(
    labels: Tensor,
    val_fraction: float,
    split_seed: int = 0,
    train_subset: int | None = None,
    train_per_class: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Carve a stratified validation split from a training set.

    Returns ``(train_index, val_index)``: sorted, disjoint ``int64`` positions into
    ``labels``. ``val_index`` holds ``round(val_fraction * N)`` samples spread over the
    classes in proportion to their sizes (each class keeps at least one training sample).
    ``train_subset``, if given, keeps only that many training samples, drawn stratified
    too; ``train_per_class`` keeps that many of every class instead (the first
    ``train_per_class`` of each class's random order, so a larger value keeps a superset).
    The result depends only on the labels and the arguments; the validation split
    does not depend on ``train_subset``, so short trials on a subset are scored on the
    same validation samples as full ones.

    >>> y = torch.arange(100) % 4
    >>> tr, va = split_indices(y, 0.2, split_seed=0)
    >>> len(tr), len(va), torch.bincount(y[va]).tolist()
    (80, 20, [5, 5, 5, 5])
    """
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    labels = torch.as_tensor(labels).to("cpu", torch.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    n = labels.numel()
    if n == 0:
        raise ValueError("cannot split an empty training set")
    num_classes = int(labels.max()) + 1
    class_counts = torch.bincount(labels, minlength=num_classes)
    # One random order per class, drawn in class order: val is its head, train the rest.
    orders = _class_orders(labels, num_classes, torch.Generator().manual_seed(int(split_seed)))
    val_counts = _largest_remainder(class_counts, round(val_fraction * n))
    val_counts = torch.minimum(val_counts, (class_counts - 1).clamp_min(0))
    val = [order[: int(k)] for order, k in zip(orders, val_counts)]
    pool = [order[int(k):] for order, k in zip(orders, val_counts)]
    if train_subset is not None:
        pool_size = sum(p.numel() for p in pool)
        if isinstance(train_subset, bool) or not isinstance(train_subset, int) or train_subset < 1:
            raise ValueError(f"train_subset must be a positive integer or None, got {train_subset!r}")
        if train_subset > pool_size:
            raise ValueError(
                f"train_subset={train_subset} is more than the {pool_size} training samples left after carving "
                f"the validation split; use at most {pool_size}, or None for all of them"
            )
        keep = _largest_remainder(torch.tensor([p.numel() for p in pool]), train_subset)
        pool = [p[: int(k)] for p, k in zip(pool, keep)]
    if train_per_class is not None:
        if isinstance(train_per_class, bool) or not isinstance(train_per_class, int) or train_per_class < 1:
            raise DataFieldError("train_per_class",
                                 f"train_per_class must be a positive integer or None, got {train_per_class!r}")
        if train_subset is not None:
            raise DataFieldError("train_per_class", "give train_subset or train_per_class, not both")
        short = [f"class {c}: {p.numel()}" for c, p in enumerate(pool) if p.numel() < train_per_class]
        if short:
            raise DataFieldError(
                "train_per_class",
                f"train_per_class={train_per_class} is more than the training samples some classes have left "
                f"after carving the validation split ({', '.join(short[:5])}); use at most "
                f"{min(p.numel() for p in pool)}, or None for all of them"
            )
        pool = [p[:train_per_class] for p in pool]
    train_index = torch.sort(torch.cat(pool)).values
    val_index = torch.sort(torch.cat(val)).values
    return train_index, val_index


def labelled_positions(labels: Tensor, labelled: int, split_seed: int = 0) -> Tensor:
    """Which of a train split's samples keep their labels when only ``labelled`` do: sorted
    positions into ``labels``, stratified by class (Hamilton's rule, each class at least one),
    the head of one random order per class drawn from ``split_seed``, so a larger
    ``labelled`` keeps a superset.

    >>> y = torch.arange(100) % 4
    >>> torch.bincount(y[labelled_positions(y, 8)]).tolist()
    [2, 2, 2, 2]
    """
    labels = torch.as_tensor(labels).to("cpu", torch.int64)
    if isinstance(labelled, bool) or not isinstance(labelled, int) or labelled < 1:
        raise DataFieldError("labelled", f"labelled must be a positive integer or None, got {labelled!r}")
    counts = torch.bincount(labels)
    present = int((counts > 0).sum())
    if not present <= labelled <= labels.numel():
        raise DataFieldError(
            "labelled", f"labelled={labelled} must be between the {present} classes of the training split (one "
                        f"labelled sample each) and its {labels.numel()} samples; use a number in that range, or "
                        f"null to keep every label")
    keep = _largest_remainder(counts, labelled)
    for c in ((counts > 0) & (keep == 0)).nonzero().squeeze(1).tolist():  # every class keeps one label,
        keep[int(torch.argmax(keep))] -= 1  # taken from the class that keeps the most
        keep[c] = 1
    orders = _class_orders(labels, len(counts), torch.Generator().manual_seed(int(split_seed) + 7919))  # not val's
    return torch.sort(torch.cat([order[:k] for order, k in zip(orders, keep.tolist())])).values


def _channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (float64 accumulation)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to("cpu", torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    if bool((std < 1e-6).any()):
        logger.warning("a channel of the training images is constant; using std 1 for it")
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ----------------------------------------------------------------------------------------
# Splits object


@dataclass(eq=False)
class DatasetSplits:
    """A dataset split into train / val / test, as ``uint8`` ``(N, C, H, W)`` images and
    ``int64`` labels, with what a trainer needs to know about it.

    ``mean``/``std`` are per-channel statistics of the training pool (train + any
    train_subset's leftovers, never val or test) in [0, 1] units.
    ``train_index``/``val_index`` are the positions in the original training set the
    splits were taken from (for ``imagefolder`` with a ``val/`` folder, ``val_index``
    counts within that folder). The test split is only for final evaluation.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    allows_flip: bool
    crop_padding: int
    source: str
    train_index: Tensor
    val_index: Tensor
    val_fraction: float
    split_seed: int
    train_subset: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, repr=False)
    #: the dataset's class indices kept (``classes=``), in label order 0..k-1; None: all
    class_subset: tuple[int, ...] | None = None
    train_per_class: int | None = None
    #: student runs: only this many training samples keep their labels, the others are -1
    #: (unlabelled: CE skips them, the teacher's terms use them); None: every label
    labelled: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images."""
        return int(self.train_images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise ValueError(unknown_name_message("split", which, ["train", "val", "test"]))
        return getattr(self, f"{which}_images"), getattr(self, f"{which}_labels")

    def to(self, device: torch.device | str) -> DatasetSplits:
        """A copy with every tensor on ``device`` (tensors already there are shared)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def train_loader(
        self,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        *,
        seed: int = 0,
        augment: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> DeviceLoader:
        """A shuffling, augmenting :class:`DeviceLoader` over the train split with this
        dataset's normalisation, crop padding and flip setting."""
        return DeviceLoader(
            self.train_images, self.train_labels, batch_size, device,
            shuffle=shuffle, augment=augment, seed=seed, mean=self.mean, std=self.std,
            pad=self.crop_padding, flip=self.allows_flip, drop_last=drop_last,
        )

    def eval_loader(
        self, split: str = "val", batch_size: int = 512, device: torch.device | str | None = None
    ) -> DeviceLoader:
        """An in-order, unaugmented :class:`DeviceLoader` over ``"val"``, ``"test"`` or
        ``"train"``, normalised like training batches."""
        images, labels = self.split(split)
        return DeviceLoader(images, labels, batch_size, device, mean=self.mean, std=self.std)

    def fingerprint(self) -> str:
        """A short hash of the name, parameters, split settings and every image and label:
        equal fingerprints mean the same data in the same splits (a cache key)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            meta = (self.name, sorted(self.params.items()), self.val_fraction, self.split_seed, self.train_subset,
                    self.classes)
            # added only when set, so the fingerprints of existing settings stay as they were
            if self.class_subset is not None:
                meta += (("class_subset", self.class_subset),)
            if self.train_per_class is not None:
                meta += (("train_per_class", self.train_per_class),)
            if self.labelled is not None:
                meta += (("labelled", self.labelled),)
            h.update(repr(meta).encode())
            for t in (self.train_images, self.train_labels, self.val_images, self.val_labels,
                      self.test_images, self.test_labels):
                t = t.detach().to("cpu").contiguous()
                h.update(repr((tuple(t.shape), str(t.dtype))).encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def summary(self) -> str:
        """One line: name, sizes, shape, classes."""
        train = f"train {len(self.train_labels)}"
        if self.labelled is not None:
            train += f" ({self.labelled} labelled)"
        return (
            f"{self.name}: {train}, val {len(self.val_labels)}, test {len(self.test_labels)}; "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes; from {self.source}"
        )

    def __repr__(self) -> str:
        return f"DatasetSplits({self.summary()})"


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the available datasets matching a wildcard pattern."""
    return DATASETS.list(pattern)


def canonical_dataset_name(name: str) -> str:
    """The registry name for ``name`` (case, ``_`` and aliases such as ``fmnist`` accepted);
    an unknown name raises ``ValueError`` with the valid names and a did-you-mean."""
    if not isinstance(name, str):
        raise ValueError(unknown_name_message("dataset", name, DATASETS.list()))
    key = name.strip().lower()
    if key not in DATASETS:  # a registered name as it is (``my_data``), else with ``-`` for ``_`` or an alias
        key = ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
    if key not in DATASETS:
        raise ValueError(unknown_name_message("dataset", name, DATASETS.list()))
    return key


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    train_subset: int | None = None,
    classes: Sequence[int | str] | None = None,
    train_per_class: int | None = None,
    labelled: int | None = None,
    device: torch.device | str | None = None,
    **params: Any,
) -> DatasetSplits:
    """Load dataset ``name`` and split it into train / val / test.

    Args:
        name: one of :func:`list_datasets` (``fashion-mnist``, ``cifar10``, ``cifar100``,
            ``imagefolder``, ``synthetic``); case, ``_`` for ``-`` and a few aliases
            (``fmnist``, ``cifar-10``) are accepted.
        data_dir: where the files are. Given explicitly, only this directory is searched;
            otherwise ``$RELKD_DATA_DIR`` and each dataset's default places are.
        val_fraction: share of the training set held out for validation, stratified by
            class (ignored by ``imagefolder`` when a ``val/`` folder exists).
        split_seed: seed of the validation split and of ``train_subset``.
        train_subset: keep only this many training samples (stratified, deterministic in
            ``split_seed``), for short trials. The validation split is unaffected.
        classes: keep only these classes (indices or names of the dataset's classes), in
            every split; labels become 0..k-1 in the given order and ``classes`` holds
            their names. The validation split is carved from the kept classes' samples.
        train_per_class: keep this many training samples of every class (deterministic in
            ``split_seed``; the validation split is unaffected). Not together with
            ``train_subset``.
        labelled: keep the labels of only this many training samples (stratified,
            deterministic in ``split_seed``, a superset for a larger number); the others'
            labels are -1, which the objective's CE skips while KD and the relation and
            feature terms use every sample (few labels, many unlabelled images).
        device: move every split there (default: stay on the CPU; :class:`DeviceLoader`
            moves data to its device anyway).
        **params: the dataset's own parameters, e.g. ``download=False`` or, for
            ``imagefolder``, ``image_size=64``. ``DATASETS.info(name).params`` lists them.

    Raises:
        ValueError: unknown name or parameter (with valid names), bad split settings.
        DatasetNotFoundError: the files are missing; the message says how to get them.

    >>> data = load_dataset("synthetic", train_size=200, test_size=50)
    >>> data.summary()
    'synthetic: train 180, val 20, test 50; 1x28x28, 10 classes; from synthetic(seed=0)'
    """
    key = canonical_dataset_name(name)
    entry = DATASETS.get(key)
    resolved = entry.resolve_params(params)
    raw: RawDataset = entry.obj(data_dir=Path(data_dir).expanduser() if data_dir is not None else None, **resolved)

    ytr = raw.train_labels.to(torch.int64)
    num_classes = len(raw.classes)
    for split, y in (("train", ytr), ("test", raw.test_labels), ("val", raw.val_labels)):
        if y is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"{key}: {split} labels range over {int(y.min())}..{int(y.max())} but there are {num_classes} classes"
            )
    class_subset = None
    if classes is not None:
        class_subset = resolve_classes(classes, raw.classes)
        raw = _keep_classes(raw, class_subset)
        ytr = raw.train_labels

    if raw.val_images is not None and raw.val_labels is not None and raw.val_labels.numel():
        logger.info("%s: using the dataset's own validation set (%d samples); val_fraction is not used",
                    key, raw.val_labels.numel())
        train_index, _ = split_indices(ytr, 0.0, split_seed, train_subset, train_per_class)
        val_images, val_labels = raw.val_images, raw.val_labels.to(torch.int64)
        val_index = torch.arange(val_labels.numel())
        pool = torch.arange(ytr.numel())
    else:
        train_index, val_index = split_indices(ytr, val_fraction, split_seed, train_subset, train_per_class)
        val_images, val_labels = raw.train_images[val_index], ytr[val_index]
        subset = train_subset is not None or train_per_class is not None
        pool = split_indices(ytr, val_fraction, split_seed)[0] if subset else train_index
    mean, std = _channel_stats(raw.train_images[pool])
    train_labels = ytr[train_index]
    if labelled is not None:
        mask = torch.ones_like(train_labels, dtype=torch.bool)
        mask[labelled_positions(train_labels, labelled, split_seed)] = False
        train_labels = train_labels.masked_fill(mask, -1)

    splits = DatasetSplits(
        name=key,
        train_images=raw.train_images[train_index],
        train_labels=train_labels,
        val_images=val_images,
        val_labels=val_labels,
        test_images=raw.test_images,
        test_labels=raw.test_labels.to(torch.int64),
        classes=tuple(raw.classes),
        mean=mean,
        std=std,
        allows_flip=raw.allows_flip,
        crop_padding=raw.crop_padding,
        source=raw.source,
        train_index=train_index,
        val_index=val_index,
        val_fraction=float(val_fraction),
        split_seed=int(split_seed),
        train_subset=train_subset,
        params=dict(resolved),
        class_subset=class_subset,
        train_per_class=train_per_class,
        labelled=labelled,
    )
    logger.info("loaded %s", splits.summary())
    return splits.to(device) if device is not None else splits


