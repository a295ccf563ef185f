"""The JSRT layout (ace.data.jsrt) is the real data's, read from its files; the phantom draws
its ground truth in that layout."""
import csv
from collections import defaultdict

from conftest import JSRT, needs_jsrt

from ace.data import datasets, jsrt, phantom


@needs_jsrt
def test_the_layout_is_the_one_of_the_jsrt_files():
    assert sorted(p.name for p in (JSRT / "masks").iterdir() if p.is_dir()) == sorted(jsrt.STRUCTURES)
    indices = defaultdict(set)
    with (JSRT / "landmarks_dev.csv").open() as f:
        for row in csv.DictReader(f):
            indices[row["structure"]].add(int(row["index"]))
    assert {s: len(i) for s, i in indices.items()} == jsrt.LANDMARK_COUNTS
    assert all(i == set(range(jsrt.LANDMARK_COUNTS[s])) for s, i in indices.items())


def test_real_data_code_and_the_phantom_share_the_layout():
    assert datasets.STRUCTURES is jsrt.STRUCTURES and phantom.STRUCTURES is jsrt.STRUCTURES
    assert phantom.LANDMARK_COUNTS is jsrt.LANDMARK_COUNTS and datasets.LANDMARK_ORDER is jsrt.LANDMARK_ORDER
    assert jsrt.LANDMARK_OFFSETS == {"right_lung": 0, "left_lung": 44, "heart": 94} and jsrt.LANDMARKS == 120
    assert datasets.landmark_ids("heart").tolist() == list(range(94, 120))
