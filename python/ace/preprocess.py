"""Turning user image arrays into normalized encoder input.

Intensity convention: uint8 images are divided by 255, uint16 by 65535, floating-point
images are taken as already in [0, 1]. The encoder then standardizes with a fixed mean
and std (by default the statistics of the JSRT radiographs).
"""
import numpy as np

from .data.images import resize as resize_image
from .errors import ACEError

JSRT_MEAN = 0.757
JSRT_STD = 0.200


def to_unit_float(images, *, name="images"):
    """(B, H, W) or (B, H, W, C) uint8/uint16/float/bool array -> float32 in [0, 1] scale."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        out = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        out = a.astype(np.float32) / 65535.0
    elif a.dtype.kind == "f" or a.dtype == np.bool_:
        out = a.astype(np.float32)
    elif a.dtype.kind in "iu":
        raise ACEError(f"{name} have integer dtype {a.dtype}; pass uint8, uint16 or float images in [0, 1]")
    else:
        raise ACEError(f"{name} have unsupported dtype {a.dtype}; pass uint8, uint16 or float arrays")
    if out.size == 0 or out.shape[0] == 0:
        raise ACEError(f"{name} are empty (shape {a.shape})")
    if not np.isfinite(out).all():
        raise ACEError(f"{name} contain NaN or infinite values")
    return out


def to_channels(images, in_chans, *, name="images"):
    """float32 (B, H, W) or (B, H, W, C) -> (B, in_chans, H, W)."""
    if images.ndim == 3:
        x = images[:, None]
    elif images.ndim == 4:
        c = images.shape[-1]
        if c == in_chans:
            x = np.moveaxis(images, -1, 1)
        elif c in (3, 4) and in_chans == 1:
            # ITU-R 601 luma, as Pillow's "L" conversion; alpha is ignored.
            x = (images[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[:, None]
        elif c == 1:
            x = np.moveaxis(images, -1, 1)
        else:
            raise ACEError(f"{name} have {c} channels; the encoder takes {in_chans}")
    else:
        raise ACEError(f"{name} must be (B, H, W) or (B, H, W, C), got shape {images.shape}")
    if x.shape[1] == 1 and in_chans == 3:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def resize(x, size):
    """(B, C, H, W) float32 -> (B, C, size, size), each image as `ace.data.resize` does."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    return np.stack([np.stack([resize_image(channel, size) for channel in image]) for image in x])
