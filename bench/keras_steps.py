"""Keras's side of the step benchmarks (see bench/steps.ts): the tutorial's model on a
keras.applications base (alpha 1.0), batch 32, one train step or one predict per timing.

    .venv/bin/python bench/keras_steps.py [--base mobilenet_v2] [--fine-tune-at 100] [--steps 3] [--size 224] [--batch 32] [--cases a,b]
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from tlx_bases import keras_base, rescales_inside  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--base", default="mobilenet_v2")
parser.add_argument("--fine-tune-at", type=int, default=100)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--cases", default="whole_model_trainable,fine_tune_at,frozen_base,predict")
args = parser.parse_args()

size, batch = args.size, args.batch
base = keras_base(args.base, 1.0, size, size)
inputs = keras.Input(shape=(size, size, 3))
x = inputs if rescales_inside(args.base) else keras.layers.Rescaling(1.0 / 127.5, offset=-1)(inputs)
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.2)(x)
outputs = keras.layers.Dense(1)(x)
model = keras.Model(inputs, outputs)
images = np.random.RandomState(1).uniform(0, 255, (batch, size, size, 3)).astype("float32")
labels = (np.arange(batch) % 2).astype("float32").reshape(-1, 1)


def timed(run):
    run()  # warm-up (tracing, allocation)
    seconds = []
    for _ in range(args.steps):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def layer_macs(layer):
    """Multiply-accumulates of one image (as python/tlx_export.py's macs_per_image counts them)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, h, w, c = layer.output.shape
        return h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c = layer.output.shape
        return h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1] // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.input.shape[1:])) * layer.units
    return 0


per_layer = [layer_macs(layer) for layer in base.layers]
forward = 2 * batch * sum(per_layer)
flops = {
    "whole_model_trainable": forward + 4 * batch * sum(per_layer),
    "fine_tune_at": forward + 4 * batch * sum(per_layer[args.fine_tune_at:]),
    "frozen_base": forward,
    "predict": forward,
}


def matmul_peak_gflops(n=4096):
    """The reachable peak through this TensorFlow build: a large matrix product, median of 5."""
    a = tf.random.uniform([n, n], -1, 1, seed=2)
    b = tf.random.uniform([n, n], -1, 1, seed=3)
    seconds = []
    for i in range(6):
        started = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        if i > 0:
            seconds.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(seconds) / 1e9


result = {}
for name in args.cases.split(","):
    if name == "predict":
        result[name] = timed(lambda: model.predict_on_batch(images))
        continue
    base.trainable = name != "frozen_base"
    if name == "fine_tune_at":
        for layer in base.layers[: args.fine_tune_at]:
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    result[name] = timed(lambda: model.train_on_batch(images, labels))
peak = matmul_peak_gflops()
gflops = {name: flops[name] / seconds / 1e9 for name, seconds in result.items()}
print(json.dumps({"tool": "keras", "base": args.base, "size": size, "batch": batch, "steps": args.steps, "seconds": result, "flops": flops, "gflops": gflops, "peak_gflops": peak}))
