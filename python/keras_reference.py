"""Reference facts from Keras, for tlx's tests (never used by tlx itself).

    keras_reference.py layers [alpha] [height] [width]
        JSON: [{"index", "name", "class", "weights": [[name, shape], ...]}, ...]
    keras_reference.py features WEIGHTS_DIR ALPHA HEIGHT WIDTH INPUT.f32 OUTPUT.f32
        Keras's MobileNetV2 base (weights set by name from a tlx checkpoint folder) run on
        raw float32 inputs already scaled to [-1, 1]; writes the feature maps.
    keras_reference.py h5 ALPHA HEIGHT OUTPUT.h5 SEED
        A legacy-layout Keras weights file (root attribute layer_names, each group's
        weight_names) of a seeded random MobileNetV2 base, as keras.applications ships them.
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


def features(weights_dir, alpha, height, width, input_file, output_file):
    import numpy as np
    from tlx_checkpoint import assign_by_path, read_named_weights

    base = keras.applications.MobileNetV2(input_shape=(height, width, 3), alpha=alpha, include_top=False, weights=None)
    assign_by_path(base.layers, read_named_weights(weights_dir))
    x = np.fromfile(input_file, dtype="<f4").reshape(-1, height, width, 3)
    np.asarray(base(x, training=False), dtype="<f4").tofile(output_file)


def legacy_h5(alpha, size, output, seed):
    import h5py
    import numpy as np

    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None)
    rng = np.random.default_rng(seed)
    with h5py.File(output, "w") as f:
        weighted = [layer for layer in base.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in weighted]
        for layer in weighted:
            group = f.create_group(layer.name)
            names = []
            for variable in layer.weights:
                short = variable.path.split("/")[-1]
                if short == "kernel" and layer.name.endswith("depthwise"):
                    short = "depthwise_kernel"
                value = rng.normal(0.0, 0.1, size=variable.shape).astype("float32")
                if short == "moving_variance":
                    value = np.abs(value) + 0.5
                name = f"{layer.name}/{short}:0"
                group.create_dataset(name, data=value)
                names.append(name.encode())
            group.attrs["weight_names"] = names


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "features":
        features(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7])
    elif command == "h5":
        legacy_h5(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    elif command == "layers":
        alpha = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
        height = int(sys.argv[3]) if len(sys.argv) > 3 else 160
        width = int(sys.argv[4]) if len(sys.argv) > 4 else height
        json.dump(layers(alpha, height, width), sys.stdout)
    else:
        raise SystemExit(f"unknown command {command}")
