"""Keras's side of the step benchmarks (see bench/steps.ts): the tutorial's model,
MobileNetV2 alpha 1.0, batch 32, one train step or one predict per timing.

    .venv/bin/python bench/keras_steps.py [--steps 3] [--size 224] [--batch 32] [--cases a,b]
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--cases", default="whole_model_trainable,fine_tune_at_100,frozen_base,predict")
args = parser.parse_args()

size, batch = args.size, args.batch
base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
inputs = keras.Input(shape=(size, size, 3))
x = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(inputs)
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


result = {}
for name in args.cases.split(","):
    if name == "predict":
        result[name] = timed(lambda: model.predict_on_batch(images))
        continue
    base.trainable = name != "frozen_base"
    if name == "fine_tune_at_100":
        for layer in base.layers[:100]:
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    result[name] = timed(lambda: model.train_on_batch(images, labels))
print(json.dumps({"tool": "keras", "size": size, "batch": batch, "steps": args.steps, "seconds": result}))
