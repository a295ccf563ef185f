"""Turning user image arrays into normalized encoder input.

Intensity convention: uint8 images are divided by 255, uint16 by 65535, floating-point
images must already lie in [0, 1] (others are refused: silently standardizing 0..255
floats as if they were 0..1 would give meaningless embeddings). The encoder then
standardizes with a fixed mean and std (by default the statistics of the JSRT radiographs).

Size limit: an image side may not exceed MAX_IMAGE_SIDE pixels and one image may not
hold more than MAX_IMAGE_PIXELS pixels (a 16384 x 16384 radiograph, 1 GiB as float32);
larger arrays are refused before any conversion or resize allocates memory.
"""
import numpy as np

from .data.images import resize_batch
from .errors import ACEError

JSRT_MEAN = 0.757
JSRT_STD = 0.200
MAX_IMAGE_SIDE = 65536
MAX_IMAGE_PIXELS = 2**28
# Float images may exceed [0, 1] by this much (rounding in a resize or a float16 round
# trip) and are still accepted as they are.
RANGE_TOLERANCE = 1e-3


def check_image_size(images, *, name="images"):
    """Refuse (B, H, W[, C]) arrays whose images exceed the size limit of the module docstring."""
    if images.ndim < 3:
        return
    h, w = images.shape[1:3]
    if max(h, w) > MAX_IMAGE_SIDE or h * w > MAX_IMAGE_PIXELS:
        raise ACEError(f"{name} of {h} x {w} pixels exceed the size limit (sides up to {MAX_IMAGE_SIDE}, "
                       f"at most {MAX_IMAGE_PIXELS} pixels per image); downsample them first")


def to_unit_float(images, *, name="images"):
    """(B, H, W) or (B, H, W, C) uint8/uint16/float/bool array -> float32 in [0, 1] scale."""
    a = np.asarray(images)
    check_image_size(a, name=name)
    if a.dtype in (np.uint8, np.uint16):
        # One float32 copy scaled in place (a fresh array per pass costs page faults too);
        # integers are finite and in range, so the checks below are skipped.
        out = a.astype(np.float32)
        out /= np.float32(np.iinfo(a.dtype).max)
        if out.ndim not in (3, 4) or out.size == 0:
            raise ACEError(f"{name} must be a non-empty batch (B, H, W) or (B, H, W, C), got shape {a.shape}")
        return out
    elif a.dtype.kind == "f" or a.dtype == np.bool_:
        out = a.astype(np.float32)
    elif a.dtype.kind in "iu":
        raise ACEError(f"{name} have integer dtype {a.dtype}; pass uint8, uint16 or float images in [0, 1]")
    else:
        raise ACEError(f"{name} have unsupported dtype {a.dtype}; pass uint8, uint16 or float arrays")
    if out.ndim not in (3, 4):
        raise ACEError(f"{name} must be a batch (B, H, W) or (B, H, W, C), got shape {a.shape}")
    if out.size == 0:
        raise ACEError(f"{name} are empty (shape {a.shape})")
    if not np.isfinite(out).all():
        raise ACEError(f"{name} contain NaN or infinite values")
    if a.dtype.kind == "f":
        lo, hi = float(out.min()), float(out.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ACEError(f"float {name} must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]: divide by "
                           f"the maximum (e.g. 255 or 65535) or pass uint8/uint16 arrays")
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


def fov_mask(height, width):
    """bool (height, width): the field of view inscribed in the image (the core's
    `insideFieldOfView`, the same float64 expression: pixels match exactly)."""
    dx = (np.arange(width, dtype=np.float64) + 0.5) / width - 0.5
    dy = (np.arange(height, dtype=np.float64) + 0.5) / height - 0.5
    return (dx * dx)[None, :] + (dy * dy)[:, None] <= 0.25


def apply_fov_mask(images):
    """Whole images (B, H, W) or (B, H, W, C), as `Encoder.embed` takes them -> float32 in
    [0, 1] with the pixels outside the field of view zeroed (what a run with `fov_mask` does
    to each training image before resizing it)."""
    x = to_unit_float(images)
    mask = fov_mask(*x.shape[1:3])
    return np.where(mask if x.ndim == 3 else mask[:, :, None], x, np.float32(0)).astype(np.float32, copy=False)


def channel_stats(value, channels, name):
    """A mean/std setting (one number or one per channel) -> float32 (channels, 1, 1) to
    broadcast over (B, C, H, W)."""
    v = np.asarray(value, np.float32).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise ACEError(f"{name} has {v.size} values; the encoder takes {channels} channel(s)")
    return v.reshape(channels, 1, 1)


def resize(x, size):
    """(B, C, H, W) float32 -> (B, C, size, size) with the core's resampler (as training views)."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    b, c, h, w = x.shape
    return resize_batch(x.reshape(b * c, h, w), size).reshape(b, c, size, size)
