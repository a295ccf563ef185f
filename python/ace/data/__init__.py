"""Data for ACE: reading radiographs from disk, streaming training batches, and
the procedural chest-radiograph phantom used when no data is given."""

from . import phantom
from .datasets import LabelledSet, load_jsrt, mirror_pairs, phantom_set
from .images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    ImageSkipWarning,
    ImageStream,
    is_dicom,
    list_images,
    load_images,
    read_image,
    resize,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LabelledSet",
    "load_jsrt",
    "mirror_pairs",
    "phantom_set",
    "ImageReadError",
    "ImageSkipWarning",
    "ImageStream",
    "is_dicom",
    "list_images",
    "load_images",
    "phantom",
    "read_image",
    "resize",
]
