"""Runs a .tflite classifier on image files (the `predict` operation of tlx_worker.py).

Request: {"model", "images": [...], "resize": "bilinear" | "nearest", "max_image_pixels"}.
Report: the model's input/output description, the labels embedded in its metadata (if
any), and one probability vector per image (or an error per image that cannot be used).
"""

import numpy as np
from ai_edge_litert.interpreter import Interpreter

import tlx_metadata
from tlx_export import dequantize_output, describe_tensor, quantize_input
from tlx_images import decode_resized


def predict(request, progress=lambda step: None):
    with open(request["model"], "rb") as f:
        model_bytes = f.read()
    metadata = tlx_metadata.read(model_bytes)
    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    _, height, width, _ = input_detail["shape"]
    method = "nearest" if request["resize"] == "nearest" else "bilinear"
    results = []
    for file in request["images"]:
        progress("predict")
        try:
            image = decode_resized(file, int(height), int(width), method, request.get("max_image_pixels"))[None]
            interpreter.set_tensor(input_detail["index"], quantize_input(image, input_detail))
            interpreter.invoke()
            probabilities = dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)[0]
            results.append({"file": file, "probabilities": [float(p) for p in np.asarray(probabilities)]})
        except Exception as error:  # a bad image is reported, not fatal
            results.append({"file": file, "error": str(error).split("\n")[0]})
    return {
        "input": describe_tensor(input_detail),
        "output": describe_tensor(output_detail),
        "embedded_labels": metadata["labels"] if metadata else None,
        "results": results,
    }
