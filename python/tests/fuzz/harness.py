"""The fuzz harness: a persistent worker process that runs cases one at a time.

`Harness.run(case)` sends a case to the worker (worker.py) and returns its verdict. If the
worker dies while running the case (a signal, an abort, an exit) or exceeds the case's
time limit, that case is the failure: the verdict says "crash" or "hang" with the signal or
exit code and the tail of the worker's stderr (faulthandler's stack, the core's fatal error
message), and a fresh worker takes the next case. Worker start-up (importing ace, writing
the base checkpoints) happens once per worker, not per case.

`Harness.check(case)` records the verdict and its counts; in strict mode (the default) it
raises AssertionError for a failing case, so hypothesis shrinks it to a minimal example; in
collect mode (ACE_FUZZ_COLLECT=1, used by run_long.py) it records the failure and goes on,
and the test asserts at its end that none was found.
"""
import base64
import contextlib
import os
import pickle
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")
DEFAULT_TIMEOUT = float(os.environ.get("ACE_FUZZ_TIMEOUT", "60"))
CLI_CASE_TIMEOUT = float(os.environ.get("ACE_FUZZ_CLI_TIMEOUT", "150")) + 30
START_TIMEOUT = 180.0
# A worker whose resident memory grew past this (a big case leaves glibc's heap large) is
# replaced before the next case, so one case's memory cannot make a later one fail.
RECYCLE_MB = int(os.environ.get("ACE_FUZZ_RECYCLE_MB", "3000"))


class WorkerStartError(RuntimeError):
    pass


def _signal_name(code):
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _crash_summary(log_tail):
    """The most telling line of a dead worker's stderr: the core's fatal error, or the
    innermost Python frame faulthandler printed."""
    marker = log_tail.rfind("--- case ")
    if marker >= 0:
        log_tail = log_tail[marker:]
    lines = [line.strip() for line in log_tail.splitlines()[1:] if line.strip()]
    for line in lines:
        if re.search(r"Fatal error|fatal error|failed to allocate|Assertion|Illegal|Segmentation|terminate",
                     line):
            return line[:200]
    frames = [line for line in lines if line.startswith("File ")]
    # faulthandler prints the innermost frame first, under "(most recent call first)".
    return frames[0][:200] if frames else (lines[-1][:200] if lines else "")


class Harness:
    def __init__(self, strict=None, timeout=DEFAULT_TIMEOUT):
        self.strict = os.environ.get("ACE_FUZZ_COLLECT", "0") != "1" if strict is None else strict
        self.timeout = timeout
        self.work = tempfile.mkdtemp(prefix="ace-fuzz-")
        self.proc = None
        self.to_worker = self.from_worker = None
        self.log_path = None
        self.starts = 0
        self.counts = Counter()          # cases per category
        self.verdicts = Counter()        # (category, verdict kind)
        self.findings = []               # failing cases (fail, crash, hang)
        self.notes = []                  # things worth a look the property allows
        self.seconds = Counter()
        self.max_rss_mb = 0
        self.slowest = []                # (seconds, worker MB, case) of the slowest cases
        self.recycled = 0

    # ------------------------------------------------------------------ worker lifecycle
    def _start(self):
        """Start a worker and wait until it has imported ace. While the native library is
        being rebuilt the import can fail for a while: retry for up to START_TIMEOUT s."""
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while True:
            try:
                self._start_once()
                return
            except WorkerStartError as e:
                last = str(e)
                if time.monotonic() > deadline:
                    raise WorkerStartError(f"the fuzz worker did not start within {START_TIMEOUT:.0f} s: {last}")
                time.sleep(10)

    def _start_once(self):
        self.starts += 1
        r_case, w_case = os.pipe()
        r_verdict, w_verdict = os.pipe()
        self.log_path = os.path.join(self.work, f"worker-{self.starts}.log")
        env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), str(r_case), str(w_verdict), self.work],
                pass_fds=(r_case, w_verdict), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True, cwd=self.work)
        os.close(r_case)
        os.close(w_verdict)
        self.to_worker, self.from_worker = w_case, r_verdict
        ready = self._receive(START_TIMEOUT)
        if not isinstance(ready, dict) or "ready" not in ready:
            code = self._kill()
            raise WorkerStartError(f"worker failed to start ({_signal_name(code)}): {self._log_tail()[-1500:]}")

    def _kill(self):
        """Kill the worker and anything it started (it leads its own session)."""
        code = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            try:
                code = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
        self._close_pipes()
        self.proc = None
        return code

    def _close_pipes(self):
        for fd in (self.to_worker, self.from_worker):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.to_worker = self.from_worker = None

    def _log_tail(self, n=6000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _receive(self, timeout):
        """One frame from the worker, None if it closed the pipe, "timeout" if none came."""
        deadline = time.monotonic() + timeout
        buf = b""
        need = 8
        header_done = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([self.from_worker], [], [], left)
            if not ready:
                return "timeout"
            chunk = os.read(self.from_worker, max(1, min(1 << 20, need - len(buf))))
            if not chunk:
                return None
            buf += chunk
            if len(buf) == need:
                if not header_done:
                    need = 8 + struct.unpack("<Q", buf)[0]
                    header_done = True
                    if need == 8:
                        return pickle.loads(b"")
                else:
                    return pickle.loads(buf[8:])

    def close(self):
        if self.proc is not None:
            self._close_pipes()             # EOF: the worker returns from its loop
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill()
            self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ cases
    def run(self, case, timeout=None):
        """The verdict of one case: the worker's, or "crash"/"hang" if the case killed the
        worker or ran past `timeout` seconds."""
        if timeout is None:
            timeout = case.get("timeout", CLI_CASE_TIMEOUT if case.get("op") == "cli" else self.timeout)
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._start()
        body = pickle.dumps(case, protocol=pickle.HIGHEST_PROTOCOL)
        t0 = time.monotonic()
        try:
            os.write(self.to_worker, struct.pack("<Q", len(body)))
            view = memoryview(body)
            while view:
                n = os.write(self.to_worker, view)
                view = view[n:]
        except BrokenPipeError:
            answer = None
        else:
            answer = self._receive(timeout)
        seconds = time.monotonic() - t0
        if isinstance(answer, dict):
            answer.setdefault("seconds", seconds)
            self.max_rss_mb = max(self.max_rss_mb, answer.get("rss_mb", 0))
            if answer.get("rss_mb", 0) > RECYCLE_MB:
                self.recycled += 1
                self._kill()
            return answer
        if answer == "timeout":
            tail = self._log_tail()
            self._kill()
            return {"verdict": "fail", "kind": "hang", "seconds": seconds,
                    "detail": f"no verdict within {timeout:.0f} s (worker killed); last output: "
                              f"{_crash_summary(tail)}",
                    "signature": f"hang: {case.get('op')}"}
        # The worker died while running this case.
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = self._kill()
        tail = self._log_tail()
        summary = _crash_summary(tail)
        self._close_pipes()
        self.proc = None
        return {"verdict": "fail", "kind": "crash", "seconds": seconds, "code": code,
                "detail": f"the worker died with {_signal_name(code)}: {summary}\n--- stderr tail ---\n"
                          f"{tail[-2500:]}",
                "signature": f"crash: {case.get('op')} {_signal_name(code)} {re.sub(r'[0-9]+', '#', summary)[:100]}"}

    def check(self, case, category=None):
        """Run a case, count it, record a failure; in strict mode raise AssertionError for it."""
        category = category or case.get("op")
        verdict = self.run(case)
        self.counts[category] += 1
        self.verdicts[(category, verdict["verdict"], verdict["kind"])] += 1
        self.seconds[category] += verdict.get("seconds", 0.0)
        self.slowest.append((verdict.get("seconds", 0.0), verdict.get("rss_mb", 0), repr(case)[:300]))
        self.slowest = sorted(self.slowest, reverse=True)[:10]
        if verdict["verdict"] == "note":
            self.notes.append({"category": category, "case": case, **verdict})
        if verdict["verdict"] != "fail":
            return verdict
        if verdict["kind"] in ("crash", "hang") and not self.strict:
            # Confirm on a fresh worker (a crash while the library is being rebuilt is not the case's).
            again = self.run(case)
            verdict["confirmed"] = again["verdict"] == "fail" and again["kind"] == verdict["kind"]
        finding = {"category": category, "case": case, **verdict}
        self.findings.append(finding)
        if self.strict:
            raise AssertionError(describe(finding))
        return verdict

    # ------------------------------------------------------------------ reports
    def distinct(self, items=None):
        """Findings grouped by signature: [(signature, count, smallest case's finding)]."""
        groups = {}
        for f in self.findings if items is None else items:
            key = (f["category"], f["signature"])
            size = len(repr(f["case"]))
            if key not in groups:
                groups[key] = [0, f, size]
            groups[key][0] += 1
            if size < groups[key][2]:
                groups[key][1], groups[key][2] = f, size
        return [(k[1], v[0], v[1]) for k, v in groups.items()]

    def summary(self):
        total = sum(self.counts.values())
        lines = [f"fuzz: {total} cases ("
                 + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) + f"); "
                 f"{sum(1 for f in self.findings if f['kind'] == 'crash')} crashes, "
                 f"{sum(1 for f in self.findings if f['kind'] == 'hang')} hangs, "
                 f"{len(self.findings)} failing cases in {len(self.distinct())} distinct kinds, "
                 f"{len(self.notes)} notes; {self.starts} worker starts ({self.recycled} for memory, "
                 f"largest worker {self.max_rss_mb} MB)"]
        for sig, count, f in self.distinct():
            lines.append(f"  [{f['category']}] x{count} {sig}")
        return "\n".join(lines)


def describe(finding):
    case = finding["case"]
    text = repr(case)
    if len(text) > 3000:
        text = text[:3000] + " ..."
    b64 = base64.b64encode(pickle.dumps(case)).decode()
    replay = (f"python {WORKER} --case-b64 {b64}" if len(b64) < 4000 else "(case too large for a command line)")
    code = f" ({_signal_name(finding['code'])})" if "code" in finding else ""
    return (f"{finding['kind']}{code}: {finding['detail'][:1500]}\ncase: {text}\nreplay: {replay}")
