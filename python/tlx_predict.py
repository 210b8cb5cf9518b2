"""Runs a .tflite classifier on image files for `tlx predict` (src/commands/predict.ts).

Request: {"model", "images": [...], "resize": "bilinear" | "nearest", "report"}.
Report: the model's input/output description and one probability vector per image
(or an error per image that cannot be decoded).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tlx_export import dequantize_output, describe_tensor, quantize_input  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402


def main(request_path):
    with open(request_path) as f:
        request = json.load(f)
    interpreter = Interpreter(model_path=request["model"], num_threads=1)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    _, height, width, _ = input_detail["shape"]
    method = "nearest" if request["resize"] == "nearest" else "bilinear"
    results = []
    for file in request["images"]:
        try:
            decoded = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
            resized = tf.image.resize(tf.cast(decoded, tf.float32), (height, width), method=method)
            if method == "nearest":
                resized = tf.cast(resized, tf.float32)
            image = resized.numpy()[None]
            interpreter.set_tensor(input_detail["index"], quantize_input(image, input_detail))
            interpreter.invoke()
            probabilities = dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)[0]
            results.append({"file": file, "probabilities": [float(p) for p in probabilities]})
        except Exception as error:  # a bad image is reported, not fatal
            results.append({"file": file, "error": str(error).split("\n")[0]})
    with open(request["report"], "w") as f:
        json.dump({"input": describe_tensor(input_detail), "output": describe_tensor(output_detail), "results": results}, f)


if __name__ == "__main__":
    main(sys.argv[1])
