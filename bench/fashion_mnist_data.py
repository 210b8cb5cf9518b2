"""Writes Fashion-MNIST's 60,000 training images as class folders, once, for the real-size
bench case (bench/compare.ts --cases fashion60k). Debian's `dataset-fashion-mnist` holds the
IDX files; its 10,000 test images stay out. Every fifth image of each class (by its index in
the IDX file) goes to validation/, the rest to train/: 48,000 and 12,000 images, the same
folders for tlx and Keras, no split left to either tool's random stream.

    apt-get install dataset-fashion-mnist
    .venv/bin/python bench/fashion_mnist_data.py TARGET_DIR
"""

import gzip
import os
import pathlib
import sys

import numpy as np
from PIL import Image

SOURCE = pathlib.Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def read_idx():
    with gzip.open(SOURCE / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(SOURCE / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def main(target: pathlib.Path) -> None:
    done = target / ".complete"
    if done.exists():
        print(f"{target}: already written")
        return
    if not SOURCE.exists():
        sys.exit(f"{SOURCE}: not found; apt-get install dataset-fashion-mnist")
    images, labels = read_idx()
    for label, name in enumerate(CLASSES):
        for index_in_class, index in enumerate(np.flatnonzero(labels == label)):
            split = "validation" if index_in_class % 5 == 0 else "train"
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index], mode="L").save(folder / f"{index:05d}.png")
    done.write_text(f"{len(labels)} images\n")
    print(f"{target}: wrote {len(labels)} images")


if __name__ == "__main__":
    main(pathlib.Path(os.path.abspath(sys.argv[1])))
