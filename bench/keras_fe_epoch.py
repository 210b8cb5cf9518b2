"""Keras's feature-extraction epoch without augmentation (base frozen, training=False),
for bench/compare.ts: seconds of the epochs after the first, median.

    .venv/bin/python bench/keras_fe_epoch.py DATA_DIR SIZE EPOCHS
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

data, size, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
train = keras.utils.image_dataset_from_directory(os.path.join(data, "train"), batch_size=32, image_size=(size, size), seed=1).cache().prefetch(tf.data.AUTOTUNE)
base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
base.trainable = False
inputs = keras.Input(shape=(size, size, 3))
x = keras.applications.mobilenet_v2.preprocess_input(inputs)
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.2)(x)
model = keras.Model(inputs, keras.layers.Dense(1)(x))
model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True))


class Timer(keras.callbacks.Callback):
    def __init__(self):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


timer = Timer()
model.fit(train, epochs=epochs, verbose=0, callbacks=[timer])
print(json.dumps({"tool": "keras", "epoch_seconds": timer.seconds, "median_after_first": statistics.median(timer.seconds[1:])}))
