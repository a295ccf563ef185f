"""Tests for reading radiographs and streaming batches (ace.data.images)."""

from __future__ import annotations

import gc
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ace.data import (
    ImageReadError,
    ImageSkipWarning,
    ImageStream,
    list_images,
    load_images,
    read_image,
)

from conftest import JSRT_IMAGES, JSRT_MISSING


def jsrt_images() -> Path:
    if not JSRT_IMAGES.is_dir():
        pytest.skip(JSRT_MISSING)
    return JSRT_IMAGES


def ramp(low: int, high: int, shape=(24, 40)) -> np.ndarray:
    return np.linspace(low, high, shape[0] * shape[1]).round().reshape(shape)


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple | None = None,
) -> Path:
    """A minimal valid DX DICOM file: 16 bits allocated, 12 stored, unsigned."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --- real data --------------------------------------------------------------


def test_reads_a_jsrt_radiograph():
    path = sorted(jsrt_images().glob("*.png"))[0]
    image = read_image(path)
    assert image.shape == (512, 512) and image.dtype == np.float32
    assert 0.0 <= image.min() < 0.1 and 0.9 < image.max() <= 1.0
    np.testing.assert_allclose(image, np.asarray(Image.open(path), np.float32) / 255, atol=1e-6)


def test_loads_the_jsrt_folder_resized():
    images, paths = load_images(jsrt_images(), size=224)
    assert images.shape == (247, 224, 224) and images.dtype == np.float32
    assert len(paths) == 247 and paths == sorted(paths)
    assert 0.0 <= images.min() and images.max() <= 1.0


# --- formats and normalisation ----------------------------------------------


def test_16bit_png_is_min_max_normalised(tmp_path):
    values = ramp(100, 4000)
    path = write_png(tmp_path / "ramp16.png", values.astype(np.uint16))
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_allclose(read_image(path), (values - 100) / 3900, atol=1e-6)


def test_16bit_tiff_is_min_max_normalised(tmp_path):
    tifffile = pytest.importorskip("tifffile")  # an independent TIFF writer
    values = ramp(300, 60000)
    tifffile.imwrite(tmp_path / "ramp16.tif", values.astype(np.uint16))
    np.testing.assert_allclose(read_image(tmp_path / "ramp16.tif"), (values - 300) / 59700, atol=1e-6)


def test_float_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    inside = ramp(0, 1000).astype(np.float32) / 1000 * 0.6 + 0.2  # already in [0, 1]: kept
    tifffile.imwrite(tmp_path / "unit.tif", inside)
    np.testing.assert_allclose(read_image(tmp_path / "unit.tif"), inside, atol=1e-6)
    wide = ramp(-50, 150).astype(np.float32)  # outside [0, 1]: min-max
    tifffile.imwrite(tmp_path / "wide.tif", wide)
    np.testing.assert_allclose(read_image(tmp_path / "wide.tif"), (wide + 50) / 200, atol=1e-6)
    broken = inside.copy()
    broken[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", broken)
    with pytest.raises(ImageReadError, match="non-finite"):
        read_image(tmp_path / "nan.tif")


def test_8bit_png_is_divided_by_255(tmp_path):
    values = ramp(20, 200).astype(np.uint8)
    path = write_png(tmp_path / "ramp8.png", values)
    np.testing.assert_allclose(read_image(path), values / 255.0, atol=1e-6)


def test_colour_images_become_grayscale_by_luminance(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)
    rgb[:, 4:8] = (0, 255, 0)
    rgb[:, 8:] = (128, 128, 128)
    expected = np.empty((10, 12))
    expected[:, :4], expected[:, 4:8], expected[:, 8:] = 0.299, 0.587, 128 / 255
    image = read_image(write_png(tmp_path / "rgb.png", rgb))
    assert image.shape == (10, 12)
    np.testing.assert_allclose(image, expected, atol=1e-5)
    rgba = np.dstack([rgb, np.full((10, 12), 7, np.uint8)])  # alpha is ignored
    np.testing.assert_allclose(read_image(write_png(tmp_path / "rgba.png", rgba)), expected, atol=1e-5)
    gray_alpha = Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]]))
    assert gray_alpha.mode == "LA"
    gray_alpha.save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "la.png"), rgb[..., 0] / 255, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    values = ramp(0, 255, (10, 20)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    Image.fromarray(values).save(tmp_path / "rotated.png", exif=exif)
    np.testing.assert_allclose(read_image(tmp_path / "rotated.png"), np.rot90(values, -1) / 255, atol=1e-6)


def test_multi_page_tiff_is_rejected(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), v, np.uint16)) for v in (1, 2, 3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageReadError, match="3 frames"):
        read_image(tmp_path / "pages.tif")


# --- DICOM ------------------------------------------------------------------


def test_dicom_applies_rescale_and_window(tmp_path):
    raw = ramp(0, 4095).astype(np.uint16)
    rescaled = 2.0 * raw - 100.0
    # Without a window: min-max of the rescaled values (ordering kept).
    image = read_image(write_dicom(tmp_path / "plain.dcm", raw, slope=2, intercept=-100))
    np.testing.assert_allclose(image, (rescaled - rescaled.min()) / np.ptp(rescaled), atol=1e-6)
    # With a window (first of several values) in rescaled units: the DICOM linear function.
    center, width = 3000.0, 4001.0
    windows = ([center, 500], [width, 100])
    path = write_dicom(tmp_path / "window.dcm", raw, slope=2, intercept=-100, window=windows)
    expected = np.clip((rescaled - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    image = read_image(path)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image.min() == 0.0 and image.max() == 1.0 and np.all(np.diff(image.ravel()) >= 0)


def test_monochrome1_is_inverted(tmp_path):
    raw = ramp(50, 4000).astype(np.uint16)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", raw, "MONOCHROME2", 2, -100, (3000, 4000)))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", raw, "MONOCHROME1", 2, -100, (3000, 4000)))
    np.testing.assert_allclose(mono1 + mono2, 1.0, atol=1e-6)
    assert mono2[0, 0] < mono2[-1, -1] and mono1[0, 0] > mono1[-1, -1]


def test_multi_frame_dicom_is_rejected(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(ImageReadError, match="2 frames"):
        read_image(path)


def test_dicom_without_suffix_is_found_by_its_preamble(tmp_path):
    raw = ramp(0, 4000, (8, 8)).astype(np.uint16)
    write_dicom(tmp_path / "IM0001", raw)
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "labels.csv").write_text("a,b\n")
    write_png(tmp_path / "B.PNG", np.zeros((8, 8), np.uint8))
    assert list_images(tmp_path) == [tmp_path / "B.PNG", tmp_path / "IM0001"]
    np.testing.assert_allclose(read_image(tmp_path / "IM0001"), raw / 4000, atol=1e-6)


# --- listing, loading and reporting -----------------------------------------


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    write_png(tmp_path / "good.png", np.full((16, 16), 200, np.uint8))
    (tmp_path / "bad.png").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "empty.png").write_bytes(b"")
    valid = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(valid[: len(valid) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, paths = load_images(tmp_path)
    assert paths == [tmp_path / "good.png"] and len(images) == 1
    assert len(caught) == 1 and issubclass(caught[0].category, ImageSkipWarning)
    message = str(caught[0].message)
    for name in ("bad.png", "empty.png", "truncated.png"):
        assert name in message
    assert "empty file" in message


def test_no_readable_image_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no readable image"):
        load_images(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="x.png"):
        load_images(tmp_path / "bad")


def test_missing_path_raises_file_not_found(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_images(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_image(missing)


def test_path_list_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "lists").mkdir()
    a = write_png(tmp_path / "imgs" / "a.png", np.full((8, 8), 10, np.uint8))
    b = write_png(tmp_path / "imgs" / "b.png", np.full((8, 8), 20, np.uint8))
    listing = tmp_path / "lists" / "train.txt"
    listing.write_text(f"# training images\n\n../imgs/b.png\n  {a}  \n# ../imgs/a.png\n")
    assert list_images(listing) == [tmp_path / "lists" / ".." / "imgs" / "b.png", a]
    images, paths = load_images(listing, size=4)
    assert images.shape == (2, 4, 4)
    np.testing.assert_allclose(images[:, 0, 0], [20 / 255, 10 / 255], atol=1e-6)
    assert paths[0].resolve() == b


def test_load_without_size_keeps_each_shape(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 12), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((5, 7), np.uint8))
    images, _ = load_images(tmp_path)
    assert [im.shape for im in images] == [(8, 12), (5, 7)]
    resized, _ = load_images(tmp_path, size=6)
    assert resized.shape == (2, 6, 6) and resized.dtype == np.float32


# --- ImageStream ------------------------------------------------------------


def labelled(n: int, size: int = 8) -> np.ndarray:
    """n constant images whose value encodes their index."""
    values = np.arange(n, dtype=np.float32) / (n - 1)
    return np.broadcast_to(values[:, None, None], (n, size, size)).copy()


def ids(batch: np.ndarray, n: int) -> list[int]:
    return [int(round(v * (n - 1))) for v in batch[:, 0, 0]]


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ace-image-stream"]


def test_stream_batches_and_epochs():
    with ImageStream(labelled(12), batch_size=5, size=8, epochs=3) as stream:
        assert len(stream) == 2  # the last 2 images of each epoch are dropped
        batches = list(stream)
    assert len(batches) == 6
    for batch in batches:
        assert batch.shape == (5, 8, 8) and batch.dtype == np.float32
        assert 0.0 <= batch.min() and batch.max() <= 1.0
    for epoch in range(3):
        seen = ids(batches[2 * epoch], 12) + ids(batches[2 * epoch + 1], 12)
        assert len(set(seen)) == 10  # no image twice in one epoch
    epochs = [sorted(ids(batches[2 * e], 12) + ids(batches[2 * e + 1], 12)) for e in range(3)]
    assert not (epochs[0] == epochs[1] == epochs[2])  # reshuffled each epoch


def test_stream_order_is_deterministic_per_seed():
    def order(seed):
        with ImageStream(labelled(12), 4, 8, seed=seed, epochs=2) as stream:
            return [ids(b, 12) for b in stream]

    assert order(0) == order(0)
    assert order(0) != order(1)
    with ImageStream(labelled(12), 4, 8, shuffle=False, epochs=1) as stream:
        assert [ids(b, 12) for b in stream] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_stream_restarts_and_resizes_arrays():
    with ImageStream(np.random.default_rng(0).random((6, 20, 30)), 3, 16, epochs=1) as stream:
        first = [b.copy() for b in stream]
        again = list(stream)
        assert first[0].shape == (3, 16, 16)
        assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_stream_from_files_cached_or_lazy_agree(tmp_path):
    for i in range(5):
        write_png(tmp_path / f"{i}.png", np.full((20, 20), 40 * i, np.uint8))
    with ImageStream(tmp_path, 2, 10, seed=3, epochs=2) as cached, ImageStream(
        tmp_path, 2, 10, seed=3, epochs=2, cache=False
    ) as lazy:
        assert cached.paths == lazy.paths == sorted(tmp_path.glob("*.png"))
        pairs = list(zip(cached, lazy))
    assert len(pairs) == 4
    for a, b in pairs:
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_worker_errors_surface_in_the_consumer(tmp_path):
    for i in range(6):
        write_png(tmp_path / f"{i}.png", np.full((8, 8), i, np.uint8))
    stream = ImageStream(tmp_path, 2, 8, shuffle=False, epochs=1, cache=False, prefetch=1)
    (tmp_path / "3.png").unlink()  # listed, then deleted: the second batch fails
    with pytest.raises(FileNotFoundError, match="3.png"):
        for _ in stream:
            pass
    assert not stream_threads()


def test_close_stops_the_worker():
    stream = ImageStream(labelled(10), 2, 8, prefetch=2)  # endless
    assert next(stream).shape == (2, 8, 8)
    workers = stream_threads()
    assert len(workers) == 1 and workers[0].is_alive()
    stream.close()
    assert not workers[0].is_alive() and not stream_threads()
    with ImageStream(labelled(10), 2, 8) as stream:
        next(iter(stream))
        worker = stream_threads()[0]
    assert not worker.is_alive()


def test_abandoned_stream_stops_its_worker():
    stream = iter(ImageStream(labelled(10), 2, 8))
    next(stream)
    worker = stream_threads()[0]
    del stream
    gc.collect()
    worker.join(timeout=5)
    assert not worker.is_alive()


def test_stream_rejects_bad_input():
    with pytest.raises(ValueError, match="fewer than one batch"):
        ImageStream(labelled(3), 4, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageStream(labelled(6) * 2, 2, 8)
    with pytest.raises(ValueError, match="shape"):
        ImageStream(np.zeros((4, 8)), 2, 8)


@pytest.mark.parametrize("start", [0, 1, 3, 4, 9])
def test_seek_continues_the_same_sequence(start):
    """A resumed run's stream, started at batch `start`, yields exactly the batches the
    uninterrupted stream yields from there (across epoch boundaries)."""
    images = np.random.default_rng(0).random((13, 8, 8)).astype(np.float32)
    with ImageStream(images, 3, 8, seed=4) as full:
        expected = [b for _, b in zip(range(start + 6), full)][start:]
    with ImageStream(images, 3, 8, seed=4) as resumed:
        got = [b for _, b in zip(range(6), iter(resumed.seek(start)))]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
