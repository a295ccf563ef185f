"""Fuzzing the command line: `python -m ace pretrain / embed / evaluate` with fuzzed
option values and damaged inputs (checkpoints, image folders, config files, JSRT
folders). Each run exits 0, or non-zero with an `ace CMD: error: ...` line and no Python
traceback; it never dies of a signal, hangs, or leaves a temporary file. Training runs are
bounded (vit_nano, 2 images, 2 steps, 64 px unless an option fails)."""
from . import strategies as S
from .conftest import CLI, check_all, fuzz


def test_cli_pretrain(harness):
    fuzz(harness, S.pretrain_cases, CLI, "cli")


def test_cli_embed(harness):
    fuzz(harness, S.embed_cases, CLI, "cli")


def test_cli_evaluate(harness):
    fuzz(harness, S.evaluate_cases, CLI, "cli")


def _pretrain(*extra):
    return {"op": "cli", "args": S._pretrain_args(list(zip(extra[::2], extra[1::2])))}


# The command-line reports of issue 8.
ISSUE_CASES = [
    _pretrain("--steps", "-5"),
    _pretrain("--steps", "0"),
    _pretrain("--threads", "0"),
    _pretrain("--lr", "nan"),
    _pretrain("--config", "@CONFIG:[1, 2]"),
]


def test_issue_8_cli_reports(harness):
    check_all(harness, ISSUE_CASES, "cli")
