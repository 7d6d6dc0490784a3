"""The files of the worked example "Your teacher, your data" (studies/imagefolder_pretrained.yaml):
an image folder and a teacher you trained yourself, as a user comes with them.

    python scripts/imagefolder_example.py                  # runs/imagefolder_example/{data,teacher.pt}
    relkd study run studies/imagefolder_pretrained.yaml    # the study: the teacher as it is, the folder streamed

Writes ``OUT/data/{train,test}/<class>/*.png`` (Fashion-MNIST images as PNG files: ``--per-class``
training images of each class and a fifth as many test images) and ``OUT/teacher.pt``: a
``cnn_small`` trained here with a plain PyTorch loop (not relkd's engine) and saved as
``{'state_dict': ...}``, as Lightning and RepDistiller save checkpoints. ``--source synthetic``
draws the images from relkd's generated data instead (no Fashion-MNIST needed; the tests use it).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from PIL import Image

from relkd.data import load_dataset
from relkd.models import create_model

log = logging.getLogger("imagefolder_example")

#: the study file's data parameters: what the teacher here is trained on too
IMAGE_PARAMS = {"image_size": 28, "channels": 1, "flip": False}


def make_folder(root: Path, per_class: int = 200, source: str = "fashion-mnist") -> Path:
    """``root/{train,test}/<class>/<n>.png``: ``per_class`` training and ``per_class // 5`` test
    images of each class of ``source`` (the first of each class, in the source's order)."""
    data = load_dataset(source, val_fraction=0.0, loader="device",
                        **({"train_size": 12 * per_class, "test_size": 3 * per_class} if source == "synthetic" else {}))
    for split, images, labels, count in (("train", data.train_images, data.train_labels, per_class),
                                         ("test", data.test_images, data.test_labels, max(1, per_class // 5))):
        for c, name in enumerate(data.classes):
            folder = root / split / name.replace("/", "-").replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for n, i in enumerate((labels == c).nonzero().squeeze(1)[:count].tolist()):
                Image.fromarray(images[i, 0].numpy(), mode="L").save(folder / f"{n}.png")
    return root


def train_teacher(data_dir: Path, out: Path, epochs: int = 2, seed: int = 0) -> Path:
    """A ``cnn_small`` trained on ``data_dir``'s training split for ``epochs`` epochs (SGD, the
    data's normalisation, as relkd reads the folder), saved to ``out`` as ``{'state_dict': ...}``."""
    data = load_dataset("imagefolder", data_dir, val_fraction=0.1, loader="device", **IMAGE_PARAMS)
    torch.manual_seed(seed)
    model = create_model("cnn_small", num_classes=data.num_classes, in_channels=data.in_channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = data.train_loader(batch_size=64, seed=seed, augment=False)
    model.train()
    for epoch in range(epochs):
        for x, y in loader.epoch(epoch):
            loss = torch.nn.functional.cross_entropy(model(x, taps=["logits"])["logits"], y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log.info("teacher epoch %d: loss %.3f", epoch + 1, loss.item())
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.net.state_dict(), "epoch": epochs}, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/imagefolder_example"))
    parser.add_argument("--per-class", type=int, default=200, help="training images of each class")
    parser.add_argument("--source", default="fashion-mnist", choices=["fashion-mnist", "synthetic"])
    parser.add_argument("--epochs", type=int, default=2, help="the teacher's epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = make_folder(args.out / "data", args.per_class, args.source)
    teacher = train_teacher(data_dir, args.out / "teacher.pt", args.epochs)
    print(f"wrote {data_dir} and {teacher}; now: relkd study run studies/imagefolder_pretrained.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
