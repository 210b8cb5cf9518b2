"""How many calibration images an int8 export needs: accuracy and convert seconds per count.

    .venv/bin/python bench/calibration.py RUN_DIR --data DATASET_DIR [--counts 100,300] [--subsets 4]

Takes a finished run (its model/ folder), calibrates int8 conversions with tlx's own
converter on random subsets of DATASET_DIR/train of each size, and measures each .tflite
on every image of DATASET_DIR/validation: the held-out images of the quickstart, five times
its 96-image test split, so one image is 0.2 points and not 1. Prints one JSON line per
conversion, then per count the mean, min and max accuracy and the median convert seconds.
It backs the default of export.tflite.representative_images.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tlx_export  # noqa: E402
from tlx_checkpoint import read_named_weights  # noqa: E402
from tlx_images import decode_resized_files  # noqa: E402


def image_folder(root, classes):
    files, labels = [], []
    for index, name in enumerate(classes):
        names = sorted(os.listdir(os.path.join(root, name)))
        files += [os.path.join(root, name, n) for n in names]
        labels += [index] * len(names)
    return files, np.array(labels)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True)
    parser.add_argument("--counts", default="100,300")
    parser.add_argument("--subsets", type=int, default=4)
    args = parser.parse_args()

    with open(os.path.join(args.run_dir, "model", "classifier.json")) as f:
        spec = json.load(f)
    with open(os.path.join(args.run_dir, "labels.txt")) as f:
        classes = f.read().split()
    height, width = spec["imageSize"]
    model, base, single, _ = tlx_export.prepare(spec)
    tlx_export.assign_weights(model, base, read_named_weights(os.path.join(args.run_dir, "model", "named")))

    train_files, _ = image_folder(os.path.join(args.data, "train"), classes)
    held_out_files, truth = image_folder(os.path.join(args.data, "validation"), classes)
    train = decode_resized_files(train_files, height, width, "bilinear")
    held_out = decode_resized_files(held_out_files, height, width, "bilinear")

    random = np.random.default_rng(0)
    output = os.path.join(tempfile.mkdtemp(prefix="tlx-calibration-"), "model.tflite")
    for count in [int(c) for c in args.counts.split(",")]:
        accuracies, seconds = [], []
        for subset in range(args.subsets):
            chosen = train[random.permutation(len(train))[:count]]
            started = time.perf_counter()
            flatbuffer = tlx_export.convert(single, "int8", "uint8", chosen, lambda step: None)
            seconds.append(time.perf_counter() - started)
            with open(output, "wb") as f:
                f.write(flatbuffer)
            _, probabilities, _ = tlx_export.run_tflite(output, held_out)
            accuracies.append(float(np.mean(probabilities.argmax(axis=1) == truth)))
            print(json.dumps({"count": count, "subset": subset, "convert_seconds": round(seconds[-1], 2), "accuracy": accuracies[-1]}), flush=True)
        print(json.dumps({"count": count, "images": len(truth), "mean_accuracy": round(statistics.mean(accuracies), 4), "min": min(accuracies), "max": max(accuracies), "median_convert_seconds": round(statistics.median(seconds), 2)}), flush=True)
    os.remove(output)


if __name__ == "__main__":
    main()
