"""The tutorial in Keras, end to end, for bench/compare.ts: image_dataset_from_directory,
augmentation layers, MobileNetV2, feature extraction then fine-tuning from layer 100,
evaluation. Prints one JSON line with wall seconds, peak RSS and the final validation
accuracy.

    .venv/bin/python bench/keras_finetune.py DATA_DIR SIZE FE_EPOCHS FT_EPOCHS
        [--no-augment] [--flip-only] [--classes N] [--base-weights TLX_CHECKPOINT_DIR]
        [--fe-lr 1e-4] [--ft-lr 1e-5] [--no-test-split] [--seed 42]
        [--fe-optimizer adam] [--ft-optimizer rmsprop] [--fine-tune-at 100] [--dropout 0.2]
        [--label-smoothing 0] [--restore-best]

--restore-best keeps the weights of the epoch with the best validation accuracy over both
phases (the earliest of equal ones) and reports that epoch's accuracy, as tlx's
train.restore_best_weights does (Keras's EarlyStopping restores only within one fit).

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
parser.add_argument("--fe-optimizer", default="adam", choices=["adam", "rmsprop", "sgd"])
parser.add_argument("--ft-optimizer", default="rmsprop", choices=["adam", "rmsprop", "sgd"])
parser.add_argument("--fine-tune-at", type=int, default=100)
parser.add_argument("--dropout", type=float, default=0.2)
parser.add_argument("--label-smoothing", type=float, default=0.0)
parser.add_argument("--restore-best", action="store_true")
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
x = keras.layers.Dropout(args.dropout)(x)
binary = args.classes == 2
outputs = keras.layers.Dense(1 if binary else args.classes)(x)
model = keras.Model(inputs, outputs)
if binary:
    loss_fn, metric = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=args.label_smoothing), keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")
else:
    # Sparse labels cannot be smoothed in Keras: one-hot them for CategoricalCrossentropy, as tlx's loss is.
    train = train.map(lambda x, y: (x, tf.one_hot(y, args.classes)))
    validation = validation.map(lambda x, y: (x, tf.one_hot(y, args.classes)))
    test = test.map(lambda x, y: (x, tf.one_hot(y, args.classes))) if test is not None else None
    loss_fn, metric = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=args.label_smoothing), keras.metrics.CategoricalAccuracy(name="accuracy")
optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}


class BestWeights(keras.callbacks.Callback):
    """The weights of the best val_accuracy epoch over both fits (strictly better replaces)."""

    best, weights, epoch = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] > BestWeights.best:
            BestWeights.best, BestWeights.weights, BestWeights.epoch = logs["val_accuracy"], self.model.get_weights(), epoch + 1


callbacks = [BestWeights()] if args.restore_best else []
model.compile(optimizer=optimizers[args.fe_optimizer](args.fe_lr), loss=loss_fn, metrics=[metric])
model.evaluate(validation, verbose=0)
history = model.fit(train, epochs=args.fe_epochs, validation_data=validation, verbose=0, callbacks=callbacks)
val_accuracy_per_epoch = list(history.history["val_accuracy"])
if args.ft_epochs:
    base.trainable = True
    for layer in base.layers[: args.fine_tune_at]:
        layer.trainable = False
    model.compile(optimizer=optimizers[args.ft_optimizer](args.ft_lr), loss=loss_fn, metrics=[metric])
    history = model.fit(train, epochs=args.fe_epochs + args.ft_epochs, initial_epoch=args.fe_epochs, validation_data=validation, verbose=0, callbacks=callbacks)
    val_accuracy_per_epoch += history.history["val_accuracy"]
final_val_accuracy = float(val_accuracy_per_epoch[-1])
if args.restore_best and BestWeights.weights is not None:
    model.set_weights(BestWeights.weights)
    final_val_accuracy = float(BestWeights.best)
accuracy = model.evaluate(test, verbose=0)[1] if test is not None else None
print(json.dumps({
    "tool": "keras",
    "seconds": time.perf_counter() - started,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "val_accuracy": final_val_accuracy,
    "weights_epoch": BestWeights.epoch if args.restore_best else len(val_accuracy_per_epoch),
    "val_accuracy_per_epoch": [round(float(a), 4) for a in val_accuracy_per_epoch],
    "test_accuracy": None if accuracy is None else float(accuracy),
}))
