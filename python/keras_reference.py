"""Reference facts from Keras, for tlx's tests (never used by tlx itself).

    keras_reference.py layers BASE ALPHA HEIGHT WIDTH MINIMALISTIC
        JSON: [{"index", "name", "class", "weights": [[name, shape], ...], "output", "params"}, ...]
    keras_reference.py features WEIGHTS BASE ALPHA HEIGHT WIDTH MINIMALISTIC INPUT.f32 OUTPUT.f32
        Keras's base (weights set by name from a tlx checkpoint folder, or loaded by Keras
        from a legacy .h5) run with
        training=False on raw float32 inputs (MobileNetV2: already scaled to [-1, 1]);
        writes the feature maps.
    keras_reference.py trainable BASE ALPHA HEIGHT WIDTH MINIMALISTIC FINE_TUNE_AT
        JSON: the tutorial's trainable-variable count for base layers from FINE_TUNE_AT on.
    keras_reference.py h5 BASE ALPHA SIZE MINIMALISTIC OUTPUT.h5 SEED [keras2-names]
        A legacy-layout Keras weights file (root attribute layer_names, each group's
        weight_names) of seeded random weights, as keras.applications ships them;
        keras2-names writes Keras 2's names (expanded_conv/depthwise) to test loading by order.

    keras_reference.py batch
        Runs a JSON list of [command, args] from stdin in one process; prints a JSON list
        of what each printed.

BASE is a tlx base name; MINIMALISTIC is 0 or 1. EfficientNetB0 is built as Keras builds
it for weights="imagenet" (its extra Rescaling layer included), with the download and
loading of the weight file skipped.
"""

import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# As in tlx_worker.py: Keras's scikit-learn wrappers are never used here; their import is skipped.
sys.modules.setdefault("sklearn", None)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tlx_bases import keras_base  # noqa: E402


def efficientnet_as_imagenet(height, width):
    from keras.src.applications import efficientnet

    keras.backend.clear_session()
    get_file, load_weights = efficientnet.file_utils.get_file, keras.Model.load_weights
    efficientnet.file_utils.get_file = lambda *args, **kwargs: "not-downloaded.h5"
    keras.Model.load_weights = lambda self, *args, **kwargs: None
    try:
        return keras.applications.EfficientNetB0(input_shape=(height, width, 3), include_top=False, weights="imagenet")
    finally:
        efficientnet.file_utils.get_file, keras.Model.load_weights = get_file, load_weights


def reference_base(base, alpha, height, width, minimalistic):
    if base == "efficientnet_b0":
        return efficientnet_as_imagenet(height, width)
    return keras_base(base, alpha, height, width, minimalistic)


def layers(model):
    return [
        {
            "index": i,
            "name": layer.name,
            "class": layer.__class__.__name__,
            "weights": [[w.path.split("/")[-1], list(w.shape)] for w in layer.weights],
            "output": list(layer.output.shape[1:]),
            "params": int(sum(np.prod(w.shape) for w in layer.weights)),
        }
        for i, layer in enumerate(model.layers)
    ]


def features(model, weights, input_file, output_file):
    """weights: a tlx checkpoint folder (assigned by name) or a legacy .h5 (Keras's own load_weights)."""
    from tlx_checkpoint import assign_by_path, read_named_weights

    if weights.endswith(".h5"):
        model.load_weights(weights)
    else:
        assign_by_path(model.layers, read_named_weights(weights))
    height, width = model.input_shape[1:3]
    x = np.fromfile(input_file, dtype="<f4").reshape(-1, height, width, 3)
    np.asarray(model(x, training=False), dtype="<f4").tofile(output_file)


def trainable_count(model, fine_tune_at):
    """The tutorial's fine-tuning: base trainable, layers below fine_tune_at frozen, head of Dense(1)."""
    inputs = keras.Input(shape=model.input_shape[1:])
    x = model(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1)(x)
    classifier = keras.Model(inputs, outputs)
    model.trainable = True
    for layer in model.layers[:fine_tune_at]:
        layer.trainable = False
    return len(classifier.trainable_variables)


def keras2_name(name):
    """MobileNetV3's layer names in Keras 2 (Conv/BatchNorm, expanded_conv_3/depthwise/BatchNorm)."""
    name = {"conv": "Conv", "conv_bn": "Conv/BatchNorm", "conv_1": "Conv_1", "conv_1_bn": "Conv_1/BatchNorm"}.get(name, name)
    for suffix in ("_bn",):
        if name.endswith(suffix):
            name = name[: -len(suffix)] + "/BatchNorm"
    return re.sub(r"^(expanded_conv(?:_\d+)?)_", r"\1/", name)


def legacy_h5(model, output, seed, keras2_names):
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(output, "w") as f:
        weighted = [layer for layer in model.layers if layer.weights]
        names = [keras2_name(layer.name) if keras2_names else layer.name for layer in weighted]
        f.attrs["layer_names"] = [name.encode() for name in names]
        for layer, layer_name in zip(weighted, names):
            group = f.create_group(layer_name)
            weight_names = []
            for variable in layer.weights:
                short = variable.path.split("/")[-1]
                if short == "kernel" and ("depthwise" in layer.name or "dwconv" in layer.name):
                    short = "depthwise_kernel"
                value = rng.normal(0.0, 0.1, size=variable.shape).astype("float32")
                if short in ("moving_variance", "variance", "gamma"):
                    value = np.abs(value) + 0.5
                if short == "count":
                    value = np.array(1000, dtype="int64")
                name = f"{layer_name}/{short}:0"
                group.create_dataset(name, data=value)
                weight_names.append(name.encode())
            group.attrs["weight_names"] = weight_names


def run(command, args):
    """One command; returns what it prints."""
    if command == "layers":
        base, alpha, height, width, minimalistic = args
        return json.dumps(layers(reference_base(base, float(alpha), int(height), int(width), minimalistic == "1")))
    if command == "features":
        weights_dir, base, alpha, height, width, minimalistic, input_file, output_file = args
        features(reference_base(base, float(alpha), int(height), int(width), minimalistic == "1"), weights_dir, input_file, output_file)
        return ""
    if command == "trainable":
        base, alpha, height, width, minimalistic, fine_tune_at = args
        return str(trainable_count(reference_base(base, float(alpha), int(height), int(width), minimalistic == "1"), int(fine_tune_at)))
    if command == "h5":
        base, alpha, size, minimalistic, output, seed = args[:6]
        model = reference_base(base, float(alpha), int(size), int(size), minimalistic == "1")
        legacy_h5(model, output, int(seed), keras2_names=args[6:] == ["keras2-names"])
        return ""
    if command == "batch":
        # Many commands in one process (TensorFlow starts once): a JSON list of [command, args] on stdin.
        return json.dumps([run(job_command, job_args) for job_command, job_args in json.load(sys.stdin)])
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2:]), end="")
