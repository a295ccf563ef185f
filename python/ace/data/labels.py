"""Image-level labels of chest X-ray data sets, for linear probes on the user's own labels.

Three layouts, each read into a `LabelTable` (image paths, a label matrix, label names, a mask
of known labels, and the data set's official train/test split when it has one):

* ChestX-ray14 (NIH): `Data_Entry_2017*.csv` with `Image Index` and `Finding Labels` (labels
  joined by `|`, or `No Finding`: a row of negatives) over the 14 findings; images found by
  name in `images/`, `images_*/images/` or beside the CSV; the official split from
  `train_val_list.txt` / `test_list.txt` beside the CSV; bounding boxes from
  `BBox_List_2017.csv` (pixels of the 1024 px originals).
* CheXpert (Stanford): `train.csv` / `valid.csv` with `Path` and the 14 observation columns,
  each 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned). Uncertain labels
  follow a policy of the CheXpert paper (Irvin et al. 2019): "ignore" (U-Ignore: unknown),
  "zeros" (U-Zeros) or "ones" (U-Ones). Blank is negative (the labeller found no mention),
  or unknown with blank="ignore". `train.csv` with `valid.csv` beside it (or their folder)
  gives the official split: train.csv trains, valid.csv tests.
* A generic CSV: a `path` column, then one column per label holding 1, 0 or blank (unknown);
  an optional `split` column (train / test) gives the split.

Relative image paths are taken from the CSV's folder (CheXpert's `CheXpert-v1.0-small/...`
paths also from its parent, where the official archive puts them). Bad input raises
`ace.ACEError` naming the file, the row or the column.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ACEError

CHESTXRAY14_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                      "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
                      "Hernia")
CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices")
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")
FORMATS = ("auto", "chestxray14", "chexpert", "csv")
# The bounding-box file spells one finding differently from the data entry file.
_BBOX_SPELLINGS = {"Infiltrate": "Infiltration"}
_MISSING_SHOWN = 5


@dataclass
class LabelTable:
    """N images with L binary labels.

    paths: absolute image paths (N,); labels: float32 (N, L), 1 positive, 0 negative (0 where
    unknown); names: the L label names; known: bool (N, L), False where a label is unknown;
    split: {"train": indices, "test": indices} from the data set's own split files, or None;
    groups: the patient of each image (N,) when the layout says, else None (seeded splits keep
    a patient's images together); boxes: (row, label, x, y, w, h) bounding boxes.
    """
    paths: list
    labels: np.ndarray
    names: list
    known: np.ndarray
    split: dict | None = None
    groups: np.ndarray | None = None
    source: str = ""
    format: str = ""
    boxes: list = field(default_factory=list)

    def __len__(self):
        return len(self.paths)

    def train_test(self, test_fraction=0.3, seed=0):
        """The official split when the table has one, else a seeded split by patient (or by
        image) with about `test_fraction` of the images in the test part."""
        if self.split is not None:
            return self.split
        if not 0 < test_fraction < 1:
            raise ACEError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        groups = self.groups if self.groups is not None else np.arange(len(self))
        unique, inverse = np.unique(groups, return_inverse=True)
        if len(unique) < 2:
            raise ACEError(f"{self.source}: a train/test split needs at least 2 patients or images")
        order = np.random.default_rng(seed).permutation(len(unique))
        n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
        test_groups = np.zeros(len(unique), bool)
        test_groups[order[:n_test]] = True
        test = test_groups[inverse]
        return {"train": np.nonzero(~test)[0], "test": np.nonzero(test)[0]}


def read_labels(path, format="auto", *, uncertain="ignore", blank="zeros", missing="error"):
    """The label table of `path` (a CSV, or a ChestX-ray14 / CheXpert folder) in the given
    layout; "auto" tells them apart by file names and header. missing="error" refuses images
    that do not exist, "drop" leaves their rows out."""
    if format not in FORMATS:
        raise ACEError(f"unknown labels format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise ACEError(f"no labels file or folder at {path}")
    if format == "auto":
        format = detect_format(path)
    if format == "chestxray14":
        return read_chestxray14(path, missing=missing)
    if format == "chexpert":
        return read_chexpert(path, uncertain=uncertain, blank=blank, missing=missing)
    return read_label_csv(path, missing=missing)


def detect_format(path):
    """"chestxray14", "chexpert" or "csv", from the file name or the header."""
    path = Path(path)
    if path.is_dir():
        if _chestxray14_csv(path, required=False):
            return "chestxray14"
        if (path / "train.csv").is_file() or (path / "valid.csv").is_file():
            return "chexpert"
        raise ACEError(f"{path}: a labels folder must hold Data_Entry_2017*.csv (ChestX-ray14) or "
                       "train.csv / valid.csv (CheXpert); or give a CSV file")
    header, _ = _read_csv(path, rows=False)
    if "Finding Labels" in header and "Image Index" in header:
        return "chestxray14"
    if "Path" in header and any(name in header for name in CHEXPERT_LABELS):
        return "chexpert"
    return "csv"


# ---------------------------------------------------------------- ChestX-ray14

def read_chestxray14(path, *, missing="error"):
    """ChestX-ray14 from its `Data_Entry_2017*.csv` (or the folder holding it)."""
    path = Path(path)
    csv_path = _chestxray14_csv(path) if path.is_dir() else path
    root = csv_path.parent
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("Image Index", "Finding Labels"))
    names = [r["Image Index"].strip() for r in rows]
    labels = np.zeros((len(rows), len(CHESTXRAY14_LABELS)), np.float32)
    column = {name: j for j, name in enumerate(CHESTXRAY14_LABELS)}
    for i, r in enumerate(rows):
        findings = [f.strip() for f in r["Finding Labels"].split("|") if f.strip()]
        if not findings:
            raise ACEError(f"{csv_path}, row {i + 2}: 'Finding Labels' is empty (write 'No Finding')")
        for f in findings:
            if f == "No Finding":
                if len(findings) > 1:
                    raise ACEError(f"{csv_path}, row {i + 2}: 'No Finding' together with other findings")
                continue
            if f not in column:
                raise ACEError(f"{csv_path}, row {i + 2}: unknown finding {f!r}; ChestX-ray14 has "
                               f"{', '.join(CHESTXRAY14_LABELS)} and 'No Finding'")
            labels[i, column[f]] = 1
    found = _image_index(root)
    paths = [found.get(n, root / "images" / n) for n in names]
    groups = np.array([r["Patient ID"].strip() for r in rows]) if "Patient ID" in header else None
    split = _official_split(root, names)
    table = LabelTable(paths, labels, list(CHESTXRAY14_LABELS), np.ones(labels.shape, bool), split, groups,
                       str(csv_path), "chestxray14")
    table.boxes = _read_boxes(root / "BBox_List_2017.csv", {n: i for i, n in enumerate(names)})
    return _check_files(table, missing)


def _chestxray14_csv(folder, required=True):
    found = sorted(folder.glob("Data_Entry_2017*.csv"))
    if not found and required:
        raise ACEError(f"{folder}: no Data_Entry_2017*.csv (the ChestX-ray14 labels) in this folder")
    return found[-1] if found else None   # Data_Entry_2017_v2020.csv sorts after Data_Entry_2017.csv


def _image_index(root):
    """{file name: path} of the images in the folders the NIH archives unpack to."""
    index = {}
    folders = [root / "images"] + sorted(root.glob("images_*/images")) + sorted(root.glob("images_*")) + [root]
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name not in index and e.is_file():
                    index[e.name] = Path(e.path)
    return index


def _official_split(root, names):
    """{"train", "test"} row indices from train_val_list.txt and test_list.txt, or None when
    they are absent. Rows in neither list are in neither part."""
    files = {"train": root / "train_val_list.txt", "test": root / "test_list.txt"}
    if not all(f.is_file() for f in files.values()):
        return None
    listed = {part: {line.strip() for line in f.read_text().splitlines() if line.strip()}
              for part, f in files.items()}
    both = listed["train"] & listed["test"]
    if both:
        raise ACEError(f"{files['train']} and {files['test']} both list {len(both)} image(s), "
                       f"e.g. {sorted(both)[0]}")
    split = {part: np.array([i for i, n in enumerate(names) if n in listed[part]], np.int64) for part in listed}
    for part, idx in split.items():
        if len(idx) == 0:
            raise ACEError(f"{files[part]} lists none of the images of the labels file")
    return split


def _read_boxes(path, rows):
    """(row, label, x, y, w, h) of BBox_List_2017.csv: image, finding, then x, y, w, h (its
    header names them 'Bbox [x', 'y', 'w', 'h]'). Boxes of images not in the table are left out."""
    if not path.is_file():
        return []
    boxes = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)
        for n, record in enumerate(reader, start=2):
            if not any(field.strip() for field in record):
                continue
            try:
                image, label = record[0].strip(), record[1].strip()
                x, y, w, h = (float(v) for v in record[2:6])
            except (IndexError, ValueError):
                raise ACEError(f"{path}, row {n}: expected image, finding, x, y, w, h; got {record}") from None
            label = _BBOX_SPELLINGS.get(label, label)
            if label not in CHESTXRAY14_LABELS:
                raise ACEError(f"{path}, row {n}: unknown finding {label!r}")
            if image in rows:
                boxes.append((rows[image], label, x, y, w, h))
    return boxes


# ---------------------------------------------------------------- CheXpert

def read_chexpert(path, *, uncertain="ignore", blank="zeros", missing="error"):
    """CheXpert from `train.csv` / `valid.csv` or their folder; see the module docstring for
    the policies. The patient of each image comes from the `patientNNNNN` part of its path."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ACEError(f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    if blank not in ("zeros", "ignore"):
        raise ACEError(f"blank must be 'zeros' or 'ignore', got {blank!r}")
    path = Path(path)
    if path.is_dir():
        parts = [p for p in (path / "train.csv", path / "valid.csv") if p.is_file()]
        if not parts:
            raise ACEError(f"{path}: no train.csv or valid.csv (the CheXpert labels) in this folder")
    elif path.name == "train.csv" and (path.parent / "valid.csv").is_file():
        parts = [path, path.parent / "valid.csv"]
    else:
        parts = [path]
    tables = [_read_chexpert_csv(p, uncertain, blank) for p in parts]
    names = tables[0][1]
    for p, t in zip(parts[1:], tables[1:]):
        if t[1] != names:
            raise ACEError(f"{p} has the label columns {t[1]}, {parts[0]} has {names}")
    paths = [p for t in tables for p in t[0]]
    labels = np.concatenate([t[2] for t in tables])
    known = np.concatenate([t[3] for t in tables])
    split = None
    if len(parts) == 2:
        n_train = len(tables[0][0])
        split = {"train": np.arange(n_train), "test": np.arange(n_train, len(paths))}
    groups = np.array([_patient(p) for p in paths])
    table = LabelTable(paths, labels, names, known, split, groups, ", ".join(map(str, parts)), "chexpert")
    return _check_files(table, missing)


def _read_chexpert_csv(csv_path, uncertain, blank):
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("Path",))
    names = [h for h in header if h in CHEXPERT_LABELS]
    if not names:
        raise ACEError(f"{csv_path}: none of the CheXpert label columns ({', '.join(CHEXPERT_LABELS)})")
    labels = np.zeros((len(rows), len(names)), np.float32)
    known = np.ones(labels.shape, bool)
    for i, r in enumerate(rows):
        for j, name in enumerate(names):
            value = _number(r[name], csv_path, i, name, allowed=(1, 0, -1))
            if value is None:
                known[i, j] = blank == "zeros"
            elif value == -1:
                known[i, j] = uncertain != "ignore"
                labels[i, j] = uncertain == "ones"
            else:
                labels[i, j] = value
    bases = (csv_path.parent, csv_path.parent.parent)
    paths = [_resolve(r["Path"], bases, csv_path, i) for i, r in enumerate(rows)]
    return paths, names, labels, known


def _patient(path):
    m = re.search(r"patient\d+", str(path))
    return m.group(0) if m else str(path)


# ---------------------------------------------------------------- generic CSV

def read_label_csv(path, *, missing="error"):
    """A CSV of `path,label1,label2,...`: 1 or 0 per label, blank for unknown; an optional
    `split` column of train / test."""
    path = Path(path)
    if path.is_dir():
        raise ACEError(f"{path} is a folder; give the labels CSV file")
    header, rows = _read_csv(path)
    _require_columns(path, header, ("path",))
    names = [h for h in header if h not in ("path", "split")]
    if not names:
        raise ACEError(f"{path}: no label columns besides 'path'" + (" and 'split'" if "split" in header else ""))
    labels = np.zeros((len(rows), len(names)), np.float32)
    known = np.ones(labels.shape, bool)
    for i, r in enumerate(rows):
        for j, name in enumerate(names):
            value = _number(r[name], path, i, name, allowed=(1, 0))
            known[i, j] = value is not None
            labels[i, j] = value or 0
    split = None
    if "split" in header:
        parts = np.array([r["split"].strip().lower() for r in rows])
        bad = sorted(set(parts) - {"train", "test"})
        if bad:
            raise ACEError(f"{path}: column 'split' must hold train or test, got {bad[0]!r}")
        split = {part: np.nonzero(parts == part)[0] for part in ("train", "test")}
    paths = [_resolve(r["path"], (path.parent,), path, i) for i, r in enumerate(rows)]
    return _check_files(LabelTable(paths, labels, names, known, split, None, str(path), "csv"), missing)


# ---------------------------------------------------------------- shared

def _read_csv(path, rows=True):
    """(header, rows as dicts) of a CSV file; header cells stripped."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if not header or not any(header):
                raise ACEError(f"{path}: empty file (no header row)")
            duplicates = sorted({h for h in header if header.count(h) > 1 and h})
            if duplicates:
                raise ACEError(f"{path}: column {duplicates[0]!r} appears more than once")
            if not rows:
                return header, None
            records = []
            for n, record in enumerate(reader, start=2):
                if not any(cell.strip() for cell in record):
                    continue
                if len(record) > len(header) and any(c.strip() for c in record[len(header):]):
                    raise ACEError(f"{path}, row {n}: {len(record)} fields, the header has {len(header)}")
                records.append(dict(zip(header, record + [""] * (len(header) - len(record)))))
    except UnicodeDecodeError as e:
        raise ACEError(f"{path}: not a text CSV file ({e.reason})") from None
    except csv.Error as e:
        raise ACEError(f"{path}: malformed CSV ({e})") from None
    if not records:
        raise ACEError(f"{path}: no rows below the header")
    return header, records


def _require_columns(path, header, columns):
    absent = [c for c in columns if c not in header]
    if absent:
        raise ACEError(f"{path}: missing column(s) {', '.join(map(repr, absent))}; the header has "
                       f"{', '.join(map(repr, header))}")


def _number(text, path, i, column, allowed):
    """The label value of a cell (None for blank), which must be one of `allowed`."""
    text = text.strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in allowed:
        shown = " or ".join(str(a) for a in allowed)
        raise ACEError(f"{path}, row {i + 2}, column {column!r}: {text!r} is not {shown} (or blank)")
    return int(value)


def _resolve(text, bases, csv_path, i):
    """An image path of a CSV: absolute as written, else under the first base where it exists
    (the first base when it exists nowhere, so that the missing-file message names it)."""
    text = text.strip()
    if not text:
        raise ACEError(f"{csv_path}, row {i + 2}: empty image path")
    p = Path(text).expanduser()
    if p.is_absolute():
        return p
    for base in bases:
        if (base / p).exists():
            return (base / p).absolute()
    return (bases[0] / p).absolute()


def _check_files(table, missing):
    if missing not in ("error", "drop"):
        raise ACEError(f"missing must be 'error' or 'drop', got {missing!r}")
    absent = [i for i, p in enumerate(table.paths) if not Path(p).is_file()]
    if not absent:
        return table
    if missing == "error" or len(absent) == len(table):
        shown = ", ".join(str(table.paths[i]) for i in absent[:_MISSING_SHOWN])
        more = f" and {len(absent) - _MISSING_SHOWN} more" if len(absent) > _MISSING_SHOWN else ""
        raise ACEError(f"{table.source}: {len(absent)} of {len(table)} images do not exist: {shown}{more}")
    return _keep(table, np.setdiff1d(np.arange(len(table)), absent))


def _keep(table, rows):
    """The table restricted to `rows` (sorted indices), split and boxes renumbered."""
    new = -np.ones(len(table), np.int64)
    new[rows] = np.arange(len(rows))
    split = None
    if table.split is not None:
        split = {part: new[idx][new[idx] >= 0] for part, idx in table.split.items()}
    boxes = [(int(new[b[0]]),) + tuple(b[1:]) for b in table.boxes if new[b[0]] >= 0]
    return LabelTable([table.paths[i] for i in rows], table.labels[rows], table.names, table.known[rows], split,
                      None if table.groups is None else table.groups[rows], table.source, table.format, boxes)
