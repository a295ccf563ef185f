"""Fuzzing the public API, the command line and checkpoint bytes with hypothesis.

Every case runs in a worker process (fuzz_worker.py), so a case that kills the interpreter
(a trap in the core, a segfault in a library) is seen and reported with the case that did
it; the worker is then restarted. The property: a call succeeds or raises ace.ACEError (or a
MemoryError that says what); the CLI exits 0, 1 or 2 without a traceback; a checkpoint that
loads after mutation holds only finite values.

ACE_FUZZ_EXAMPLES sets the cases per test (default 40: about a minute and a half in all).
A long local run: ACE_FUZZ_EXAMPLES=2500 python -m pytest -q python/tests/test_fuzz.py -s
(4 API tests x 2500 = 10,000 API cases, plus 2,500 checkpoint variants and 2,500 CLI runs;
each test prints its counts).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("ACE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
WORKER = Path(__file__).with_name("fuzz_worker.py")


class Worker:
    """A worker process that runs cases one at a time and is restarted after a crash."""

    def __init__(self):
        self.proc = None
        self.cases = 0
        self.findings = []

    def _start(self):
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def run(self, case):
        """The worker's answer, or {"outcome": "crash"} if the case killed it."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.cases += 1
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            stderr = self.proc.stderr.read()[-2000:]
            self.proc = None
            return {"outcome": "crash", "detail": f"worker died (exit {code}): {stderr}"}
        return json.loads(line)

    def check(self, case):
        answer = self.run(case)
        if answer["outcome"] in ("crash", "bad"):
            self.findings.append((case, answer))
        assert answer["outcome"] in ("ok", "error"), f"{answer['outcome']}: {answer['detail']}\ncase: {case}"

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    distinct = sorted({(case["op"], answer["outcome"], answer["detail"][:80]) for case, answer in w.findings})
    print(f"\nfuzz: {w.cases} cases, {len(w.findings)} failing (counting hypothesis' shrinking), "
          f"{len(distinct)} distinct:")
    for finding in distinct:
        print("  ", *finding)
    w.close()


# ------------------------------------------------------------------ strategies

ints = st.one_of(st.integers(-3, 600), st.sampled_from([2**31, 2**62, 2**63 - 1, -2**63, 10**12]))
floats = st.one_of(st.floats(-10, 10), st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e-30, 1e38]))
values = st.one_of(ints, floats, st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
dtypes = st.sampled_from(["float32", "float64", "uint8", "uint16", "int32", "bool", "complex64", "object", "str"])
fills = st.one_of(st.sampled_from(["nan", "inf", "random", 0, 1, -3, 300, 1e30]))


def arrays(max_dims=4, max_side=80):
    return st.fixed_dictionaries({
        "shape": st.lists(st.integers(0, max_side), min_size=0, max_size=max_dims),
        "dtype": dtypes, "fill": fills})


image_batches = st.fixed_dictionaries({
    "shape": st.one_of(st.lists(st.integers(0, 90), min_size=3, max_size=3),
                       st.sampled_from([[1, 100_000_000, 1], [1, 1, 70_000], [0, 10, 10], [2, 64, 64, 3]])),
    "dtype": dtypes, "fill": fills})


# ------------------------------------------------------------------ the harness itself

def test_the_harness_reports_a_crashing_case(worker):
    answer = worker.run({"op": "abort"})
    assert answer["outcome"] == "crash"
    worker.check({"op": "threads", "n": 2})   # and a fresh worker takes the next case


# ------------------------------------------------------------------ API

@FUZZ
@given(preset=st.sampled_from(["vit_nano", "vit_nano", "vit_tiny", "vit_huge", ""]),
       kwargs=st.dictionaries(st.sampled_from(["in_chans", "img_size", "drop_path", "seed", "mean", "std",
                                               "precision"]), values, max_size=3),
       calls=st.lists(st.tuples(st.sampled_from(["forward", "train", "backward", "embed", "attention",
                                                      "maps"]), arrays())
                      | st.tuples(st.just("adamw"), floats)
                      | st.tuples(st.just("precision"), st.sampled_from(["bf16", "fp32", "auto", "fp16"])),
                      max_size=3))
def test_encoder_api(worker, preset, kwargs, calls):
    kwargs.setdefault("img_size", 32)
    worker.check({"op": "encoder", "preset": preset, "kwargs": kwargs, "calls": calls})


CONFIG_FIELDS = ["encoder", "in_chans", "drop_path", "local_hidden", "head_hidden", "head_prototypes", "objective",
                 "losses", "lr", "epochs", "steps_per_epoch", "batch_size", "student_temp", "teacher_temp",
                 "logit_scale", "clip_grad", "clip_mode", "mean", "std", "precision", "local_head",
                 "pre_crop_scale_min", "weight_decay_tokens", "freeze_last_layer_epochs"]


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(CONFIG_FIELDS), values, max_size=3)
       | st.fixed_dictionaries({"grid": st.dictionaries(st.sampled_from(
           ["image_size", "grid_cells", "fine_cells", "input_size", "min_overlap", "window", "sigma",
            "decomp_window"]), values, max_size=3)})
       | st.fixed_dictionaries({"augment": st.dictionaries(st.sampled_from(
           ["blur_p", "gamma_min", "clahe_p", "clahe_tiles", "brightness"]), values, max_size=2)}),
       crops=st.booleans())
def test_config_through_trainer_and_grid_crops(worker, fields, crops):
    worker.check({"op": "config", "fields": fields, "crops": crops,
                  "images": {"shape": [2, 70, 60], "dtype": "float32", "fill": "random"}})


@FUZZ
@given(images=image_batches, threads=st.integers(-2, 2000))
def test_trainer_step_inputs_and_threads(worker, images, threads):
    worker.check({"op": "step", "images": images})
    worker.check({"op": "threads", "n": threads})


@FUZZ
@given(name=st.sampled_from(["compositionality", "decompositionality", "retrieval", "landmark_correspondence",
                             "landmark_embeddings", "symmetry"]),
       images=arrays(max_dims=3, max_side=70),
       landmarks=arrays(max_dims=3, max_side=6), extra=st.lists(values, max_size=1))
def test_probes_with_degenerate_input(worker, name, images, landmarks, extra):
    args = [images]
    if name in ("landmark_correspondence", "landmark_embeddings", "symmetry"):
        args.append(landmarks)
    if name == "symmetry":
        args.append(extra[0] if extra else [[0, 1]])
    worker.check({"op": "probe", "name": name, "args": args})


# ------------------------------------------------------------------ checkpoint bytes

mutations = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**40), st.integers(0, 7)),
    st.tuples(st.just("byte"), st.integers(0, 2**40), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 2**40)),
    st.tuples(st.just("offsets"), st.integers(0, 500), st.lists(ints, min_size=0, max_size=3)
              | st.just([2**63 - 4, 2**63 - 4 + 384 - 2**64])),
    st.tuples(st.just("shape"), st.integers(0, 500), st.lists(ints, max_size=4)),
    st.tuples(st.just("dtype"), st.integers(0, 500), st.sampled_from(["F16", "BF16", "I64", "F32", ""])),
    st.tuples(st.just("meta"), st.sampled_from(["step", "adam_t", "rng", "format", "data_crc32", "config"]),
              st.sampled_from(["-5", str(2**63 - 1), "0,0,0,0", "1,2", "x", "", "ace-encoder", "ace-trainer"])),
    st.tuples(st.just("config"), st.sampled_from(["embed_dim", "depth", "num_heads", "img_size", "head_prototypes",
                                                 "batch_size", "epochs", "grid"]), values),
    st.tuples(st.just("header_len"), st.integers(0, 2**64 - 1)),
), min_size=1, max_size=3)


@FUZZ
@given(kind=st.sampled_from(["encoder", "trainer"]), as_=st.sampled_from(["encoder", "trainer"]), ops=mutations)
def test_mutated_checkpoints(worker, kind, as_, ops):
    worker.check({"op": "load", "kind": kind, "as": as_, "ops": ops})


# ------------------------------------------------------------------ command line

cli_options = st.lists(st.one_of(
    st.tuples(st.sampled_from(["--steps", "--epochs", "--batch-size", "--threads", "--checkpoint-every", "--seed",
                               "--image-size"]), st.sampled_from(["-5", "0", "1", "2", "x", "1e3"])),
    st.tuples(st.sampled_from(["--seed", "--image-size", "--checkpoint-every", "--threads"]),
              st.sampled_from(["99999999999", str(2**64)])),
    st.tuples(st.sampled_from(["--lr"]), st.sampled_from(["nan", "-1", "inf", "0", "1e-3", "abc"])),
    st.tuples(st.sampled_from(["--preset"]), st.sampled_from(["vit_nano", "vit_huge", ""])),
    st.tuples(st.sampled_from(["--data", "--resume", "--config"]), st.sampled_from(["missing", ".", "/dev/null"])),
), max_size=3)


@settings(max_examples=max(EXAMPLES // 4, 5), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(["pretrain", "embed", "evaluate"]), options=cli_options)
def test_command_line(worker, command, options):
    args = [command]
    if command == "pretrain":
        # Short runs unless an option fails: the phantom, vit_nano, 2 steps (options given
        # later win; none of the fuzzed values asks for a long run).
        args += ["--preset", "vit_nano", "--batch-size", "2", "--steps", "2", "--out", "out"]
    args += [x for pair in options for x in pair]
    worker.check({"op": "cli", "args": args})
