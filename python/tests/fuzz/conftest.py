"""Shared fixtures of the fuzz suite: one worker harness for the session, the hypothesis
settings, and the summary printed at the end (cases run, crashes and failures found)."""
import json
import os
import pickle

import pytest
from hypothesis import HealthCheck, given, seed, settings

from .harness import Harness, describe

EXAMPLES = int(os.environ.get("ACE_FUZZ_EXAMPLES", "40"))
CHECKPOINTS = int(os.environ.get("ACE_FUZZ_CHECKPOINTS", "60"))
CLI = int(os.environ.get("ACE_FUZZ_CLI", "4"))
SEED = os.environ.get("ACE_FUZZ_SEED")

_harnesses = []


@pytest.fixture(scope="session")
def harness():
    h = Harness()
    _harnesses.append(h)
    yield h
    h.close()
    write_report(h)


def write_report(h):
    path = os.environ.get("ACE_FUZZ_REPORT")
    if not path:
        return
    report = {
        "counts": dict(h.counts),
        "verdicts": {" / ".join(k): v for k, v in sorted(h.verdicts.items())},
        "seconds": {k: round(v, 1) for k, v in h.seconds.items()},
        "worker_starts": h.starts,
        "worker_recycled_for_memory": h.recycled,
        "largest_worker_mb": h.max_rss_mb,
        "slowest_cases": h.slowest,
        "findings": [{"category": f["category"], "signature": sig, "count": count, "kind": f["kind"],
                      "confirmed": f.get("confirmed"), "detail": f["detail"][:3000], "case": repr(f["case"])[:5000]}
                     for sig, count, f in h.distinct()],
        "notes": [{"category": f["category"], "signature": sig, "count": count, "detail": f["detail"][:1000],
                   "case": repr(f["case"])[:3000]} for sig, count, f in h.distinct(h.notes)],
    }
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=repr)
    with open(os.path.splitext(path)[0] + ".pickle", "wb") as f:
        pickle.dump([{"case": f["case"], "signature": f["signature"], "kind": f["kind"]} for f in h.findings]
                    + [{"case": f["case"], "signature": f["signature"], "kind": "note"} for f in h.notes], f)


def pytest_terminal_summary(terminalreporter):
    for h in _harnesses:
        terminalreporter.write_line(h.summary())


def fuzz(harness, strategy, max_examples, category):
    """Check the property on `max_examples` cases drawn from `strategy`. Strict mode fails
    at the first failing case (shrunk by hypothesis); collect mode runs them all and then
    fails listing every distinct failure."""
    before = len(harness.findings)

    @settings(max_examples=max_examples, deadline=None, derandomize=SEED is None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def prop(case):
        harness.check(case, category)

    if SEED is not None:
        prop = seed(int(SEED))(prop)
    prop()
    new = harness.findings[before:]
    assert not new, f"{len(new)} failing cases:\n" + "\n\n".join(
        f"x{count} {describe(f)}" for _, count, f in harness.distinct(new))


def check_all(harness, cases, category):
    """The property over an explicit list of cases (regressions of the issue's reports)."""
    before = len(harness.findings)
    for case in cases:
        harness.check(case, category)
    new = harness.findings[before:]
    assert not new, "\n\n".join(describe(f) for f in new)
