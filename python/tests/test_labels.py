"""Label tables (ace.data.labels) on small CSVs and images written here, in the layouts of
ChestX-ray14, CheXpert and a generic CSV; and `ace evaluate --labels`, the linear probe per label."""
import json

import numpy as np
import pytest
from PIL import Image

import ace
from ace.data import read_chestxray14, read_chexpert, read_label_csv, read_labels
from ace.data.labels import CHESTXRAY14_LABELS

from conftest import run_ace


def write_image(path, square=False, seed=0, size=64):
    """A noisy gray image, with a bright 20 px square at a random place when `square`."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.2, 0.5, (size, size))
    if square:
        y, x = rng.integers(0, size - 20, 2)
        image[y:y + 20, x:x + 20] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- generic CSV

def test_generic_csv_resolves_paths_from_its_folder_and_marks_blanks_unknown(tmp_path):
    root = tmp_path / "set"
    write_image(root / "img" / "a.png")
    write_image(root / "img" / "b.png")
    outside = write_image(tmp_path / "elsewhere" / "c.png")
    (root / "labels.csv").write_text(f"path,effusion,nodule\nimg/a.png,1,0\nimg/b.png,0,\n{outside},1.0,1\n")
    table = read_labels(root / "labels.csv")
    assert table.format == "csv"
    assert table.paths == [root / "img" / "a.png", root / "img" / "b.png", outside]
    assert all(p.is_absolute() for p in table.paths)
    assert table.names == ["effusion", "nodule"]
    np.testing.assert_array_equal(table.labels, [[1, 0], [0, 0], [1, 1]])
    np.testing.assert_array_equal(table.known, [[True, True], [True, False], [True, True]])
    assert table.split is None and table.groups is None


def test_generic_csv_split_column_and_seeded_split(tmp_path):
    rows = []
    for i in range(10):
        write_image(tmp_path / f"{i}.png", seed=i)
        rows.append(f"{i}.png,{i % 2},{'test' if i >= 7 else 'train'}")
    (tmp_path / "l.csv").write_text("path,x,split\n" + "\n".join(rows) + "\n")
    table = read_label_csv(tmp_path / "l.csv")
    assert table.names == ["x"]
    assert table.split["train"].tolist() == list(range(7)) and table.split["test"].tolist() == [7, 8, 9]
    assert table.train_test() is table.split
    (tmp_path / "m.csv").write_text("path,x\n" + "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    table = read_label_csv(tmp_path / "m.csv")
    a, b = table.train_test(0.3, seed=1), table.train_test(0.3, seed=1)
    assert a["test"].tolist() == b["test"].tolist() and len(a["test"]) == 3
    assert sorted(a["train"].tolist() + a["test"].tolist()) == list(range(10))
    assert table.train_test(0.3, seed=2)["test"].tolist() != a["test"].tolist()


# ---------------------------------------------------------------- ChestX-ray14

NIH_ROWS = [  # image, findings, patient
    ("00000001_000.png", "Cardiomegaly", "1"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", "1"),
    ("00000002_000.png", "No Finding", "2"),
    ("00000003_000.png", "Hernia|Infiltration|Pleural_Thickening", "3"),
    ("00000004_000.png", "Effusion", "4"),
]


def write_chestxray14(root, rows=NIH_ROWS):
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"]
    for k, (name, findings, patient) in enumerate(rows):
        lines.append(f"{name},{findings},0,{patient},58,M,PA,2682,2749,0.143,0.143,")
        # The NIH archives unpack to images_001/images, images_002/images, ...
        write_image(root / f"images_00{1 + k % 2}" / "images" / name, seed=k)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")


def test_chestxray14_labels_split_patients_and_boxes(tmp_path):
    write_chestxray14(tmp_path)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n00000004_000.png\n00009999_000.png\n")
    # The real file's header: 'Bbox [x,y,w,h]' unquoted, then three empty columns.
    (tmp_path / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000003_000.png,Infiltrate,225.08,547.01,86.77,79.18,,,\n"
        "00000004_000.png,Effusion,10,20,30,40,,,\n"
        "00000077_000.png,Mass,1,2,3,4,,,\n")
    for given in (tmp_path, tmp_path / "Data_Entry_2017_v2020.csv"):
        table = read_labels(given)
        assert table.format == "chestxray14"
        assert table.names == list(CHESTXRAY14_LABELS)
        assert [p.name for p in table.paths] == [r[0] for r in NIH_ROWS]
        assert all(p.is_file() for p in table.paths)
        col = {n: j for j, n in enumerate(table.names)}
        expected = np.zeros((5, 14))
        for i, (_, findings, _) in enumerate(NIH_ROWS):
            for f in findings.split("|"):
                if f != "No Finding":
                    expected[i, col[f]] = 1
        np.testing.assert_array_equal(table.labels, expected)
        assert table.labels[2].sum() == 0 and table.known.all()
        assert table.split["train"].tolist() == [0, 1, 3] and table.split["test"].tolist() == [2, 4]
        assert table.groups.tolist() == ["1", "1", "2", "3", "4"]
        assert table.boxes == [(3, "Infiltration", 225.08, 547.01, 86.77, 79.18), (4, "Effusion", 10, 20, 30, 40)]


def test_chestxray14_seeded_split_keeps_patients_together(tmp_path):
    rows = [(f"{p:08d}_{k:03d}.png", "No Finding" if k else "Mass", str(p)) for p in range(1, 9) for k in range(3)]
    write_chestxray14(tmp_path, rows)
    table = read_chestxray14(tmp_path)
    assert table.split is None
    split = table.train_test(0.25, seed=0)
    train_patients, test_patients = set(table.groups[split["train"]]), set(table.groups[split["test"]])
    assert not train_patients & test_patients and len(test_patients) == 2


def test_chestxray14_bad_input(tmp_path):
    write_chestxray14(tmp_path, NIH_ROWS[:2] + [("00000005_000.png", "Cardiomegaly|Dragon", "5")])
    with pytest.raises(ace.ACEError, match=r"row 4: unknown finding 'Dragon'"):
        read_chestxray14(tmp_path)
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text("Image Index,Labels\nx.png,Mass\n")
    with pytest.raises(ace.ACEError, match="missing column.*'Finding Labels'"):
        read_labels(tmp_path / "Data_Entry_2017_v2020.csv", "chestxray14")
    with pytest.raises(ace.ACEError, match="no Data_Entry_2017"):
        read_chestxray14(tmp_path / "images_001")


def test_missing_images_are_named_or_dropped(tmp_path):
    write_chestxray14(tmp_path)
    (tmp_path / "images_002" / "images" / "00000001_001.png").unlink()
    with pytest.raises(ace.ACEError, match=r"1 of 5 images do not exist: .*00000001_001\.png"):
        read_chestxray14(tmp_path)
    table = read_chestxray14(tmp_path, missing="drop")
    assert [p.name for p in table.paths] == [r[0] for r in NIH_ROWS if r[0] != "00000001_001.png"]
    assert table.groups.tolist() == ["1", "2", "3", "4"]


# ---------------------------------------------------------------- CheXpert

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")


def chexpert_row(path, edema, effusion):
    """A row with every label blank but Edema and Pleural Effusion."""
    cells = [""] * 14
    cells[5], cells[10] = edema, effusion
    return ",".join([path, "Female", "68", "Frontal", "AP"] + cells)


def write_chexpert(tmp_path):
    """The official archive's layout: CheXpert-v1.0-small/{train,valid}.csv with paths that
    start with CheXpert-v1.0-small/."""
    root = tmp_path / "CheXpert-v1.0-small"
    train = [("train/patient00001/study1/view1_frontal.jpg", "1.0", "-1.0"),
             ("train/patient00001/study2/view1_frontal.jpg", "-1.0", ""),
             ("train/patient00002/study1/view1_frontal.jpg", "0.0", "1.0")]
    valid = [("valid/patient64541/study1/view1_frontal.jpg", "0.0", "0.0")]
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        lines = [CHEXPERT_HEADER]
        for k, (rel, edema, effusion) in enumerate(rows):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32), 40 * k, np.uint8)).save(path, quality=90)
            lines.append(chexpert_row(f"CheXpert-v1.0-small/{rel}", edema, effusion))
        (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("policy,edema,known_edema,effusion,known_effusion", [
    ("ignore", [1, 0, 0, 0], [1, 0, 1, 1], [0, 0, 1, 0], [0, 1, 1, 1]),
    ("zeros", [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]),
    ("ones", [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [1, 1, 1, 1]),
])
def test_chexpert_uncertainty_policies(tmp_path, policy, edema, known_edema, effusion, known_effusion):
    root = write_chexpert(tmp_path)
    table = read_labels(root / "train.csv", uncertain=policy)       # valid.csv beside it: the official split
    assert table.format == "chexpert" and len(table.names) == 14
    e, p = table.names.index("Edema"), table.names.index("Pleural Effusion")
    np.testing.assert_array_equal(table.labels[:, e], edema)
    np.testing.assert_array_equal(table.known[:, e], np.array(known_edema, bool))
    np.testing.assert_array_equal(table.labels[:, p], effusion)
    np.testing.assert_array_equal(table.known[:, p], np.array(known_effusion, bool))
    # Blank cells (not mentioned) are negatives; with blank="ignore" unknown.
    c = table.names.index("Cardiomegaly")
    assert table.known[:, c].all() and not table.labels[:, c].any()
    assert not read_chexpert(root, uncertain=policy, blank="ignore").known[:, c].any()


def test_chexpert_paths_split_and_patients(tmp_path):
    root = write_chexpert(tmp_path)
    table = read_chexpert(root)
    assert [p.relative_to(root).parts[:2] for p in table.paths] == [
        ("train", "patient00001"), ("train", "patient00001"), ("train", "patient00002"), ("valid", "patient64541")]
    assert all(p.is_file() for p in table.paths)
    assert table.split["train"].tolist() == [0, 1, 2] and table.split["test"].tolist() == [3]
    assert table.groups.tolist() == ["patient00001", "patient00001", "patient00002", "patient64541"]
    alone = read_chexpert(root / "valid.csv")                       # one file: no official split
    assert len(alone) == 1 and alone.split is None


def test_chexpert_bad_input(tmp_path):
    root = write_chexpert(tmp_path)
    text = (root / "valid.csv").read_text()
    (root / "valid.csv").write_text(text.replace(",0.0,", ",2,", 1))
    with pytest.raises(ace.ACEError, match=r"valid.csv, row 2, column 'Edema': '2' is not 1 or 0 or -1"):
        read_chexpert(root / "valid.csv")
    (root / "valid.csv").write_text(text.replace("Path,", "File,", 1))
    with pytest.raises(ace.ACEError, match="missing column.*'Path'"):
        read_chexpert(root / "valid.csv")
    with pytest.raises(ace.ACEError, match="uncertain must be one of"):
        read_chexpert(root, uncertain="maybe")


def test_generic_csv_bad_input(tmp_path):
    write_image(tmp_path / "a.png")
    cases = [("file,x\na.png,1\n", "missing column.*'path'"),
             ("path\na.png\n", "no label columns"),
             ("path,x\na.png,yes\n", r"row 2, column 'x': 'yes' is not 1 or 0"),
             ("path,x\na.png,1\nb.png,0\n", r"1 of 2 images do not exist: .*b\.png"),
             ("path,x\n", "no rows below the header"),
             ("", "empty file"),
             ("path,x,split\na.png,1,validation\n", "split.*train or test")]
    for k, (text, message) in enumerate(cases):
        (tmp_path / f"{k}.csv").write_text(text)
        with pytest.raises(ace.ACEError, match=message):
            read_labels(tmp_path / f"{k}.csv", "csv")
    with pytest.raises(ace.ACEError, match="no labels file"):
        read_labels(tmp_path / "absent.csv")
    with pytest.raises(ace.ACEError, match="unknown labels format"):
        read_labels(tmp_path / "0.csv", "nih")


# ---------------------------------------------------------------- ace evaluate --labels

def test_evaluate_labels_finds_an_easy_label_and_not_a_shuffled_one(tmp_path):
    """120 images, half with a bright square: a linear probe on a random-init encoder's features
    finds the square (AUC near 1) and nothing in four labels drawn independently of the images
    (mean AUC near 0.5: a probe scored on its own training images would be near 1)."""
    rng = np.random.default_rng(0)
    n = 120
    square = rng.permutation(np.arange(n) % 2)
    shuffled = rng.integers(0, 2, (n, 4))
    lines = ["path,square," + ",".join(f"shuffled{k}" for k in range(4))]
    for i in range(n):
        write_image(tmp_path / "images" / f"{i:03d}.png", square=bool(square[i]), seed=i)
        blank = "" if i % 17 == 0 else str(square[i])          # a few unknown labels
        lines.append(f"images/{i:03d}.png,{blank}," + ",".join(map(str, shuffled[i])))
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    ckpt = tmp_path / "enc.safetensors"
    ace.Encoder("vit_nano", img_size=64, seed=0).save(ckpt)
    out = tmp_path / "probe"
    result = run_ace("evaluate", "--checkpoint", ckpt, "--labels", tmp_path / "labels.csv", "--out", out,
                     "--threads", 1)
    assert "probed 5 labels of 120 images" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    labels = metrics["labels"]
    assert labels["square"]["auc"] > 0.9, labels["square"]
    assert labels["square"]["train_positives"] + labels["square"]["test_positives"] == square.sum() - sum(
        square[i] for i in range(0, n, 17))
    chance = [labels[f"shuffled{k}"]["auc"] for k in range(4)]
    assert abs(np.mean(chance) - 0.5) < 0.15, chance
    assert metrics["split"].startswith("seeded") and metrics["n_test"] == 36
    report = (out / "report.md").read_text()
    assert "| square |" in report and "Mean AUC" in report
    saved = np.load(out / "embeddings.npz")
    assert saved["features"].shape == (n, 96) and saved["labels"].shape == (n, 5)


def test_evaluate_labels_reports_bad_labels_and_conflicting_options(tmp_path):
    (tmp_path / "labels.csv").write_text("path,x\nnone.png,1\n")
    ckpt = tmp_path / "enc.safetensors"
    ace.Encoder("vit_nano", img_size=32).save(ckpt)
    result = run_ace("evaluate", "--checkpoint", ckpt, "--labels", tmp_path / "labels.csv", "--out", tmp_path / "o",
                     check=False)
    assert result.returncode == 1 and "1 of 1 images do not exist" in result.stderr and "none.png" in result.stderr
    result = run_ace("evaluate", "--checkpoint", ckpt, "--labels", tmp_path / "labels.csv", "--data", tmp_path,
                     "--out", tmp_path / "o", check=False)
    assert result.returncode == 1 and "give one" in result.stderr
