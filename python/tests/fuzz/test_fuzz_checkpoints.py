"""Fuzzing checkpoint bytes: a valid encoder checkpoint and a valid training-run checkpoint
(after one step), mutated (bit flips and overwrites in header and data, truncation, the
header length, the JSON header: offsets wrapping past Int64, aliased or overlapping
tensors, absurd shapes, wrong dtypes; metadata: absurd configs, step, adam_t, RNG state)
and loaded with ace.Encoder.load / ace.Trainer.load. Loading succeeds or raises
ace.ACEError; what loads holds only finite values and works."""
from . import strategies as S
from .conftest import CHECKPOINTS, check_all, fuzz
from .worker import repeat

NAN = float("nan")


def test_mutated_encoder_checkpoints(harness):
    fuzz(harness, S.checkpoint_cases("encoder"), CHECKPOINTS, "checkpoint")


def test_mutated_trainer_checkpoints(harness):
    fuzz(harness, S.checkpoint_cases("trainer"), CHECKPOINTS, "checkpoint")


def _load(base, **ops):
    return {"op": "load", "base": base, "roundtrip": base == "trainer", **ops}


# The checkpoint reports of issue 8, as cases.
ISSUE_CASES = [
    _load("encoder", json_ops=[("offsets", 0, [2**63 - 4, 2**63 - 4 + 384 - 2**64])]),
    _load("encoder", json_ops=[("wrap", 3)]),
    _load("trainer", json_ops=[("wrap", 7)]),
    _load("encoder", json_ops=[("config", "config", "embed_dim", 96_000_000)]),
    _load("encoder", json_ops=[("config", "config", "depth", 10**7)]),
    _load("trainer", json_ops=[("config", "config", "head_prototypes", 10**12)]),
    _load("trainer", json_ops=[("config", "encoder_config", "embed_dim", 96_000_000)]),
    _load("trainer", json_ops=[("meta", "step", "-5")]),
    _load("trainer", json_ops=[("meta", "step", str(2**63 - 1))]),
    _load("trainer", json_ops=[("meta", "adam_t", "-1")]),
    _load("trainer", json_ops=[("meta", "rng", "0,0,0,0")]),
    _load("encoder", json_ops=[("alias", 1, 0)]),
    _load("trainer", json_ops=[("alias", 100, 0)]),
    _load("encoder", json_ops=[("shift", 5, 4)]),
    _load("encoder", data_ops=[("flip", 1000, 3)]),
    _load("encoder", data_ops=[("set_float", 0, 0, NAN)], fix_crc=True),
    _load("trainer", data_ops=[("fill_tensor", 0, -1.0)], fix_crc=True),
    _load("encoder", byte_ops=[("header_len", 2**63)]),
    _load("encoder", byte_ops=[("truncate", "data", 10)]),
    _load("encoder", json_ops=[("raw", repeat("[", 100_000))]),
]


def test_issue_8_checkpoint_reports(harness):
    check_all(harness, ISSUE_CASES, "checkpoint")
