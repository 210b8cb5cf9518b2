"""The tutorial in Keras, end to end, for bench/compare.ts: image_dataset_from_directory,
augmentation layers, MobileNetV2 (weights=None: no download here), feature extraction
then fine-tuning from layer 100, evaluation. Prints one JSON line with wall seconds,
peak RSS and the final validation accuracy.

    .venv/bin/python bench/keras_finetune.py DATA_DIR SIZE FE_EPOCHS FT_EPOCHS [AUGMENT 0/1]
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
started = time.perf_counter()

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

data, size, fe_epochs, ft_epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
augment = len(sys.argv) < 6 or sys.argv[5] == "1"
keras.utils.set_random_seed(42)
train = keras.utils.image_dataset_from_directory(os.path.join(data, "train"), shuffle=True, batch_size=32, image_size=(size, size), seed=42)
validation = keras.utils.image_dataset_from_directory(os.path.join(data, "validation"), shuffle=True, batch_size=32, image_size=(size, size), seed=42)
batches = validation.cardinality()
test = validation.take(batches // 5)
validation = validation.skip(batches // 5)
train, validation, test = (d.prefetch(tf.data.AUTOTUNE) for d in (train, validation, test))

base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
base.trainable = False
inputs = keras.Input(shape=(size, size, 3))
x = inputs
if augment:
    x = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])(x)
x = keras.applications.mobilenet_v2.preprocess_input(x)
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.2)(x)
outputs = keras.layers.Dense(1)(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=[keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")])
model.evaluate(validation, verbose=0)
history = model.fit(train, epochs=fe_epochs, validation_data=validation, verbose=0)
epoch_seconds = []
if ft_epochs:
    base.trainable = True
    for layer in base.layers[:100]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=[keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")])
    history = model.fit(train, epochs=fe_epochs + ft_epochs, initial_epoch=fe_epochs, validation_data=validation, verbose=0)
loss, accuracy = model.evaluate(test, verbose=0)
print(json.dumps({
    "tool": "keras",
    "seconds": time.perf_counter() - started,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "val_accuracy": float(history.history["val_accuracy"][-1]),
    "test_accuracy": float(accuracy),
}))
