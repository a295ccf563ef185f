#!/usr/bin/env python
"""The long local fuzz run of issue 8: at least 10,000 API cases and 2,000 checkpoint
variants (plus the private layer and the command line), every failing case collected
rather than stopping at the first, then a summary: cases run per category, crashes and
other failures found (distinct kinds, each with its smallest case), and notes.

    nice -n 19 python python/tests/fuzz/run_long.py                 # about 30-60 minutes
    nice -n 19 python python/tests/fuzz/run_long.py --seed 1234     # another sequence
    python python/tests/fuzz/run_long.py --api 100 --checkpoints 100 --cli 5   # a quick look

The JSON report (--report, default fuzz-long-report.json in the current folder) lists
every distinct failure with its case; a pickle next to it holds every failing case for
`python python/tests/fuzz/worker.py --replay REPORT.pickle [INDEX]`.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Per-test example counts: six API tests take --api examples each, four (threads,
# lifetimes, concurrency, phantom) a quarter of that and the private-layer test half; two
# checkpoint tests take --checkpoints each; three CLI tests take --cli each.
API_TESTS, QUARTER_TESTS = 6, 4


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", type=int, default=1500, help="examples per API test (default 1500: 10,500 API cases)")
    p.add_argument("--checkpoints", type=int, default=1100,
                   help="examples per checkpoint test (default 1100: 2,200 variants)")
    p.add_argument("--cli", type=int, default=60, help="examples per CLI test (default 60)")
    p.add_argument("--seed", type=int, help="hypothesis seed (default: a random one, printed)")
    p.add_argument("--report", default="fuzz-long-report.json", help="JSON report path")
    p.add_argument("--slow-cli", action="store_true", help="also full `ace evaluate` runs (30-60 s each)")
    p.add_argument("-k", help="pytest -k expression (a subset of the tests)")
    args = p.parse_args(argv)

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    report = Path(args.report).resolve()
    env = dict(os.environ, ACE_FUZZ_COLLECT="1", ACE_FUZZ_EXAMPLES=str(args.api),
               ACE_FUZZ_CHECKPOINTS=str(args.checkpoints), ACE_FUZZ_CLI=str(args.cli),
               ACE_FUZZ_SEED=str(seed), ACE_FUZZ_REPORT=str(report))
    if args.slow_cli:
        env["ACE_FUZZ_SLOW_CLI"] = "1"
    planned_api = API_TESTS * args.api + QUARTER_TESTS * (args.api // 4)
    print(f"fuzz long run: seed {seed}; about {planned_api} API cases, {args.api // 2} private-layer cases, "
          f"{2 * args.checkpoints} checkpoint variants, {3 * args.cli} CLI runs", flush=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", str(HERE)]
    if args.k:
        cmd += ["-k", args.k]
    t0 = time.time()
    result = subprocess.run(cmd, env=env, cwd=HERE.parents[2])
    minutes = (time.time() - t0) / 60
    if not report.exists():
        print(f"no report was written ({report}); pytest exit {result.returncode}")
        return 2
    data = json.loads(report.read_text())
    counts = data["counts"]
    findings = data["findings"]
    crashes = [f for f in findings if f["kind"] in ("crash", "cli-crash")]
    print()
    print(f"==== fuzz long run: {minutes:.1f} min, seed {seed}")
    print("cases run: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" (total {sum(counts.values())})")
    print(f"crashes found: {sum(f['count'] for f in crashes)} cases in {len(crashes)} distinct kinds; "
          f"all failures: {sum(f['count'] for f in findings)} cases in {len(findings)} distinct kinds; "
          f"notes: {len(data['notes'])} kinds; worker starts: {data['worker_starts']}")
    for f in findings:
        confirmed = "" if f.get("confirmed") is None else (" (confirmed on a fresh worker)" if f["confirmed"]
                                                            else " (NOT reproduced on a fresh worker)")
        print(f"- [{f['category']}] x{f['count']} {f['signature']}{confirmed}\n    case: {f['case'][:400]}")
    for f in data["notes"]:
        print(f"- note [{f['category']}] x{f['count']} {f['signature']}\n    case: {f['case'][:300]}")
    print(f"report: {report}")
    return 0 if not findings else 1


if __name__ == "__main__":
    sys.exit(main())
