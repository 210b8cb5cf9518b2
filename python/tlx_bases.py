"""The Keras side of tlx's bases: keras.applications builds each base tlx trains.

tlx's layer names are those of a fresh Keras session (re_lu, re_lu_1, ...): Keras numbers
unnamed layers per session, so the session is cleared before a base is built.

EfficientNetB0: tlx builds it as Keras does for weights="imagenet", with a Rescaling by
1 / sqrt(ImageNet stddev) after the Normalization layer (238 layers). Keras leaves that
layer out when weights=None; `fold_efficientnet_rescaling` moves its constant into the
Normalization variance, so the 237-layer Keras model computes exactly tlx's function.
"""

import keras
import numpy as np

IMAGENET_STDDEV_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def keras_base(base, alpha, height, width, minimalistic=False):
    keras.backend.clear_session()
    shape = (height, width, 3)
    if base == "mobilenet_v2":
        return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None)
    if base == "mobilenet_v3_small":
        return keras.applications.MobileNetV3Small(input_shape=shape, alpha=alpha, minimalistic=minimalistic, include_top=False, weights=None)
    if base == "mobilenet_v3_large":
        return keras.applications.MobileNetV3Large(input_shape=shape, alpha=alpha, minimalistic=minimalistic, include_top=False, weights=None)
    if base == "efficientnet_b0":
        return keras.applications.EfficientNetB0(input_shape=shape, include_top=False, weights=None)
    raise ValueError(f"unknown base {base}")


def rescales_inside(base):
    """MobileNetV3 and EfficientNet take raw [0, 255] pixels; MobileNetV2 expects [-1, 1]."""
    return base != "mobilenet_v2"


def fold_efficientnet_rescaling(base_model):
    """After tlx's weights are assigned: (x - mean) / sqrt(var) / sqrt(stddev) == (x - mean) / sqrt(var * stddev)."""
    if base_model.name != "efficientnetb0":
        return
    variance = base_model.get_layer("normalization").adapt_variance
    variance.assign(np.asarray(variance) * IMAGENET_STDDEV_RGB)
