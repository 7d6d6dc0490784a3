"""Splits: the classes kept, the stratified train/val split, per-class subsets and the labelled samples
(:mod:`relkd.data.dataset` builds the :class:`~relkd.data.DatasetSplits` a run trains on from them)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import torch
from torch import Tensor

from ..registry import unknown_name_message
from .base import DataFieldError, RawDataset

__all__ = ["keep_classes", "labelled_positions", "resolve_classes", "split_indices"]

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


def keep_classes(raw: RawDataset, keep: tuple[int, ...]) -> RawDataset:
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
