"""Fuzz suite of issue 8: hypothesis strategies over the public API, the command line and
checkpoint bytes, every case run in a worker process so a crash is seen as a failure.

- harness.py: the persistent worker process, crash/hang detection, counts and findings;
- worker.py: runs one case at a time and judges it (the property);
- strategies.py: hypothesis strategies producing the cases;
- test_fuzz_*.py: the tests; run_long.py: the long local run.

Short (CI) run, a few minutes at most:  python -m pytest -q python/tests/fuzz
Long local run (>= 10,000 API cases, >= 2,000 checkpoint variants):
    nice -n 19 python python/tests/fuzz/run_long.py

Environment: ACE_FUZZ_EXAMPLES (cases per API test, default 40), ACE_FUZZ_CHECKPOINTS (per
checkpoint test, default 60), ACE_FUZZ_CLI (per CLI test, default 4), ACE_FUZZ_COLLECT=1
(record every failing case and fail at the end of each test instead of at the first one),
ACE_FUZZ_SEED (a random seed instead of the fixed, derandomized CI sequence),
ACE_FUZZ_TIMEOUT (seconds per case, default 60), ACE_FUZZ_MEMORY_GB (the worker's address
space cap, default 8), ACE_FUZZ_REPORT (write a JSON report and a pickle of failing cases).
"""
