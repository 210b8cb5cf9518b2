"""The tutorial in Keras, end to end, for bench/compare.ts: image_dataset_from_directory,
augmentation layers, MobileNetV2, feature extraction then fine-tuning from layer 100,
evaluation. Prints one JSON line with wall seconds, peak RSS and the final validation
accuracy.

    .venv/bin/python bench/keras_finetune.py DATA_DIR SIZE FE_EPOCHS FT_EPOCHS
        [--no-augment] [--flip-only] [--classes N] [--base-weights TLX_CHECKPOINT_DIR]
        [--fe-lr 1e-4] [--ft-lr 1e-5] [--no-test-split] [--seed 42]

Without --base-weights the base starts from weights=None (imagenet cannot be downloaded
here); with it, from the same weights as a tlx run (bench/nsfwjs_checkpoint.ts).

BatchNormalization stays in inference mode while fine-tuning, as the tutorial intends with
`base_model(x, training=False)` and as tlx does. Keras 3's fit() overrides that argument
(keras-team/keras#20285): unfrozen BN layers would normalise with batch statistics and
update their moving statistics, a different experiment. --keras3-bn keeps Keras 3's way.
"""

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
started = time.perf_counter()

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("size", type=int)
parser.add_argument("fe_epochs", type=int)
parser.add_argument("ft_epochs", type=int)
parser.add_argument("--no-augment", action="store_true")
parser.add_argument("--flip-only", action="store_true")
parser.add_argument("--classes", type=int, default=2)
parser.add_argument("--base-weights")
parser.add_argument("--fe-lr", type=float, default=1e-4)
parser.add_argument("--ft-lr", type=float, default=1e-5)
parser.add_argument("--no-test-split", action="store_true")
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--keras3-bn", action="store_true")
args = parser.parse_args()
size = args.size

keras.utils.set_random_seed(args.seed)
train = keras.utils.image_dataset_from_directory(os.path.join(args.data, "train"), shuffle=True, batch_size=32, image_size=(size, size), seed=args.seed)
validation = keras.utils.image_dataset_from_directory(os.path.join(args.data, "validation"), shuffle=True, batch_size=32, image_size=(size, size), seed=args.seed)
test = None
if not args.no_test_split:
    batches = validation.cardinality()
    test = validation.take(batches // 5).prefetch(tf.data.AUTOTUNE)
    validation = validation.skip(batches // 5)
train, validation = (d.prefetch(tf.data.AUTOTUNE) for d in (train, validation))

base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
if args.base_weights:
    from tlx_export import assign_weights, read_named_weights

    assign_weights(base, base, read_named_weights(args.base_weights))
if not args.keras3_bn:
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inference_call = layer.call
            layer.call = lambda inputs, training=None, mask=None, call=inference_call: call(inputs, training=False, mask=mask)
base.trainable = False
inputs = keras.Input(shape=(size, size, 3))
x = inputs
if not args.no_augment:
    layers = [keras.layers.RandomFlip("horizontal")] + ([] if args.flip_only else [keras.layers.RandomRotation(0.2)])
    x = keras.Sequential(layers)(x)
x = keras.applications.mobilenet_v2.preprocess_input(x)
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.2)(x)
binary = args.classes == 2
outputs = keras.layers.Dense(1 if binary else args.classes)(x)
model = keras.Model(inputs, outputs)
if binary:
    loss_fn, metric = keras.losses.BinaryCrossentropy(from_logits=True), keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")
else:
    loss_fn, metric = keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.metrics.SparseCategoricalAccuracy(name="accuracy")
model.compile(optimizer=keras.optimizers.Adam(args.fe_lr), loss=loss_fn, metrics=[metric])
model.evaluate(validation, verbose=0)
history = model.fit(train, epochs=args.fe_epochs, validation_data=validation, verbose=0)
val_accuracy_per_epoch = list(history.history["val_accuracy"])
if args.ft_epochs:
    base.trainable = True
    for layer in base.layers[:100]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(args.ft_lr), loss=loss_fn, metrics=[metric])
    history = model.fit(train, epochs=args.fe_epochs + args.ft_epochs, initial_epoch=args.fe_epochs, validation_data=validation, verbose=0)
    val_accuracy_per_epoch += history.history["val_accuracy"]
accuracy = model.evaluate(test, verbose=0)[1] if test is not None else None
print(json.dumps({
    "tool": "keras",
    "seconds": time.perf_counter() - started,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "val_accuracy": float(history.history["val_accuracy"][-1]),
    "val_accuracy_per_epoch": [round(float(a), 4) for a in val_accuracy_per_epoch],
    "test_accuracy": None if accuracy is None else float(accuracy),
}))
