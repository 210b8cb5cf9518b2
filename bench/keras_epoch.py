"""Keras's epoch without augmentation, for bench/compare.ts: seconds of the epochs after
the first, median. Feature extraction (base frozen, training=False), or with FINE_TUNE_AT
fine-tuning (base layers from FINE_TUNE_AT on trainable, still training=False), as the
tutorial does.

    .venv/bin/python bench/keras_epoch.py DATA_DIR SIZE EPOCHS [FINE_TUNE_AT]
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
fine_tune_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
train = keras.utils.image_dataset_from_directory(os.path.join(data, "train"), batch_size=32, image_size=(size, size), seed=1).cache().prefetch(tf.data.AUTOTUNE)
base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
base.trainable = False
inputs = keras.Input(shape=(size, size, 3))
x = keras.applications.mobilenet_v2.preprocess_input(inputs)
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.2)(x)
model = keras.Model(inputs, keras.layers.Dense(1)(x))
optimizer = keras.optimizers.Adam(1e-4)
if fine_tune_at is not None:
    base.trainable = True
    for layer in base.layers[:fine_tune_at]:
        layer.trainable = False
    optimizer = keras.optimizers.RMSprop(1e-5)
model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True))


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
