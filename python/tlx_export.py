"""TFLite export and verification for tlx, run by src/export/bridge.ts.

    python tlx_export.py request.json

The request names the trained weights (tlx's named checkpoint), the classifier spec,
the quantization mode, raw uint8 images (representative set and test split, resized
exactly as in training) and tlx's own probabilities on the test split. This script:

1. rebuilds the classifier in Keras: raw RGB pixels in [0, 255] -> x / 127.5 - 1 ->
   keras.applications.MobileNetV2 (same alpha and input) -> global average pooling ->
   dense -> probabilities, one per label ([1, n]; two classes: [1 - p, p]);
2. sets every weight by name from tlx's checkpoint and checks Keras's outputs against
   tlx's on the test images;
3. converts with TensorFlow's own TFLiteConverter (none, dynamic, float16, int8);
4. loads the .tflite with the LiteRT interpreter and measures it on the test split.

The report (JSON) is written to the path in the request. Exit code 0 even when a check
fails (the report says which); non-zero only when the script itself cannot run.
"""

import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402


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
    return weights


def build_classifier(spec):
    height, width = spec["imageSize"]
    inputs = keras.Input(shape=(height, width, 3), name="image", dtype="float32")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    base = keras.applications.MobileNetV2(input_shape=(height, width, 3), alpha=spec["alpha"], include_top=False, weights=None)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    logits = keras.layers.Dense(spec["units"], name="predictions")(x)
    if spec["head"] == "binary_logit":
        positive = keras.layers.Activation("sigmoid", name="positive")(logits)
        outputs = keras.layers.Concatenate(name="probabilities")([keras.layers.Lambda(lambda p: 1.0 - p, name="negative")(positive), positive])
    else:
        outputs = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="tlx_classifier"), base


def assign_weights(model, base, named):
    used = set()
    layers = list(base.layers) + [layer for layer in model.layers if layer is not base]
    for layer in layers:
        for variable in layer.weights:
            short = variable.path.split("/")[-1]
            candidates = [f"{layer.name}/{short}"]
            if short == "kernel" and layer.name.endswith("depthwise"):
                candidates.insert(0, f"{layer.name}/depthwise_kernel")
            key = next((c for c in candidates if c in named), None)
            if key is None:
                raise KeyError(f"no tlx weight for Keras variable {layer.name}/{short}")
            value = named[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"layer {layer.name}: {key} has shape {value.shape}, Keras expects {tuple(variable.shape)}")
            variable.assign(value)
            used.add(key)
    return len(used)


def load_images(path, count, height, width):
    return np.fromfile(path, dtype=np.uint8).reshape(count, height, width, 3)


def convert(model, mode, io_type, representative):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative_dataset():
            for image in representative:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if io_type == "uint8" else tf.int8
        converter.inference_output_type = tf.uint8 if io_type == "uint8" else tf.int8
    elif mode != "none":
        raise ValueError(f"unknown quantization mode {mode}")
    return converter.convert()


def describe_tensor(detail):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {
        "name": detail["name"],
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
    }


def quantize_input(image, detail):
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return image.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(image.astype(np.float32) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_output(values, detail):
    if np.dtype(detail["dtype"]) == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def run_tflite(path, images):
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    probabilities, latencies = [], []
    for image in images:
        interpreter.set_tensor(input_detail["index"], quantize_input(image[None], input_detail))
        started = time.perf_counter()
        interpreter.invoke()
        latencies.append((time.perf_counter() - started) * 1000.0)
        probabilities.append(dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)[0])
    return interpreter, np.array(probabilities), latencies


def nearest_resized(files, height, width):
    """Android's Bitmap.createScaledBitmap(bitmap, w, h, filter=false): nearest neighbour."""
    images = []
    for file in files:
        decoded = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        resized = tf.image.resize(decoded, (height, width), method="nearest")
        images.append(tf.cast(resized, tf.uint8).numpy())
    return np.stack(images)


def main(request_path):
    with open(request_path) as f:
        request = json.load(f)
    spec = request["classifier"]
    height, width = spec["imageSize"]
    report = {"mode": request["quantization"], "io_type": request.get("io_type", "uint8"), "checks": {}, "problems": []}

    model, base = build_classifier(spec)
    named = read_named_weights(request["weights_dir"])
    report["weights_assigned"] = assign_weights(model, base, named)

    test = load_images(request["test_images"], request["test_count"], height, width)
    labels = np.fromfile(request["test_labels"], dtype="<i4")
    reference = np.fromfile(request["reference_probabilities"], dtype="<f4").reshape(request["test_count"], -1)
    keras_probabilities = model.predict(test.astype(np.float32), batch_size=32, verbose=0)
    report["keras_vs_tlx_max_abs_diff"] = float(np.max(np.abs(keras_probabilities - reference))) if len(test) else 0.0
    report["checks"]["keras_matches_tlx"] = report["keras_vs_tlx_max_abs_diff"] < 1e-4
    if not report["checks"]["keras_matches_tlx"]:
        report["problems"].append(f"the rebuilt Keras model differs from tlx's by {report['keras_vs_tlx_max_abs_diff']:.2e} (expected < 1e-4)")

    representative = load_images(request["representative_images"], request["representative_count"], height, width)
    flatbuffer = convert(model, request["quantization"], request.get("io_type", "uint8"), representative)
    output = request["output"]
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(output), suffix=".tflite.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(flatbuffer)
    os.replace(temp, output)
    report["bytes"] = os.path.getsize(output)

    interpreter, probabilities, latencies = run_tflite(output, test)
    input_detail = describe_tensor(interpreter.get_input_details()[0])
    output_detail = describe_tensor(interpreter.get_output_details()[0])
    report["input"], report["output"] = input_detail, output_detail
    label_count = len([line for line in open(request["labels_file"]).read().split("\n") if line.strip()])
    report["labels_count"] = label_count
    report["checks"]["output_shape_matches_labels"] = output_detail["shape"] == [1, label_count]
    if not report["checks"]["output_shape_matches_labels"]:
        report["problems"].append(f"output shape {output_detail['shape']} does not match labels.txt ({label_count} labels): expected [1, {label_count}]")
    expected_input = [1, height, width, 3]
    report["checks"]["input_shape"] = input_detail["shape"] == expected_input
    if not report["checks"]["input_shape"]:
        report["problems"].append(f"input shape {input_detail['shape']}, expected {expected_input}")

    if len(test):
        top1 = probabilities.argmax(axis=1)
        report["accuracy"] = float(np.mean(top1 == labels))
        report["reference_accuracy"] = float(np.mean(reference.argmax(axis=1) == labels))
        report["agreement_with_trained_model"] = float(np.mean(top1 == reference.argmax(axis=1)))
        report["max_abs_diff_vs_trained_model"] = float(np.max(np.abs(probabilities - reference)))
        report["median_latency_ms"] = float(statistics.median(latencies))
        if request["quantization"] == "none":
            report["checks"]["float_matches_trained_model"] = report["max_abs_diff_vs_trained_model"] < 1e-4
            if not report["checks"]["float_matches_trained_model"]:
                report["problems"].append(f"float32 TFLite outputs differ from the trained model by {report['max_abs_diff_vs_trained_model']:.2e} (expected < 1e-4)")
        files = request.get("test_files") or []
        if files:
            _, nearest_probabilities, _ = run_tflite(output, nearest_resized(files, height, width))
            report["accuracy_nearest_resize"] = float(np.mean(nearest_probabilities.argmax(axis=1) == labels))
    with open(request["report"], "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
