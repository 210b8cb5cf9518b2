"""TFLite export and verification for tlx (the `export` operation of tlx_worker.py).

The request names the trained weights (tlx's named checkpoint), the classifier spec,
the quantization mode, raw uint8 images (representative set and evaluation split,
resized exactly as in training) and tlx's own probabilities on that split. This:

1. rebuilds the classifier in Keras: raw RGB pixels in [0, 255] -> the base's own
   preprocessing -> keras.applications base (tlx_bases.py: same base, alpha and input) -> global average
   pooling -> dense -> probabilities, one per label ([1, n]; two classes: [1 - p, p]);
2. sets every weight by name from tlx's checkpoint and checks Keras's outputs against
   tlx's on the evaluation images;
3. converts with TensorFlow's own TFLiteConverter (none, dynamic, float16, int8);
4. embeds TFLite metadata (labels, normalization, names) and labels.txt (tlx_metadata.py);
5. writes the file into the request's staging folder (tlx moves it into place);
6. measures it with the LiteRT interpreter, reads the metadata back, and runs the split
   through MediaPipe Tasks' ImageClassifier, the same C++ task graph Android uses.

The report says which checks failed; an exception only when the export cannot run.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
import keras
from ai_edge_litert.interpreter import Interpreter

import tlx_metadata
from tlx_bases import fold_efficientnet_rescaling, keras_base, rescales_inside
from tlx_checkpoint import assign_by_path, read_named_weights
from tlx_images import decode_resized_files


def build_classifier(spec):
    height, width = spec["imageSize"]
    base = keras_base(spec["base"], spec["alpha"], height, width, spec.get("minimalistic", False))
    inputs = keras.Input(shape=(height, width, 3), name="image", dtype="float32")
    x = inputs
    if not rescales_inside(spec["base"]):
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)
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
    assigned = assign_by_path(list(base.layers) + [layer for layer in model.layers if layer is not base], named)
    fold_efficientnet_rescaling(base)
    return assigned


def layers_of(model):
    """Every layer of a Keras model, nested models (the base) opened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from layers_of(layer)
        else:
            yield layer


def macs_per_image(model):
    """Multiply-accumulates of one image through the convolutions and dense layers (the
    "mult-adds" of the MobileNet and EfficientNet papers): what carries across devices."""
    total = 0
    for layer in layers_of(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += height * width * channels * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1]
            total += height * width * out_channels * kh * kw * in_channels // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.input.shape[1:])) * layer.units
    return int(total)


def host_latency_ms(model_path, images, threads, repeats=30):
    """Median ms per image of LiteRT's interpreter (XNNPACK, its default CPU delegate) on this
    CPU with `threads` threads, after two warm-up runs: a proxy for a phone, not a phone."""
    interpreter = Interpreter(model_path=model_path, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    latencies = []
    for i in range(repeats + 2):
        interpreter.set_tensor(detail["index"], quantize_input(images[i % len(images)][None], detail))
        started = time.perf_counter()
        interpreter.invoke()
        if i >= 2:
            latencies.append((time.perf_counter() - started) * 1000.0)
    return float(statistics.median(latencies))


# Run in a fresh interpreter: this process's heap already holds TensorFlow, Keras and earlier
# models, so its own memory growth would say more about the allocator than about the model.
_PEAK_MEMORY_SCRIPT = r'''
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def resident():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}

before = resident()
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
interpreter.invoke()
print(json.dumps(resident()["VmHWM"] - before["VmRSS"]))
'''


def peak_memory_bytes(model_path):
    """Peak resident memory LiteRT's interpreter (XNNPACK, 1 thread) adds to load the model and
    classify one image, measured in a fresh process: the file's pages it reads, XNNPACK's packed
    weights, the tensor arena and scratch, and the code it runs first. None when it cannot be
    measured (no /proc)."""
    if not os.path.exists("/proc/self/status"):
        return None
    done = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT, model_path], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the interpreter's peak memory failed: {done.stderr.strip()[-500:]}")
    return int(done.stdout.strip().splitlines()[-1])


def load_images(path, count, height, width):
    return np.fromfile(path, dtype=np.uint8).reshape(count, height, width, 3)


_prepared = {}


def prepare(spec):
    """The Keras classifier for a spec and its traced inference function, built once per worker:
    a run asks for it when training starts, so an export only assigns weights and converts."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _prepared:
        height, width = spec["imageSize"]
        model, base = build_classifier(spec)
        single = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="image")])
        batched = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)])
        batched_function = batched.get_concrete_function()
        # The first call optimises the graph (0.4 s for MobileNetV2): done here, while training.
        batched_function(tf.zeros([1, height, width, 3]))
        _prepared.clear()
        _prepared[key] = (model, base, single.get_concrete_function(), batched_function)
    return _prepared[key]


def warm(request, progress=lambda step: None):
    started = time.perf_counter()
    prepare(request["classifier"])
    return {"seconds": round(time.perf_counter() - started, 3)}


def convert(concrete_function, mode, io_type, representative, progress):
    # The traced function itself, without a trackable object: the converter then freezes the
    # trained weights into it once and skips Keras's SavedModel export, three quarters of its
    # time (19 of 25 s for MobileNetV2). Freezing it here first made the converter freeze it a
    # second time, 1-2 s for the same bytes.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function])
    if mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        calibration = representative.astype(np.float32)
        # One black and one white pixel: the input's calibrated range is exactly 0..255, so its
        # quantization is scale 1, zero point 0 and an app's raw camera bytes are what the model
        # expects (MediaPipe feeds uint8 pixels as they are).
        calibration[0, 0, 0, :] = 0.0
        calibration[0, 0, 1, :] = 255.0

        def representative_dataset():
            for image in calibration:
                progress("calibration")
                yield [image[None]]

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


def run_tflite(model_path, images, progress=lambda step: None):
    interpreter = Interpreter(model_path=model_path, num_threads=1)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    probabilities, latencies = [], []
    for image in images:
        progress("interpreter")
        interpreter.set_tensor(input_detail["index"], quantize_input(image[None], input_detail))
        started = time.perf_counter()
        interpreter.invoke()
        latencies.append((time.perf_counter() - started) * 1000.0)
        probabilities.append(dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)[0])
    return interpreter, np.array(probabilities).reshape(len(images), -1), latencies


def run_mediapipe(model_path, images, progress):
    """Top categories from MediaPipe Tasks' ImageClassifier: [(index, name, score)] per image."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model_path), max_results=1)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            progress("mediapipe")
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            top = result.classifications[0].categories[0]
            results.append((top.index, top.category_name, float(top.score)))
    return results


def degrade_for_test(model):
    """Fault injection for the export gate's test, read only here: noise on the weights
    after the Keras check, so the exported file is measurably worse than the trained model."""
    std = float(os.environ.get("TLX_TEST_EXPORT_NOISE") or 0)
    if std <= 0:
        return
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:
        variable.assign(variable.numpy() + rng.normal(0.0, std, size=variable.shape).astype("float32"))


def check(report, name, ok, problem):
    report["checks"][name] = bool(ok)
    if not ok:
        report["problems"].append(problem)


def verify_metadata(report, model_bytes, labels, float_input):
    meta = tlx_metadata.read(model_bytes)
    report["metadata"] = meta
    check(report, "metadata_present", meta is not None, "the model carries no TFLite metadata")
    if meta is None:
        return
    check(report, "metadata_labels", meta["labels"] == labels, f"the labels embedded in the model ({meta['labels']}) differ from labels.txt ({labels})")
    check(report, "metadata_labels_stored", not any(f["compressed"] for f in meta["packed_files"].values()), "an associated file is compressed; MediaPipe reads only stored entries")
    expected = {"mean": [0.0], "std": [1.0]} if float_input else None
    check(report, "metadata_normalization", meta["normalization"] == expected, f"normalization options {meta['normalization']}, expected {expected}")
    check(report, "metadata_tensor_names", meta["input_name"] == "image" and meta["output_name"] == "probability", "tensor metadata names are not image/probability")


def hang_for_test(progress):
    """Fault injection for the export watchdog's tests, read only here: "1", a step that never
    ends and reports nothing (as MediaPipe on a diverged model); "slow", 6 s of work that
    reports progress every second."""
    mode = os.environ.get("TLX_TEST_EXPORT_HANG")
    while mode == "1":
        time.sleep(60)
    if mode == "slow":
        for _ in range(6):
            time.sleep(1.0)
            progress("slow test step")


def export(request, progress=lambda step: None):
    hang_for_test(progress)
    spec = request["classifier"]
    height, width = spec["imageSize"]
    mode, io_type = request["quantization"], request.get("io_type", "uint8")
    labels = request["labels"]
    report = {"mode": mode, "io_type": io_type, "checks": {}, "problems": [], "seconds": {}}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        report["seconds"][name] = round(now - clock, 3)
        clock = now
        progress(name)

    model, base, concrete_function, batched = prepare(spec)
    report["weights_assigned"] = assign_weights(model, base, read_named_weights(request["weights_dir"]))
    lap("rebuild")

    count = request["test_count"]
    test = load_images(request["test_images"], count, height, width)
    truth = np.fromfile(request["test_labels"], dtype="<i4")
    reference = np.fromfile(request["reference_probabilities"], dtype="<f4").reshape(count, -1)
    # The rebuilt model against tlx's on the first 64 test images: a weight assigned wrong moves
    # every output, and the whole split took 0.65 s of the quickstart's export for nothing more.
    checked = min(count, 64)
    keras_probabilities = np.concatenate([np.asarray(batched(tf.constant(test[i : min(i + 32, checked)].astype(np.float32)))) for i in range(0, checked, 32)]) if checked else np.zeros((0, len(labels)))
    report["keras_vs_tlx_max_abs_diff"] = float(np.max(np.abs(keras_probabilities - reference[:checked]))) if checked else 0.0
    check(report, "keras_matches_tlx", report["keras_vs_tlx_max_abs_diff"] < 1e-4, f"the rebuilt Keras model differs from tlx's by {report['keras_vs_tlx_max_abs_diff']:.2e} (expected < 1e-4)")
    lap("keras_check")

    degrade_for_test(model)  # before conversion: the frozen graph takes the weights as they are now
    if os.environ.get("TLX_TEST_EXPORT_FAIL"):
        check(report, "test_injected_failure", False, "a failure injected by TLX_TEST_EXPORT_FAIL")
    representative = load_images(request["representative_images"], request["representative_count"], height, width)
    flatbuffer = convert(concrete_function, mode, io_type, representative, progress)
    lap("convert")
    float_input = not (mode == "int8")
    model_bytes = tlx_metadata.embed(flatbuffer, request["metadata"], labels, float_input)
    output = os.path.join(request["output_dir"], "model.tflite")
    temp = f"{output}.tmp-{os.getpid()}-py"
    with open(temp, "wb") as f:
        f.write(model_bytes)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, output)
    report["bytes"] = len(model_bytes)
    lap("metadata")

    interpreter, probabilities, latencies = run_tflite(output, test, progress)
    input_detail = describe_tensor(interpreter.get_input_details()[0])
    output_detail = describe_tensor(interpreter.get_output_details()[0])
    report["input"], report["output"] = input_detail, output_detail
    report["labels_count"] = len(labels)
    check(report, "output_shape_matches_labels", output_detail["shape"] == [1, len(labels)], f"output shape {output_detail['shape']} does not match labels.txt ({len(labels)} labels): expected [1, {len(labels)}]")
    check(report, "input_shape", input_detail["shape"] == [1, height, width, 3], f"input shape {input_detail['shape']}, expected {[1, height, width, 3]}")
    verify_metadata(report, model_bytes, labels, float_input)

    if count:
        top1 = probabilities.argmax(axis=1)
        report["accuracy"] = float(np.mean(top1 == truth))
        report["predictions"] = [int(i) for i in top1]  # the gate pairs them with the trained model's
        report["reference_accuracy"] = float(np.mean(reference.argmax(axis=1) == truth))
        report["agreement_with_trained_model"] = float(np.mean(top1 == reference.argmax(axis=1)))
        report["max_abs_diff_vs_trained_model"] = float(np.max(np.abs(probabilities - reference)))
        report["median_latency_ms"] = float(statistics.median(latencies))
        if mode == "none":
            check(report, "float_matches_trained_model", report["max_abs_diff_vs_trained_model"] < 1e-4, f"float32 TFLite outputs differ from the trained model by {report['max_abs_diff_vs_trained_model']:.2e} (expected < 1e-4)")
    lap("interpreter")
    report["params"] = int(model.count_params())
    report["macs_per_image"] = macs_per_image(model)
    if count:
        report["host_latency_ms"] = {str(threads): host_latency_ms(output, test, threads) for threads in (1, 4)}
    memory = peak_memory_bytes(output)
    if memory is not None:
        report["peak_memory_bytes"] = memory
    lap("phone_costs")
    files = request.get("test_files") or []
    if count and files:
        nearest = decode_resized_files(files, height, width, "nearest", request.get("max_image_pixels"))
        _, nearest_probabilities, _ = run_tflite(output, nearest, progress)
        report["accuracy_nearest_resize"] = float(np.mean(nearest_probabilities.argmax(axis=1) == truth))
    lap("nearest_resize")

    if count and request.get("mediapipe", True):
        if io_type == "int8" and mode == "int8":
            report["mediapipe"] = {"skipped": "MediaPipe Tasks reads uint8 or float32 inputs and outputs, not int8"}
        else:
            results = run_mediapipe(output, test, progress)
            names = [name for _, name, _ in results]
            indices = np.array([index for index, _, _ in results])
            agreement = float(np.mean(indices == probabilities.argmax(axis=1)))
            report["mediapipe"] = {
                "accuracy": float(np.mean(indices == truth)),
                "agreement_with_tflite": agreement,
                "named_results": sum(1 for name in names if name),
                "images": len(results),
            }
            check(report, "mediapipe_category_names", all(name == labels[index] for index, name, _ in results), "MediaPipe's ImageClassifier returned results without the model's category names")
            check(report, "mediapipe_agrees", agreement >= 0.97, f"MediaPipe's top-1 agrees with the .tflite on {agreement:.1%} of images (expected >= 97%)")
    lap("mediapipe")
    return report
