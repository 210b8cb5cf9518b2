"""Image decoding for the Python side, with the same guard as tlx's TypeScript side: the
width and height are read from the file's header first (Pillow reads only the header),
and an image announcing more pixels than allowed is refused before it is decoded."""

import numpy as np
import tensorflow as tf
from PIL import Image

# tlx checks sizes itself, against dataset.max_image_pixels.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 40_000_000


class ImageTooLarge(ValueError):
    pass


def header_pixels(file):
    with Image.open(file) as image:
        width, height = image.size
    return width, height


def check_header(file, max_pixels):
    width, height = header_pixels(file)
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if width * height > limit:
        raise ImageTooLarge(f"{width}x{height} pixels, over the limit of {limit} (dataset.max_image_pixels)")


def decode_resized(file, height, width, method, max_pixels=None):
    """RGB pixels as float32 0..255 at (height, width): bilinear as in training, or nearest as Android's createScaledBitmap(filter=false)."""
    check_header(file, max_pixels)
    decoded = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    resized = tf.image.resize(tf.cast(decoded, tf.float32), (height, width), method=method)
    return resized.numpy()


def decode_resized_files(files, height, width, method, max_pixels=None):
    return np.stack([np.round(decode_resized(file, height, width, method, max_pixels)).astype(np.uint8) for file in files])
