"""The harness itself: a case that kills or hangs the worker must be reported as a failure
(with the case and the signal), and the judging functions must tell acceptable refusals
from unclear errors."""
import signal

import pytest
from hypothesis import strategies as st

from . import worker
from .conftest import fuzz
from .harness import Harness


@pytest.fixture(scope="module")
def own():
    # A harness of its own (strict, short timeout), so these deliberate failures never mix
    # with the findings of the real fuzz tests.
    h = Harness(strict=True, timeout=5)
    yield h
    h.close()


def sanity(action, **extra):
    return {"op": "sanity", "action": action, **extra}


@pytest.mark.parametrize("action, sig", [("abort", signal.SIGABRT), ("segv", signal.SIGSEGV)])
def test_a_case_that_kills_the_worker_is_a_failure(own, action, sig):
    verdict = own.run(sanity(action))
    assert verdict["verdict"] == "fail" and verdict["kind"] == "crash"
    assert verdict["code"] == -sig and sig.name in verdict["detail"]
    with pytest.raises(AssertionError, match=f"(?s)crash .*{sig.name}.*\ncase: .*'action': '{action}'"):
        own.check(sanity(action))
    # and a fresh worker takes the next case
    assert own.run(sanity("ok"))["verdict"] == "pass"


def test_a_worker_that_exits_is_a_failure(own):
    verdict = own.run(sanity("exit"))
    assert verdict["kind"] == "crash" and verdict["code"] == 3


def test_a_case_that_hangs_is_a_failure(own):
    verdict = own.run(sanity("hang"), timeout=3)
    assert verdict["verdict"] == "fail" and verdict["kind"] == "hang"
    assert own.run(sanity("ok"))["verdict"] == "pass"


@pytest.mark.parametrize("action, outcome", [("raise", "fail"), ("raise_ace", "pass"), ("memory_empty", "fail"),
                                             ("memory_message", "pass"), ("nonfinite_model", "fail"),
                                             ("ok", "pass")])
def test_exceptions_are_judged(own, action, outcome):
    assert own.run(sanity(action))["verdict"] == outcome


def test_the_property_function_fails_a_hypothesis_run_that_crashes(own):
    with pytest.raises(AssertionError, match="SIGABRT"):
        fuzz(own, st.sampled_from([sanity("ok"), sanity("abort")]), 10, "sanity")


def test_valid_checkpoints_pass_through_the_mutation_code_unchanged(own):
    for base in ("encoder", "trainer"):
        assert own.run({"op": "load", "base": base, "roundtrip": True})["kind"] == "ok"


@pytest.mark.parametrize("rc, stderr, verdict", [
    (0, "", "pass"),
    (1, "ace pretrain: error: --steps must be positive\n", "pass"),
    (2, "usage: ace pretrain [-h]\nace pretrain: error: argument --steps: must be a positive integer\n", "pass"),
    (-11, "Fatal Python error: Segmentation fault\n", "fail"),
    (-6, "Fatal error: failed to allocate 1 bytes\n", "fail"),
    (1, "Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'x'\n", "fail"),
    (1, "something went wrong\n", "fail"),
    (120, "ace pretrain: error: x\n", "fail"),
    (1, "ace pretrain: error: no readable image in d:\n  d/a.png: cannot decode\n", "note"),
])
def test_cli_outcomes_are_judged(rc, stderr, verdict):
    assert worker.check_cli(rc, stderr, "pretrain")["verdict"] == verdict


def test_cli_temporary_files_left_behind_are_a_failure(tmp_path):
    (tmp_path / ".out.npz.tmp-123-ab.npz").write_bytes(b"x")
    assert worker.check_cli(1, "ace embed: error: disk full\n", "embed", str(tmp_path))["verdict"] == "fail"
