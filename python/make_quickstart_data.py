"""Builds data/quickstart/fashion5: the offline quickstart dataset committed to the repo.

A subset of Fashion-MNIST (MIT licence, Zalando Research; Debian package
`dataset-fashion-mnist`): five confusable clothing classes, like the five flower classes
of the seed document's Android app. Training images come from the Fashion-MNIST
training set, validation images (of which tlx carves the test split) from its test set;
the first N of each class in file order, so the subset is reproducible.

    apt-get install dataset-fashion-mnist
    .venv/bin/python python/make_quickstart_data.py
"""

import gzip
import pathlib
import shutil

import numpy as np
from PIL import Image

SOURCE = pathlib.Path("/usr/share/datasets/fashion-mnist")
TARGET = pathlib.Path(__file__).resolve().parent.parent / "data" / "quickstart" / "fashion5"
CLASSES = {0: "tshirt_top", 1: "trouser", 2: "pullover", 3: "dress", 4: "coat"}
PER_CLASS = {"train": 240, "validation": 100}
FILES = {"train": "train", "validation": "t10k"}


def read_idx(kind: str):
    with gzip.open(SOURCE / f"{kind}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(SOURCE / f"{kind}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def main() -> None:
    if TARGET.exists():
        shutil.rmtree(TARGET)
    for split, kind in FILES.items():
        images, labels = read_idx(kind)
        for label, name in CLASSES.items():
            folder = TARGET / split / name
            folder.mkdir(parents=True)
            indices = np.flatnonzero(labels == label)[: PER_CLASS[split]]
            for index in indices:
                Image.fromarray(images[index], mode="L").save(folder / f"{kind}_{index:05d}.png", optimize=True)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
