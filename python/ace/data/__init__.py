"""Data for ACE: reading radiographs from disk, streaming training batches, the procedural
chest-radiograph phantom used when no data is given, and the label tables of chest X-ray
data sets (ChestX-ray14, CheXpert, a generic CSV) for probes on the user's own labels."""

from . import fundus, phantom
from .datasets import (LabelledSet, LesionSet, lesion_phantoms, load_jsrt, load_jsrt_nodules, mirror_pairs,
                       phantom_set)
from .labels import LabelTable, read_chestxray14, read_chexpert, read_label_csv, read_labels
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
    "LesionSet",
    "lesion_phantoms",
    "load_jsrt_nodules",
    "LabelTable",
    "read_labels",
    "read_chestxray14",
    "read_chexpert",
    "read_label_csv",
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
