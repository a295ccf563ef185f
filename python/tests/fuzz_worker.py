"""Runs fuzz cases for test_fuzz.py in a process of its own, so a crash kills only this worker.

Reads one JSON case per line on stdin and answers one JSON line per case on stdout:
{"outcome": "ok" | "error" | "bad", "detail": ...}. "error" is an acceptable refusal (an
ace.ACEError, or a MemoryError that says what it could not allocate); "bad" is any other
exception, or a loaded checkpoint holding non-finite values. A case that kills the process
gets no answer at all: the harness reports it as a crash.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

import ace
from ace import probes

WORK = tempfile.mkdtemp(prefix="ace-fuzz-")
TINY = dict(encoder="vit_nano", batch_size=2, head_hidden=32, head_bottleneck=16, head_prototypes=64,
            grid=dict(image_size=128, grid_cells=8, fine_cells=2, input_size=32, min_overlap=1))
DTYPES = {"float32": np.float32, "float64": np.float64, "uint8": np.uint8, "uint16": np.uint16,
          "int32": np.int32, "bool": np.bool_, "complex64": np.complex64, "object": object, "str": np.str_}


def array(spec):
    """An array from {"shape", "dtype", "fill"}: fill is a number, "nan", "inf" or "random"."""
    shape, dtype, fill = tuple(spec["shape"]), DTYPES[spec["dtype"]], spec["fill"]
    if dtype is np.str_:
        return np.full(shape, "x")
    if fill == "random":
        values = np.random.default_rng(0).random(shape)
    else:
        values = np.full(shape, float(fill))
    if dtype is object:
        return values.astype(object)
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype)


_cache = {}


def checkpoint(kind):
    """A valid encoder or training checkpoint, written once per worker."""
    if kind not in _cache:
        path = os.path.join(WORK, f"{kind}.safetensors")
        if kind == "encoder":
            ace.Encoder("vit_nano", img_size=32).save(path)
        else:
            t = ace.Trainer(ace.PretrainConfig(**TINY))
            t.step(np.random.default_rng(0).random((2, 140, 140), dtype=np.float32))
            t.save(path)
        with open(path, "rb") as f:
            _cache[kind] = f.read()
    return _cache[kind]


def mutate(raw, ops):
    """Applies mutation ops to checkpoint bytes: bit flips, byte writes, truncation, header
    edits (a tensor's offsets, shape or dtype; a metadata value or config field)."""
    data = bytearray(raw)
    for op in ops:
        kind = op[0]
        if kind == "flip" and data:
            i = op[1] % len(data)
            data[i] ^= 1 << (op[2] % 8)
        elif kind == "byte" and data:
            data[op[1] % len(data)] = op[2] % 256
        elif kind == "truncate":
            del data[op[1] % (len(data) + 1):]
        elif kind in ("offsets", "shape", "dtype", "meta", "config", "header_len") and len(data) >= 8:
            n = struct.unpack("<Q", bytes(data[:8]))[0]
            try:
                header = json.loads(bytes(data[8:8 + n]))
            except (ValueError, UnicodeDecodeError):
                continue
            body = bytes(data[8 + n:])
            names = sorted(k for k in header if k != "__metadata__")
            meta = header.setdefault("__metadata__", {})
            if kind == "offsets" and names:
                header[names[op[1] % len(names)]]["data_offsets"] = op[2]
            elif kind == "shape" and names:
                header[names[op[1] % len(names)]]["shape"] = op[2]
            elif kind == "dtype" and names:
                header[names[op[1] % len(names)]]["dtype"] = op[2]
            elif kind == "meta":
                meta[op[1]] = op[2]
            elif kind == "config":
                key = "config" if "config" in meta else None
                if key:
                    try:
                        cfg = json.loads(meta[key])
                        cfg[op[1]] = op[2]
                        meta[key] = json.dumps(cfg)
                    except ValueError:
                        pass
            text = json.dumps(header).encode()
            length = len(text) if kind != "header_len" else op[1]
            data = bytearray(struct.pack("<Q", length % 2**64) + text + body)
    return bytes(data)


def run(case):
    op = case["op"]
    if op == "abort":                      # the harness's own check: this must show as a crash
        os.abort()
    if op == "encoder":
        enc = ace.Encoder(case["preset"], **case["kwargs"])
        for call in case["calls"]:
            name, arg = call
            if name == "forward":
                enc.forward_features(array(arg))
            elif name == "train":
                enc.forward_train(array(arg))
            elif name == "backward":
                enc.backward(array(arg))
            elif name == "embed":
                enc.embed(array(arg))
            elif name == "attention":
                enc.forward_attention(array(arg))
            elif name == "maps":
                enc.attention(array(arg))
            elif name == "adamw":
                enc.adamw_step(arg)
            elif name == "precision":
                enc.precision = arg
    elif op == "config":
        cfg = ace.PretrainConfig.from_dict({**TINY, **case["fields"]})
        if case.get("crops"):
            ace.grid_crops(cfg, n=1)
        else:
            t = ace.Trainer(cfg)
            t.step(array(case["images"]))
    elif op == "step":
        t = ace.Trainer(ace.PretrainConfig(**TINY))
        t.step(array(case["images"]))
    elif op == "threads":
        ace.set_num_threads(case["n"])
        ace.set_num_threads(2)
    elif op == "probe":
        enc = ace.Encoder("vit_nano", img_size=32)
        fn = getattr(probes, case["name"])
        args = [enc] + [array(a) if isinstance(a, dict) else a for a in case["args"]]
        fn(*args)
    elif op == "load":
        raw = mutate(checkpoint(case["kind"]), case["ops"])
        path = os.path.join(WORK, "mutated.safetensors")
        with open(path, "wb") as f:
            f.write(raw)
        loaded = (ace.Encoder if case["as"] == "encoder" else ace.Trainer).load(path)
        enc = loaded if case["as"] == "encoder" else loaded.student
        if not all(np.isfinite(v).all() for v in enc.state_dict().values()):
            return {"outcome": "bad", "detail": "a loaded checkpoint holds non-finite weights"}
    elif op == "cli":
        r = subprocess.run([sys.executable, "-m", "ace", *case["args"]], capture_output=True, text=True,
                           timeout=120, cwd=WORK)
        if r.returncode < 0:
            return {"outcome": "bad", "detail": f"the CLI died with signal {-r.returncode}"}
        if "Traceback" in r.stderr:
            return {"outcome": "bad", "detail": r.stderr.strip().splitlines()[-1]}
        if r.returncode not in (0, 1, 2):
            return {"outcome": "bad", "detail": f"exit code {r.returncode}"}
    return {"outcome": "ok", "detail": ""}


def main():
    for line in sys.stdin:
        case = json.loads(line)
        try:
            answer = run(case)
        except ace.ACEError as e:
            answer = {"outcome": "error", "detail": str(e)[:300]}
        except MemoryError as e:
            answer = {"outcome": "error" if str(e) else "bad", "detail": f"MemoryError: {e}"[:300]}
        except Exception as e:  # noqa: BLE001 - any other exception is the finding
            answer = {"outcome": "bad", "detail": f"{type(e).__name__}: {e}"[:300]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
