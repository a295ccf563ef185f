"""Fuzzing the public Python API: every call succeeds or raises ace.ACEError (or a
MemoryError that says what); no call may kill the interpreter, hang, leave non-finite
weights behind, or change a model when it is refused."""
from . import strategies as S
from .conftest import EXAMPLES, check_all, fuzz
from .worker import ARRAY


def test_encoder(harness):
    fuzz(harness, S.encoder_cases, EXAMPLES, "api")


def test_pretrain_config_to_trainer(harness):
    fuzz(harness, S.config_cases, EXAMPLES, "api")


def test_trainer_calls(harness):
    fuzz(harness, S.trainer_cases, EXAMPLES, "api")


def test_grid_crops(harness):
    fuzz(harness, S.grid_crops_cases, EXAMPLES, "api")


def test_set_num_threads(harness):
    fuzz(harness, S.threads_cases, max(5, EXAMPLES // 4), "api")


def test_probes(harness):
    fuzz(harness, S.probe_cases, EXAMPLES, "api")


def test_image_files(harness):
    fuzz(harness, S.image_cases, EXAMPLES, "api")


def test_encoder_lifetimes(harness):
    # A trainer's student/teacher (or a copy) used after its owner was dropped.
    fuzz(harness, S.lifetime_cases, max(5, EXAMPLES // 4), "api")


def test_concurrent_calls(harness):
    fuzz(harness, S.concurrent_cases, max(5, EXAMPLES // 4), "api")


def test_phantom(harness):
    fuzz(harness, S.phantom_cases, max(5, EXAMPLES // 4), "api")


def test_private_native_layer(harness):
    # ace._native may raise any Python exception, but must not crash on bad buffers.
    fuzz(harness, S.native_cases, max(5, EXAMPLES // 2), "native")


def _a(shape, dtype="float32", fill="normal", layout="c"):
    return {ARRAY: {"dtype": dtype, "shape": shape, "fill": fill, "layout": layout}}


# The API reports of issue 8, as cases: each must now be refused cleanly.
ISSUE_CASES = [
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"img_size": 32},
     "calls": [("forward_features", (_a([1, 1, 4096, 4096], layout="broadcast"),))]},
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"img_size": 1_600_000}, "calls": []},
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"img_size": 2**31}, "calls": []},
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"in_chans": 1.5}, "calls": []},
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"img_size": 32, "std": float("inf")}, "calls": []},
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"img_size": 32},
     "calls": [("forward_train", (_a([1, 1, 32, 32]),)), ("backward", (_a([1, 5, 96], dtype="str"),))]},
    {"op": "encoder", "preset": "vit_nano", "kwargs": {"img_size": 32},
     "calls": [("embed", (_a([1, 1, 100_000_000], dtype="uint8", fill=3.0, layout="broadcast"),))]},
    {"op": "trainer", "build": "ctor", "fields": {},
     "calls": [("step", (_a([1, 100_000_000, 1], dtype="uint8", fill=3.0, layout="broadcast"),))]},
    {"op": "trainer", "build": "ctor", "fields": {"head_prototypes": 10**12}, "calls": []},
    {"op": "trainer", "build": "ctor", "fields": {"head_hidden": 2**62}, "calls": [("step", (_a([2, 64, 64], fill="unit"),))]},
    {"op": "trainer", "build": "ctor", "fields": {"epochs": 2**40, "steps_per_epoch": 2**40}, "calls": []},
    {"op": "trainer", "build": "ctor", "fields": {"grid": {"sigma": 1e-30}},
     "calls": [("step", (_a([2, 64, 64], fill="unit"),)), ("save_load", ())]},
    {"op": "trainer", "build": "ctor", "fields": {"encoder": None}, "calls": []},
    {"op": "trainer", "build": "ctor", "fields": {"lr": float("nan")}, "calls": []},
    {"op": "trainer", "build": "ctor", "fields": {},
     "calls": [("step", (_a([2, 64, 64], fill=255.0),))]},
    {"op": "grid_crops", "config": "x", "kwargs": {}},
    {"op": "probe", "name": "landmark_embeddings",
     "args": (_a([3, 32, 32], dtype="uint8", fill="bytes"), _a([3, 4, 2], dtype="float64", fill=-100.0)), "kwargs": {}},
    {"op": "probe", "name": "landmark_embeddings",
     "args": (_a([3, 32, 32], dtype="uint8", fill=0.0), _a([3, 4, 2], dtype="float64", fill=5.0)), "kwargs": {}},
    {"op": "probe", "name": "landmark_correspondence",
     "args": (_a([3, 32, 32], dtype="uint8", fill="bytes"), _a([3, 4, 2], dtype="float64", fill="nan")), "kwargs": {}},
    {"op": "probe", "name": "symmetry",
     "args": (_a([2, 32, 32], dtype="uint8", fill="bytes"), _a([2, 3, 2], dtype="float64", fill=("uniform", 0, 30)),
              [[-1, 0]]), "kwargs": {}},
    {"op": "native", "fn": "grid_crops", "n": 1, "count": 2, "deltas": {}},
    {"op": "native", "fn": "grid_crops", "n": 1, "count": 1, "deltas": {"t_decomp": -1000}},
    {"op": "threads", "values": [0, 2**31, 1025, 1.5], "forward": True},
]


def test_issue_8_api_reports(harness):
    check_all(harness, ISSUE_CASES, "api")
