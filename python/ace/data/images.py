"""Reading radiographs from disk and streaming them to training.

Users bring folders of PNG/JPEG/TIFF/BMP (8 or 16 bit) or DICOM files. Every
image becomes a 2-D float32 array in [0, 1] with bone bright. A file that
cannot be read is reported and skipped, never silently dropped.

Intensity normalisation is per image and depends on how the file stores it:

* 8-bit and 1-bit images (Pillow modes "L", "1", "P", "LA", "RGB", "RGBA", ...):
  value / 255. Colour images become grayscale by ITU-R 601 luminance
  (0.299 R + 0.587 G + 0.114 B); alpha is ignored. With ``channels=3`` (colour
  training, e.g. fundus photographs) they stay R, G, B, an (H, W, 3) array, and
  grey images are repeated into the three channels.
* 16-bit and 32-bit integer images (Pillow modes "I;16*", "I"): min-max of the
  image, (v - min) / (max - min). Many 16-bit radiographs use only 10-14 bits,
  so dividing by 65535 would leave them nearly black.
* Floating-point images (Pillow mode "F", e.g. float TIFF): kept as they are
  when all values already lie in [0, 1], else min-max.
* DICOM: the modality LUT (RescaleSlope / RescaleIntercept) is applied, then
  the first WindowCenter / WindowWidth pair if the file has one (DICOM linear
  window function), else min-max of the rescaled values. MONOCHROME1 images are
  inverted afterwards so that bone is bright, as in MONOCHROME2.

A constant image (max == min) becomes all zeros wherever min-max applies.
EXIF orientation tags are honoured; multi-frame files (multi-page TIFF,
animated images, DICOM with NumberOfFrames > 1) are rejected.
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.multival import MultiValue

try:
    from pydicom.pixels import apply_modality_lut
except ImportError:  # pydicom < 3
    from pydicom.pixel_data_handlers.util import apply_modality_lut

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
LIST_SUFFIXES = (".txt", ".lst")
DICOM_SUFFIXES = (".dcm", ".dicom")

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class ImageReadError(ValueError):
    """A file that exists but cannot be turned into a radiograph; names the file and the reason."""


class ImageSkipWarning(UserWarning):
    """Some files were skipped while loading a data set; the message lists each with its reason."""


def is_dicom(path: PathLike) -> bool:
    """True if the file starts with the DICOM preamble: 128 bytes, then "DICM"."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_image(path: PathLike, channels: int = 1) -> np.ndarray:
    """Read one radiograph as a 2-D float32 array in [0, 1], bone bright, or with
    ``channels=3`` one colour image as (H, W, 3) R, G, B (grey files repeated).

    DICOM is recognised by the suffix .dcm / .dicom or by its preamble, anything
    else is decoded with Pillow. See the module docstring for the intensity
    normalisation. Raises ``FileNotFoundError`` for a missing file and
    ``ImageReadError`` (naming the file and the reason) for an empty, corrupt,
    multi-frame or unsupported one, or one with non-finite values.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
    if path.suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
        image = _read_dicom(path)
    else:
        image = _read_pillow(path, colour=channels == 3)
    if image.ndim not in (2, 3) or min(image.shape[:2]) == 0:
        raise ImageReadError(f"{path}: expected a 2-D image, got shape {image.shape}")
    if channels == 3 and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image.astype(np.float32, copy=False)


def _read_pillow(path: Path, colour: bool = False) -> np.ndarray:
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ImageReadError(f"{path}: has {frames} frames; only single-frame images are supported")
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("L", "1"):
                return np.asarray(im, dtype=np.float32) / (1.0 if mode == "1" else 255.0)
            if mode in ("LA", "La"):
                return np.asarray(im.getchannel("L"), dtype=np.float32) / 255.0
            if mode.startswith("I"):  # "I", "I;16", "I;16B", "I;16L", "I;16N"
                return _min_max(path, np.asarray(im).astype(np.float64))
            if mode == "F":
                values = np.asarray(im, dtype=np.float64)
                _check_finite(path, values)
                return values if values.min() >= 0.0 and values.max() <= 1.0 else _min_max(path, values)
            try:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
            except ValueError as exc:
                raise ImageReadError(f"{path}: unsupported image mode {mode!r} ({exc})") from exc
            return rgb / 255.0 if colour else rgb @ _LUMA / 255.0
    except ImageReadError:
        raise
    except Exception as exc:
        # Depending on the format and the damage, Pillow reports corrupt or
        # truncated files as OSError, SyntaxError, ValueError, EOFError,
        # struct.error, ...: all mean "cannot read this file".
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def _read_dicom(path: Path) -> np.ndarray:
    try:
        # force=True also accepts files without the 128-byte preamble, which
        # some exporters write under a .dcm name.
        ds = pydicom.dcmread(path, force=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageReadError(f"{path}: has {frames} frames; only single-frame images are supported")
        if "PixelData" not in ds:
            raise ImageReadError(f"{path}: DICOM file without pixel data")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        pixels = ds.pixel_array
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom raises many types for bad headers and missing codecs
        raise ImageReadError(f"{path}: cannot decode DICOM ({type(exc).__name__}: {exc})") from exc

    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_modality_lut(pixels, ds).astype(np.float64)
    elif pixels.ndim == 3 and pixels.shape[-1] == 3:
        # pydicom returns colour DICOM as RGB; radiographs are occasionally saved so.
        values = pixels.astype(np.float64) @ _LUMA.astype(np.float64)
    else:
        raise ImageReadError(f"{path}: unsupported DICOM PhotometricInterpretation {photometric!r}")
    _check_finite(path, values)
    window = _first_window(ds)
    image = _apply_window(values, *window) if window else _min_max(path, values)
    return 1.0 - image if photometric == "MONOCHROME1" else image


def _first_window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The first (WindowCenter, WindowWidth) pair, or None if absent or unusable."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center, width = _first_value(center), _first_value(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if np.isfinite(center) and np.isfinite(width) and width >= 1.0 else None


def _first_value(value) -> float:
    """A DICOM number, or the first of a multi-valued one."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)


def _apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM (PS3.3 C.11.2.1.2) linear window function, output in [0, 1]."""
    if width == 1.0:  # the standard's degenerate window: a threshold
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _min_max(path: Path, values: np.ndarray) -> np.ndarray:
    _check_finite(path, values)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _check_finite(path: Path, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise ImageReadError(f"{path}: contains non-finite values (NaN or infinity)")


def list_images(source: PathLike) -> list[Path]:
    """The image files a data source names, in a deterministic order.

    ``source`` is one of:

    * a folder: every file below it (recursively) with an image suffix
      (.png .jpg .jpeg .tif .tiff .bmp .dcm .dicom, any case) or without a
      suffix but with a DICOM preamble, sorted by path;
    * a text file (.txt / .lst) with one path per line: relative paths are
      taken relative to the text file's folder, blank lines and lines starting
      with ``#`` are ignored, listed folders are expanded as above; listed
      files are returned whether or not they exist, so that loading reports
      the missing ones;
    * any other file: that single image.

    Raises ``FileNotFoundError`` naming ``source`` if it does not exist.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    if source.is_dir():
        return _scan_folder(source)
    if source.suffix.lower() in LIST_SUFFIXES:
        paths: list[Path] = []
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = Path(line).expanduser()
            entry = entry if entry.is_absolute() else source.parent / entry
            paths.extend(_scan_folder(entry) if entry.is_dir() else [entry])
        return paths
    return [source]


def _scan_folder(folder: Path) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES or (suffix == "" and is_dicom(path)):
            found.append(path)
    return sorted(found)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float image (or each channel of an (H, W, C) one) to ``size`` x ``size``
    with the core's resampler, the one that
    makes the training views (area average when shrinking, bilinear when enlarging), so data
    loading, training and inference all see the same pixels.

    The image is stretched, not cropped: radiographs are close to square and
    keeping every pixel of the field of view matters more than the aspect ratio.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        return np.moveaxis(resize_batch(np.moveaxis(image, -1, 0), size), 0, -1)
    return resize_batch(image[None], size)[0]


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) float images -> float32 (N, size, size), as `resize`, in one native call."""
    from .. import _native

    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.shape[1:] == (size, size):
        return images
    out = np.empty((len(images), size, size), np.float32)
    _native.resize(images, out)
    return out


def load_images(
    source: PathLike, size: int | None = None, *, warn: bool = True, shard: tuple[int, int] = (0, 1),
    channels: int = 1,
) -> tuple[np.ndarray | list[np.ndarray], list[Path]]:
    """Read every image of ``source`` (see ``list_images``).

    Returns (images, paths) for the files that could be read: images is a
    float32 array (N, size, size) (``channels=3``: (N, size, size, 3) R, G, B) when
    ``size`` is given, else a list of arrays of their own shapes. Unreadable files are skipped and reported
    together in one ``ImageSkipWarning`` listing each file with its reason
    (unless ``warn`` is False; the returned paths still show what was kept).
    Raises ``ImageReadError`` if no file is readable.

    ``shard=(rank, ranks)`` reads only that rank's contiguous part of the files (in order;
    the parts of ranks 0, 1, ... concatenate to the whole); a part may then be empty.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    images, paths, skipped = [], [], []
    files = list_images(source)
    rank, ranks = shard
    bounds = [len(files) * r // ranks for r in range(ranks + 1)]
    for path in files[bounds[rank] : bounds[rank + 1]]:
        try:
            image = read_image(path, channels)
        except (ImageReadError, OSError) as exc:
            skipped.append(f"  {path}: {_reason(path, exc)}")
            continue
        images.append(resize(image, size) if size is not None else image)
        paths.append(path)
    if not images and ranks > 1:
        return (np.zeros((0, size, size) + ((3,) if channels == 3 else ()), np.float32)
                if size is not None else []), []
    if not images:
        detail = "\n".join(skipped) if skipped else "  no image files found"
        raise ImageReadError(f"no readable image in {source}:\n{detail}")
    if skipped and warn:
        message = f"skipped {len(skipped)} unreadable file(s) in {source}:\n" + "\n".join(skipped)
        warnings.warn(ImageSkipWarning(message), stacklevel=2)
    if size is not None:
        return np.stack(images), paths
    return images, paths


def _reason(path: Path, exc: Exception) -> str:
    """The reason part of an error message (ImageReadError messages start with the path)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# ImageStream's data orders (see its docstring).
ORDERS = ("per_epoch", "chained")


class ImageStream:
    """Shuffled batches of radiographs for training, decoded ahead in a background thread.

    ``ImageStream(source, batch_size, size)`` yields float32 arrays
    (batch_size, size, size) in [0, 1], or with ``channels=3`` colour batches
    (batch_size, size, size, 3) R, G, B. ``source`` is anything ``list_images``
    accepts, or an in-memory float array (N, H, W) (colour: (N, H, W, 3)) with values
    in [0, 1] (resized to ``size`` if needed).

    * Order: every epoch is a fresh permutation from a numpy Generator seeded
      with ``(seed, epoch)`` (or the original order if ``shuffle`` is False), cut
      into ``len(stream)`` full batches; the incomplete last batch is dropped. The
      same seed always gives the same sequence of batches, and batch ``k`` is found
      without drawing the ones before it. ``order="chained"`` is the order of runs
      started before ace kept the run state in the checkpoint: one generator
      seeded with ``seed`` draws the epochs' permutations in turn.
    * ``epochs``: how many passes over the data, or None for an endless stream.
    * ``cache=True`` (default) reads and resizes every file once, up front
      (unreadable files are skipped with an ``ImageSkipWarning``); the JSRT
      set is 247 x 512 x 512, small enough to hold. ``cache=False`` keeps only
      the paths and decodes each batch in the worker thread; then an unreadable
      file stops the stream with its error.
    * A worker thread keeps ``prefetch`` batches ready, so decoding and
      copying overlap the native training step, which releases the GIL. An
      exception in the worker is re-raised in the consumer.
    * ``iter(stream)`` (re)starts from the first epoch, or from the batch set by
      ``seek``: a resumed run continues its data order at step ``k`` directly (epoch
      ``k // len(stream)``, images from ``(k % len(stream)) * batch_size`` of its
      permutation). ``close()`` (or leaving a ``with`` block) stops the worker and waits
      for it to finish.

    * ``shard=(rank, ranks)``: data-parallel training. The order and the batches stay
      those of the whole run (``batch_size`` is the global batch); this stream yields only
      the rank's contiguous slice of each batch, images ``rank * batch_size / ranks`` on.

    ``paths`` lists the files behind the images (None for an array source).
    """

    def __init__(
        self,
        source: PathLike | np.ndarray,
        batch_size: int,
        size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        prefetch: int = 2,
        epochs: int | None = None,
        cache: bool = True,
        warn: bool = True,
        shard: tuple[int, int] = (0, 1),
        channels: int = 1,
        order: str = "per_epoch",
    ):
        self._thread: threading.Thread | None = None
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
        self.channels = channels
        if batch_size < 1 or size < 1 or prefetch < 1:
            raise ValueError(
                f"batch_size, size and prefetch must be positive, got {batch_size}, {size}, {prefetch}"
            )
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be None (endless) or positive, got {epochs}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        rank, ranks = shard
        if ranks < 1 or not 0 <= rank < ranks or batch_size % ranks:
            raise ValueError(f"shard (rank {rank}, ranks {ranks}) must split the batch of {batch_size} evenly")
        self.batch_size, self.size, self.shard = batch_size, size, (rank, ranks)
        self.seed, self.shuffle, self.prefetch, self.epochs, self.order = seed, shuffle, prefetch, epochs, order
        self.paths: list[Path] | None = None
        self._images: np.ndarray | None = None
        if isinstance(source, np.ndarray):
            self._images = _array_source(source, size, channels)
        elif cache:
            self._images, self.paths = load_images(source, size, warn=warn, channels=channels)
        else:
            self.paths = list_images(source)
        self._count = len(self._images) if self._images is not None else len(self.paths)
        if self._count < batch_size:
            raise ValueError(f"{self._count} image(s) is fewer than one batch of {batch_size}")
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._done = False
        self._start = 0

    def seek(self, batch: int) -> "ImageStream":
        """Make the next ``iter(stream)`` start at this batch of the sequence (0 = the first)."""
        if batch < 0:
            raise ValueError(f"batch must be non-negative, got {batch}")
        self._start = batch
        return self

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._count // self.batch_size

    def __iter__(self) -> "ImageStream":
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._done = False
        batches = _batch_sequence(
            self._images, self.paths, self._count, self.batch_size, self.size,
            self.seed, self.shuffle, self.epochs, self._start, self.shard, self.channels, self.order,
        )
        # The worker gets only what it needs, not ``self``: an abandoned stream
        # can then be garbage-collected, which stops its worker.
        self._thread = threading.Thread(
            target=_produce,
            args=(batches, self._queue, self._stop),
            name="ace-image-stream",
            daemon=True,
        )
        self._thread.start()
        return self

    def __next__(self) -> np.ndarray:
        if self._thread is None:
            if self._done:
                raise StopIteration
            iter(self)
        item = self._next_item()
        if item is _END:
            self.close()
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            self._done = True
            raise item.error
        return item

    def _next_item(self):
        """The next item from the worker; fails instead of waiting forever if the worker is gone."""
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    self._done = True
                    raise RuntimeError("image stream worker ended without a result")

    def close(self) -> None:
        """Stop the worker thread and wait for it to end."""
        thread, self._thread = getattr(self, "_thread", None), None
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._queue = queue.Queue()  # drop prefetched batches

    def __enter__(self) -> "ImageStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _batch_sequence(
    images: np.ndarray | None,
    paths: list[Path] | None,
    count: int,
    batch_size: int,
    size: int,
    seed: int,
    shuffle: bool,
    epochs: int | None,
    skip: int = 0,
    shard: tuple[int, int] = (0, 1),
    channels: int = 1,
    order: str = "per_epoch",
) -> Iterator[np.ndarray]:
    """The batches of an ``ImageStream`` after the first ``skip``, from memory or decoded
    from ``paths``."""
    per_epoch = count // batch_size
    part = batch_size // shard[1]
    lo = shard[0] * part
    epoch, first = divmod(skip, per_epoch)
    chained = np.random.default_rng(seed)
    if shuffle and order == "chained":
        for _ in range(epoch):          # each epoch's permutation follows from the previous draws
            chained.permutation(count)
    while epochs is None or epoch < epochs:
        if not shuffle:
            permutation = np.arange(count)
        elif order == "chained":
            permutation = chained.permutation(count)
        else:
            permutation = epoch_permutation(seed, epoch, count)
        for start in range(first * batch_size, per_epoch * batch_size, batch_size):
            index = permutation[start : start + batch_size][lo : lo + part]
            if images is not None:
                yield images[index]
            else:
                yield np.stack([resize(read_image(paths[j], channels), size) for j in index])
        epoch, first = epoch + 1, 0


def epoch_permutation(seed: int, epoch: int, count: int) -> np.ndarray:
    """The order of the images in one epoch of a shuffled ``ImageStream``: its own
    generator, seeded with (seed, epoch), so any epoch is drawn without the ones before."""
    return np.random.default_rng([seed, epoch]).permutation(count)


class _Failure:
    """An exception raised in the worker, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _produce(batches: Iterator[np.ndarray], out: queue.Queue, stop: threading.Event) -> None:
    """Worker loop: put batches into ``out`` until exhausted, failed or stopped."""

    def put(item) -> bool:
        # Time out now and then to notice ``stop`` while the consumer is not reading.
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    try:
        for batch in batches:
            if not put(np.ascontiguousarray(batch, dtype=np.float32)):
                return
    except BaseException as exc:  # re-raised in the consumer
        put(_Failure(exc))
        return
    put(_END)


def _array_source(array: np.ndarray, size: int, channels: int = 1) -> np.ndarray:
    """Validate an in-memory (N, H, W) image array (colour: (N, H, W, 3)) and bring it to
    (N, size, size[, 3]) float32."""
    if channels == 3 and array.ndim == 3:
        array = np.repeat(array[..., None], 3, axis=3)
    expected = "(N, H, W, 3)" if channels == 3 else "(N, H, W)"
    if array.ndim != (4 if channels == 3 else 3) or (channels == 3 and array.shape[3] != 3):
        raise ValueError(f"expected an image array of shape {expected}, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected a float image array with values in [0, 1], got dtype {array.dtype}")
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError("image array values must be finite and lie in [0, 1]")
    if array.shape[1:3] != (size, size):
        return np.stack([resize(image, size) for image in array])
    return array.astype(np.float32, copy=False)


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "ImageSkipWarning",
    "ImageStream",
    "is_dicom",
    "list_images",
    "load_images",
    "read_image",
    "resize",
]
