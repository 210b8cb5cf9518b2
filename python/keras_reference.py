"""Reference facts from Keras, for tlx's tests: MobileNetV2's layers by index.

    .venv/bin/python python/keras_reference.py layers [alpha] [height] [width]
prints JSON: [{"index", "name", "class", "weights": [[name, shape], ...]}, ...]
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402


def layers(alpha: float, height: int, width: int) -> list:
    base = keras.applications.MobileNetV2(input_shape=(height, width, 3), alpha=alpha, include_top=False, weights=None)
    return [
        {
            "index": i,
            "name": layer.name,
            "class": layer.__class__.__name__,
            "weights": [[w.path.split("/")[-1], list(w.shape)] for w in layer.weights],
        }
        for i, layer in enumerate(base.layers)
    ]


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "layers":
        alpha = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
        height = int(sys.argv[3]) if len(sys.argv) > 3 else 160
        width = int(sys.argv[4]) if len(sys.argv) > 4 else height
        json.dump(layers(alpha, height, width), sys.stdout)
    else:
        raise SystemExit(f"unknown command {command}")
