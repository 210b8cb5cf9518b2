"""Reads a tlx checkpoint folder (the run folder's format, ARCHITECTURE.md):

    checkpoint.json  {"weights": [{"name", "shape", "dtype": "float32"}, ...], ...}
    weights.bin      the float32 values (little-endian) of those variables, in that order

Names are Keras 3 variable paths, "<layer>/<variable>", so a Keras model takes them as
`named[f"{layer.name}/{variable.name}"]` with no renaming.
"""

import json
import os

import numpy as np


def read_named_weights(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, "checkpoint.json")) as f:
        meta = json.load(f)
    raw = np.fromfile(os.path.join(checkpoint_dir, "weights.bin"), dtype="<f4")
    weights, offset = {}, 0
    for spec in meta["weights"]:
        if spec.get("dtype", "float32") != "float32":
            raise ValueError(f"unsupported dtype {spec['dtype']} for {spec['name']}")
        size = int(np.prod(spec["shape"])) if spec["shape"] else 1
        weights[spec["name"]] = raw[offset : offset + size].reshape(spec["shape"])
        offset += size
    if offset != raw.size:
        raise ValueError(f"{checkpoint_dir}: weights.bin holds {raw.size} values, checkpoint.json lists {offset}")
    return weights


def assign_by_path(layers, named):
    """Sets every variable of these Keras layers from tlx's named weights; returns the count."""
    used = 0
    for layer in layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in named:
                raise KeyError(f"no tlx weight for Keras variable {key}")
            value = named[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"layer {layer.name}: {key} has shape {value.shape}, Keras expects {tuple(variable.shape)}")
            variable.assign(value)
            used += 1
    return used
