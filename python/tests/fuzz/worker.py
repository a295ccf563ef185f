"""The fuzz worker: runs fuzz cases one at a time in a process of its own.

The harness (harness.py) starts this file as a script and talks to it over two pipes:
it sends a case (a pickled dict of plain values: arrays, files and checkpoints appear as
*specs* that this worker materializes) and reads back one verdict per case. A case that
kills the interpreter (a trap in the Swift core, a segfault in a library, an abort on a
failed allocation) never answers: the harness sees the pipe close, reports the case with
the signal or exit code and starts a fresh worker.

Verdicts are dicts:

    {"verdict": "pass" | "fail" | "note", "kind": str, "detail": str, "signature": str}

"pass" kinds: "ok" (the call succeeded and every check held) and "refused" (it raised an
acceptable error: ace.ACEError, or a MemoryError whose message says what it could not
allocate; for image reading also ace.data.ImageReadError, the documented per-file error).
"fail" is any other exception, a loaded checkpoint or a trained model holding non-finite
values, a failed call that changed the model (a poisoned run), or a CLI run that died,
printed a traceback or exited non-zero without an `ace ...: error:` line. "note" marks
something worth a look that the property does not forbid (e.g. NaN in a probe result).

Run `python worker.py --replay FILE [INDEX]` to replay cases saved by run_long.py in this
very process (so a crash shows up directly, e.g. under gdb), or `--case-b64 TEXT` for one
case printed by the harness.
"""
import base64
import contextlib
import faulthandler
import json
import math
import os
import pickle
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

import numpy as np

ARRAY = "__array__"          # marker key of an array spec
REPEAT = "__repeat__"        # (REPEAT, text, n): text * n, built here (keeps huge strings out of reprs)
DROP = "__drop__"            # a config field or DICOM element to remove
PATH = "__path__"            # marker key of a path spec (a file or folder this worker creates)

# The tiny training run of python/tests/test_trainer.py's size class: vit_nano, 2 images,
# a 64 px image cut into an 8 x 8 grid, views of 2 x 2 / 4 x 4 cells at 32 px.
TINY = dict(encoder="vit_nano", batch_size=2, epochs=2, steps_per_epoch=10, head_hidden=32,
            head_bottleneck=16, head_prototypes=64,
            grid=dict(image_size=64, grid_cells=8, fine_cells=2, input_size=32, min_overlap=1))
ENCODER_KW = dict(img_size=32)

MAX_MATERIALIZED = 1 << 22   # elements of a materialized array; larger specs are broadcast views
CLI_TIMEOUT = float(os.environ.get("ACE_FUZZ_CLI_TIMEOUT", "150"))

_ace = None


def ace_module():
    global _ace
    if _ace is None:
        import ace
        from ace import _native  # noqa: F401  (loads the core now, not inside a case)
        _ace = ace
    return _ace


# =============================================================================== arrays

DTYPES = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64, "longdouble": np.longdouble,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128, "object": object, "str": np.str_,
    "bytes": np.bytes_, "datetime64": "datetime64[s]", "timedelta64": "timedelta64[s]",
    "void": "V4", "record": [("a", np.float32), ("b", np.float32)],
}


def repeat(text, n):
    return (REPEAT, text, n)


def text_of(value):
    if isinstance(value, tuple) and len(value) == 3 and value[0] == REPEAT:
        return value[1] * value[2]
    return value


def _shape_entry(entry, ctx):
    """An int, or a symbol of the context: "S" (img_size), "S+1", "S*2", "S-1", "S/2"."""
    if isinstance(entry, str):
        m = re.fullmatch(r"([A-Za-z_]+)(?:([-+*/])(\d+))?", entry)
        if not m or m.group(1) not in ctx:
            return 1
        v = ctx[m.group(1)]
        if m.group(2):
            k = int(m.group(3))
            v = {"+": v + k, "-": v - k, "*": v * k, "/": v // max(k, 1)}[m.group(2)]
        return v
    return entry


def _values(fill, shape, rng):
    """float64 (or object) values of `shape` for a fill spec."""
    if isinstance(fill, str):
        if fill == "unit":
            return rng.random(shape)
        if fill == "normal":
            return rng.standard_normal(shape)
        if fill == "ramp":
            n = int(np.prod(shape)) if shape else 1
            return (np.arange(n, dtype=np.float64) / max(n - 1, 1)).reshape(shape)
        if fill == "bytes":
            return rng.integers(0, 256, shape).astype(np.float64)
        if fill == "words":
            return rng.integers(0, 65536, shape).astype(np.float64)
        if fill == "unit_nan":          # in [0, 1] but one NaN
            v = rng.random(shape)
            if v.size:
                v.flat[rng.integers(v.size)] = np.nan
            return v
        if fill == "unit_big":          # in [0, 1] but one value far outside
            v = rng.random(shape)
            if v.size:
                v.flat[rng.integers(v.size)] = 1e30
            return v
        if fill == "tiny_over":         # just beyond [0, 1]
            v = rng.random(shape)
            if v.size:
                v.flat[0] = 1.0 + 2e-3
            return v
        if fill == "denormal":
            return np.full(shape, 1e-42)
        if fill in ("nan", "inf", "-inf"):
            return np.full(shape, float(fill))
    if isinstance(fill, tuple) and len(fill) == 3 and fill[0] == "uniform":
        return rng.uniform(fill[1], fill[2], shape)
    if isinstance(fill, tuple) and len(fill) == 2 and fill[0] == "ints":   # integers in [0, n)
        return rng.integers(0, max(1, fill[1]), shape).astype(np.float64)
    if isinstance(fill, int) and not isinstance(fill, bool) and abs(fill) >= 2**53:
        return np.full(shape, fill, dtype=object)
    if isinstance(fill, (bool, int, float)):
        return np.full(shape, float(fill))
    return np.full(shape, 0.5)


def make_array(spec, ctx=None, seed=0):
    """A NumPy array (or list, or scalar) from an array spec:

    dtype: a key of DTYPES; shape: ints or context symbols; fill: see _values;
    layout: "c" | "broadcast" (a read-only zero-stride view: huge shapes cost nothing) |
    "fortran" | "reversed" (negative strides) | "strided" (every other element) |
    "unaligned" (data at an odd address) | "readonly" | "list" (nested Python lists) |
    "ragged" (a ragged nested list) | "masked" (numpy.ma) | "matrix" (2-D numpy.matrix) |
    "scalar" (a 0-d value of that dtype, shape ignored).
    """
    ctx = ctx or {}
    dtype = DTYPES.get(spec.get("dtype", "float32"), np.float32)
    shape = tuple(int(_shape_entry(e, ctx)) for e in spec.get("shape", ()))
    fill = spec.get("fill", "unit")
    layout = spec.get("layout", "c")
    rng = np.random.default_rng(seed)
    if any(d < 0 for d in shape):
        # NumPy refuses negative dimensions itself; the case then tests the callee with
        # the nearest thing a user could pass: a list with that "shape" as data.
        return list(shape)
    size = math.prod(shape)
    if layout == "scalar":
        return _cast(_values(fill, (), rng), dtype)[()]
    if layout == "ragged":
        return [[0.5] * (i + 1) for i in range(max(2, shape[0] if shape else 2))]
    if size > MAX_MATERIALIZED and layout != "broadcast":
        layout = "broadcast"
    if layout == "broadcast":
        base = _cast(_values(fill, (), rng), dtype)
        try:
            return np.broadcast_to(base, shape)
        except ValueError:          # beyond NumPy's largest array: a plain array of that shape cannot exist
            return np.broadcast_to(base, (1,) * len(shape))
    a = _cast(_values(fill, shape, rng), dtype)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "reversed":
        return a[(slice(None, None, -1),) * a.ndim] if a.ndim else a
    if layout == "strided" and a.ndim:
        big = np.repeat(a, 2, axis=-1)
        return big[..., ::2]
    if layout == "unaligned" and a.ndim and a.dtype.kind in "fiub" and a.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)
        view = raw[1:].view(a.dtype).reshape(a.shape)
        view[...] = a
        return view
    if layout == "readonly":
        a.setflags(write=False)
        return a
    if layout == "list":
        return a.tolist()
    if layout == "masked":
        return np.ma.masked_array(a, mask=np.zeros(a.shape, bool))
    if layout == "matrix" and a.ndim == 2:
        return np.asmatrix(a)
    return a


def _to_float(v):
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf
    except (TypeError, ValueError):
        return math.nan


def _cast(values, dtype):
    """values (float64 or object) as `dtype`; integers saturate, NaN becomes 0."""
    values = np.asarray(values)
    with np.errstate(all="ignore"):
        if dtype is object:
            return values.astype(object)
        if dtype in (np.str_, np.bytes_):
            return values.astype(dtype)
        if isinstance(dtype, (str, list)):          # datetime64, timedelta64, void, record
            return np.zeros(values.shape, dtype=dtype)
        if values.dtype == object:
            values = np.array([_to_float(v) for v in values.ravel()], np.float64).reshape(values.shape)
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=float(info.max),
                                   neginf=float(info.min))
            values = np.clip(values, float(info.min), float(info.max) * (1 - 2**-52))
        return values.astype(dtype)


class Ctx(dict):
    """Per-case state: the working folder and the symbols array specs may use."""

    def __init__(self, folder, **symbols):
        super().__init__(symbols)
        self.folder = folder
        self.counter = 0


def resolve(value, ctx):
    """Materialize the specs inside a (nested) value: array specs, path specs."""
    if isinstance(value, dict):
        if ARRAY in value:
            ctx.counter += 1
            a = make_array(value[ARRAY], ctx, seed=ctx.counter)
            if ctx.get("track_images") and isinstance(a, np.ndarray) and a.ndim == 3:
                # Probe arguments after a batch of images (landmarks, labels, masks) may
                # use its N, H, W.
                ctx.update(N=a.shape[0], H=a.shape[1], W=a.shape[2])
            return a
        if PATH in value:
            return make_path(value[PATH], ctx)
        return {k: resolve(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ctx) for v in value]
    if isinstance(value, tuple):
        if len(value) == 3 and value[0] == REPEAT:
            return text_of(value)
        return tuple(resolve(v, ctx) for v in value)
    return value


def make_path(spec, ctx):
    """Paths a case may read or write, always inside the case's own folder (never a system
    path: an atomic save renames over its target). Read-only system paths appear as plain
    strings in the strategies ("/dev/null", "/")."""
    kind = spec if isinstance(spec, str) else spec[0]
    folder = ctx.folder
    if kind == "new":
        return os.path.join(folder, f"file{ctx.counter}.safetensors")
    if kind == "dir":
        return folder
    if kind == "missing_dir":
        return os.path.join(folder, "no", "such", "dir", "x.safetensors")
    if kind == "empty_file":
        p = os.path.join(folder, "empty.safetensors")
        open(p, "wb").close()
        return p
    if kind == "garbage_file":
        p = os.path.join(folder, "garbage.safetensors")
        with open(p, "wb") as f:
            f.write(bytes(spec[1]) if not isinstance(spec, str) else b"\x00" * 64)
        return p
    if kind == "encoder_ckpt":
        return base_file("encoder")
    if kind == "trainer_ckpt":
        return base_file("trainer")
    if kind == "pathlib":
        import pathlib
        return pathlib.Path(folder) / "p.safetensors"
    if kind == "bytes":
        return os.fsencode(os.path.join(folder, "b.safetensors"))
    if kind == "nul":
        return os.path.join(folder, "a\x00b.safetensors")
    if kind == "long":
        return os.path.join(folder, "x" * 300 + ".safetensors")
    if kind == "surrogate":
        return os.path.join(folder, "bad\udcff.safetensors")
    return os.path.join(folder, "other.safetensors")


# =============================================================================== outcomes

def _sig(text):
    """A message with numbers and paths blanked: the signature of a kind of failure."""
    text = re.sub(r"/[^\s'\"]*", "<path>", str(text))
    text = re.sub(r"0x[0-9a-fA-F]+", "<hex>", text)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
    return text[:120]


def _where(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in tb if "/fuzz/" not in f.filename]
    frame = (inside or tb or [None])[-1]
    if frame is None:
        return ""
    return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"


def passed(kind="ok", detail=""):
    return {"verdict": "pass", "kind": kind, "detail": detail, "signature": kind}


def failed(kind, detail, signature=None):
    return {"verdict": "fail", "kind": kind, "detail": str(detail)[:2000],
            "signature": f"{kind}: {signature if signature is not None else _sig(detail)}"}


def noted(kind, detail, signature=None):
    return {"verdict": "note", "kind": kind, "detail": str(detail)[:2000],
            "signature": f"{kind}: {signature if signature is not None else _sig(detail)}"}


@contextlib.contextmanager
def preparing(what):
    """Errors of the fuzz code itself (building a case's inputs) are not findings about ace:
    they end the case as "harness-error"."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        raise Finding(failed("harness-error", f"{what}: {type(exc).__name__}: {exc} (at {_where_any(exc)})",
                             f"{what}: {type(exc).__name__}")) from None


def _where_any(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    return f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name}" if tb else ""


class Finding(Exception):
    """Raised inside a case to end it with a fail (or note) verdict."""

    def __init__(self, verdict):
        super().__init__(verdict["detail"])
        self.verdict = verdict


def classify_exception(exc, extra_ok=()):
    """The verdict for an exception that escaped a public call."""
    ace = ace_module()
    if isinstance(exc, ace.ACEError):
        msg = str(exc)
        if not msg.strip():
            return failed("empty-message", f"{type(exc).__name__} with an empty message at {_where(exc)}",
                          f"{type(exc).__name__} at {_where(exc)}")
        return passed("refused", msg[:300])
    if isinstance(exc, MemoryError):
        if str(exc).strip():
            return passed("refused", f"MemoryError: {exc}"[:300])
        return failed("exception", f"MemoryError with an empty message at {_where(exc)}",
                      f"MemoryError() at {_where(exc)}")
    if extra_ok and isinstance(exc, extra_ok):
        return passed("refused", f"{type(exc).__name__}: {exc}"[:300])
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".replace("builtins.", "")
    return failed("exception", f"{name}: {str(exc)[:400]} (at {_where(exc)})",
                  f"{name} at {_where(exc)}: {_sig(str(exc))[:60]}")


# =============================================================================== model checks

def weights(enc):
    return {k: v.copy() for k, v in enc.state_dict().items()}


def nonfinite(state):
    return sorted(k for k, v in state.items() if not np.isfinite(v).all())


def same_state(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def check_finite_model(enc, what):
    bad = nonfinite(enc.state_dict())
    if bad:
        raise Finding(failed("nonfinite", f"{what}: non-finite values in {len(bad)} tensors, e.g. {bad[:3]}",
                             what))


def trainer_state(t):
    return {"student": weights(t.student), "teacher": weights(t.teacher), "steps": t.steps_done}


def same_trainer_state(a, b):
    return a["steps"] == b["steps"] and same_state(a["student"], b["student"]) and \
        same_state(a["teacher"], b["teacher"])


# =============================================================================== base files

WORK = None


def base_file(kind):
    """A valid checkpoint or image written once into the shared work folder (atomically:
    workers restarted after a crash reuse it)."""
    names = {"encoder": "base-encoder.safetensors", "trainer": "base-trainer.safetensors"}
    path = os.path.join(WORK, names[kind])
    if not os.path.exists(path):
        ace = ace_module()
        tmp = path + f".{os.getpid()}.tmp.safetensors"
        if kind == "encoder":
            ace.Encoder("vit_nano", **ENCODER_KW, seed=1).save(tmp)
        else:
            cfg = ace.PretrainConfig(**json.loads(json.dumps(TINY)), precision="fp32")
            t = ace.Trainer(cfg, seed=1)
            t.step(np.random.default_rng(1).random((2, 64, 64), dtype=np.float32))
            t.save(tmp)
        os.replace(tmp, path)
    return path


_bytes_cache = {}


def base_bytes(kind):
    if kind not in _bytes_cache:
        with open(base_file(kind), "rb") as f:
            _bytes_cache[kind] = f.read()
    return _bytes_cache[kind]


# =============================================================================== checkpoint mutation

def split_checkpoint(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return n, raw[8:8 + n], raw[8 + n:]


def _tensor_names(header):
    return sorted(k for k in header if k != "__metadata__")


def _pick(names, sel):
    if not names:
        return None
    if isinstance(sel, str):
        return sel
    return names[sel % len(names)]


def _nbytes(entry):
    try:
        a, b = entry["data_offsets"]
        return b - a
    except Exception:  # noqa: BLE001
        return 0


def mutate_checkpoint(raw, data_ops=(), json_ops=(), fix_crc=False, byte_ops=()):
    """Checkpoint bytes after mutation, in phases: edits of the tensor data, edits of the
    JSON header (tensors' offsets/shape/dtype, metadata, the config inside it), an optional
    recomputed data checksum (so that data edits reach the loader's other checks), then
    edits of the assembled file's bytes (bit flips, overwrites, truncation, the header
    length field)."""
    n, header_text, data = split_checkpoint(raw)
    data = bytearray(data)
    header = json.loads(header_text)
    names = _tensor_names(header)
    # ---- data region
    for op in data_ops:
        kind = op[0]
        if kind == "set_float":          # (set_float, tensor, element, value)
            name = _pick(names, op[1])
            a, b = header[name]["data_offsets"]
            count = (b - a) // 4
            if count:
                i = a + 4 * (op[2] % count)
                data[i:i + 4] = struct.pack("<f", op[3])
        elif kind == "fill_tensor":      # (fill_tensor, tensor, value)
            name = _pick(names, op[1])
            a, b = header[name]["data_offsets"]
            data[a:b] = struct.pack("<f", op[2]) * ((b - a) // 4)
        elif kind == "flip" and data:
            i = op[1] % len(data)
            data[i] ^= 1 << (op[2] % 8)
        elif kind == "bytes" and data:
            i = op[1] % len(data)
            data[i:i + len(op[2])] = op[2]
    # ---- header
    text_override = None
    for op in json_ops:
        kind = op[0]
        meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else None
        name = _pick(names, op[1]) if kind in ("offsets", "shift", "wrap", "shape", "dtype", "drop", "entry",
                                               "alias", "rename", "field_drop") and names else None
        entry = header.get(name) if isinstance(header.get(name), dict) else None
        if kind == "offsets" and entry is not None:
            entry["data_offsets"] = op[2]
        elif kind == "shift" and entry is not None:
            a, b = entry["data_offsets"]
            entry["data_offsets"] = [a + op[2], b + op[2]]
        elif kind == "wrap" and entry is not None:
            size = _nbytes(entry)
            entry["data_offsets"] = [2**63 - 4, 2**63 - 4 + size - 2**64]
        elif kind == "alias" and entry is not None:
            # Point this tensor at another one's bytes: of the same size if there is one.
            size = _nbytes(entry)
            same = [k for k in names if k != name and isinstance(header.get(k), dict)
                    and _nbytes(header[k]) == size]
            other = header[same[op[2] % len(same)]] if same else header[_pick(names, op[2])]
            entry["data_offsets"] = list(other["data_offsets"])
        elif kind == "shape" and entry is not None:
            entry["shape"] = op[2]
        elif kind == "dtype" and entry is not None:
            entry["dtype"] = op[2]
        elif kind == "field_drop" and entry is not None:
            entry.pop(op[2], None)
        elif kind == "drop" and name is not None:
            header.pop(name, None)
        elif kind == "entry" and name is not None:
            header[name] = op[2]
        elif kind == "rename" and name is not None:
            header[op[2]] = header.pop(name)
        elif kind == "add":
            header[op[1]] = op[2]
        elif kind == "meta" and meta is not None:
            meta[op[1]] = op[2]
        elif kind == "meta_drop" and meta is not None:
            meta.pop(op[1], None)
        elif kind == "meta_replace":
            header["__metadata__"] = op[1]
        elif kind == "config" and meta is not None:
            # (config, key in the metadata ("config" / "encoder_config"), dotted field, value)
            try:
                cfg = json.loads(meta[op[1]])
                target = cfg
                parts = op[2].split(".")
                for p in parts[:-1]:
                    target = target[p]
                if op[3] is DROP:
                    target.pop(parts[-1], None)
                else:
                    target[parts[-1]] = op[3]
                meta[op[1]] = json.dumps(cfg)
            except (KeyError, TypeError, ValueError):
                pass
        elif kind == "config_raw" and meta is not None:
            meta[op[1]] = text_of(op[2])
        elif kind == "raw":
            raw_text = text_of(op[1])
            text_override = raw_text if isinstance(raw_text, bytes) else raw_text.encode("utf-8", "surrogatepass")
        elif kind == "pad":
            text_override = None
            header_text_padded = json.dumps(header).encode() + b" " * op[1]
            text_override = header_text_padded
        elif kind == "duplicate_key" and names:
            # The same tensor twice in the JSON text, the second with other offsets.
            name = _pick(names, op[1])
            text = json.dumps(header)
            extra = json.dumps({name: {**header[name], "data_offsets": op[2]}})[1:-1]
            text_override = (text[:-1] + ", " + extra + "}").encode()
    if fix_crc and isinstance(header.get("__metadata__"), dict) and "data_crc32" in header["__metadata__"]:
        header["__metadata__"]["data_crc32"] = f"{zlib.crc32(bytes(data)):08x}"
    text = text_override if text_override is not None else json.dumps(header).encode()
    if fix_crc and text_override is not None:
        pass                      # a raw header is used as given
    out = bytearray(struct.pack("<Q", len(text)) + text + bytes(data))
    # ---- whole file
    for op in byte_ops:
        kind = op[0]
        if kind == "header_len":
            out[:8] = struct.pack("<Q", op[1] % 2**64)
        elif kind == "header_len_delta":
            old = struct.unpack("<Q", bytes(out[:8]))[0]
            out[:8] = struct.pack("<Q", (old + op[1]) % 2**64)
        elif not out:
            continue
        elif kind == "flip":
            i = _region_pos(out, op[1], op[2])
            out[i] ^= 1 << (op[3] % 8)
        elif kind == "bytes":
            i = _region_pos(out, op[1], op[2])
            out[i:i + len(op[3])] = op[3]
        elif kind == "truncate":
            del out[_region_pos(out, op[1], op[2]):]
        elif kind == "append":
            out += op[1]
    return bytes(out)


def _region_pos(buf, region, pos):
    """A byte position in a region of the file: "len" (the 8-byte length), "header", "data"
    or "any"."""
    if len(buf) < 8:
        return pos % len(buf)
    n = struct.unpack("<Q", bytes(buf[:8]))[0]
    hdr_end = min(len(buf), 8 + n)
    if region == "len":
        lo, hi = 0, 8
    elif region == "header":
        lo, hi = 8, hdr_end
    elif region == "data":
        lo, hi = hdr_end, len(buf)
    else:
        lo, hi = 0, len(buf)
    if hi <= lo:
        lo, hi = 0, len(buf)
    return lo + pos % (hi - lo)


# =============================================================================== ops

def op_sanity(case, ctx):
    """Cases that check the harness itself."""
    action = case["action"]
    if action == "abort":
        os.abort()
    if action == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "exit":
        os._exit(3)
    if action == "hang":
        time.sleep(3600)
    if action == "raise":
        raise TypeError("a bare TypeError")
    if action == "raise_ace":
        raise ace_module().ACEError("a clear refusal")
    if action == "memory_empty":
        raise MemoryError()
    if action == "memory_message":
        raise MemoryError("cannot allocate 10 GiB for the test")
    if action == "nonfinite_model":
        # A model holding NaN must be caught by the same check the checkpoint cases use.
        class Poisoned:
            def state_dict(self):
                return {"cls_token": np.full((1, 1, 96), np.nan, np.float32)}
        check_finite_model(Poisoned(), "sanity encoder")
    if action == "cli":
        return check_cli(case["rc"], case["stderr"], case.get("command", "pretrain"), case.get("folder"))
    return passed()


def encoder_symbols(enc):
    c = enc.config
    g = c["img_size"] // c["patch_size"]
    return dict(C=c["in_chans"], S=c["img_size"], D=c["embed_dim"], P=c["patch_size"], G=g, T=1 + g * g)


def run_encoder_calls(enc, calls, ctx, label="encoder"):
    """Calls on an encoder; each may succeed or be refused. Checks: a refused call that can
    change weights (adamw_step, load_state_dict) leaves them as they were; a call that
    succeeds leaves them finite; a forward of finite input gives finite features."""
    ace = ace_module()
    ctx.update(encoder_symbols(enc))
    last_train = None
    for call in calls:
        name, args, kwargs = call[0], list(call[1]) if len(call) > 1 else [], dict(call[2]) if len(call) > 2 else {}
        with preparing("inputs"):
            if name == "backward" and args and args[0] == "match":
                shape = last_train if last_train is not None else (1, 1, 1)
                args = [make_array({"dtype": kwargs.pop("dtype", "float32"), "shape": list(shape),
                                    "fill": kwargs.pop("fill", "normal"), "layout": kwargs.pop("layout", "c")})]
            if name == "load_state_dict" and args and isinstance(args[0], dict) and "__state__" in args[0]:
                args = [make_state(enc, args[0]["__state__"], ctx)]
            args, kwargs = resolve(args, ctx), resolve(kwargs, ctx)
        mutating = name in ("adamw_step", "load_state_dict")
        before = weights(enc) if mutating else None
        try:
            if name == "precision":
                enc.precision = args[0]
                result = None
            elif name == "save":
                enc.save(*args)
                result = None
            elif name == "load":
                result = ace.Encoder.load(*args)
                check_finite_model(result, f"{label}: Encoder.load of a file")
            elif name == "copy":
                result = enc.copy()
            elif name == "config":
                result = enc.config
            elif name == "repr":
                result = repr(enc)
            else:
                result = getattr(enc, name)(*args, **kwargs)
        except Finding:
            raise
        except BaseException as exc:  # noqa: BLE001 - any exception is judged
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            verdict = classify_exception(exc)
            if verdict["verdict"] != "pass":
                raise Finding(verdict) from None
            if mutating and not same_state(before, weights(enc)):
                raise Finding(failed("poisoned", f"{label}.{name} raised ({exc}) but changed the weights",
                                     f"{label}.{name} refused but changed the weights"))
            continue
        if name == "forward_train":
            last_train = result.shape
        if mutating:
            check_finite_model(enc, f"{label}.{name} succeeded")
        if name in ("forward_features", "forward_train") and isinstance(result, np.ndarray):
            x = np.asarray(args[0])
            if x.dtype.kind in "fiu" and np.isfinite(x).all() and not np.isfinite(result).all():
                raise Finding(noted("nonfinite-output", f"{label}.{name} of finite input "
                                    f"(|x| <= {float(np.abs(x).max()) if x.size else 0:.3g}) gave non-finite "
                                    f"features", f"{label}.{name}"))
        if name == "embed":
            cls, tokens = result
            if not (np.isfinite(cls).all() and np.isfinite(tokens).all()):
                raise Finding(failed("nonfinite-output", f"{label}.embed returned non-finite embeddings",
                                     f"{label}.embed"))
    return passed()


def make_state(enc, spec, ctx):
    """A state dict for load_state_dict: the encoder's own, edited."""
    base = spec.get("base", "self")
    if base == "none":
        return None
    if base == "list":
        return list(enc.state_dict().items())
    if base == "empty":
        return {}
    state = dict(enc.state_dict())
    names = sorted(state)
    for edit in spec.get("edits", ()):
        kind, i = edit[0], edit[1]
        name = names[i % len(names)]
        if kind == "drop":
            state.pop(name, None)
        elif kind == "add":
            state[f"extra.{i}"] = np.zeros(3, np.float32)
        elif kind == "rename":
            state[name + ".x"] = state.pop(name, None)
        elif kind == "value":           # replace by an array spec / any value
            state[name] = resolve(edit[2], ctx)
        elif kind == "shape":
            state[name] = np.zeros(edit[2], np.float32) if all(isinstance(d, int) and 0 <= d < 10**4
                                                              for d in edit[2]) else resolve(edit[2], ctx)
        elif kind == "dtype":
            state[name] = make_array({"dtype": edit[2], "shape": list(np.shape(state[name])),
                                      "fill": edit[3] if len(edit) > 3 else "normal"}, ctx)
        elif kind == "poke":            # one bad value in an otherwise good tensor
            a = np.array(state[name], dtype=np.float32)
            if a.size:
                a.flat[edit[2] % a.size] = edit[3]
            state[name] = a
    return state


def op_encoder(case, ctx):
    ace = ace_module()
    with preparing("inputs"):
        kwargs = resolve(case.get("kwargs", {}), ctx)
        preset = resolve(case.get("preset", "vit_nano"), ctx)
    enc = ace.Encoder(preset, **kwargs)
    return run_encoder_calls(enc, case.get("calls", ()), ctx)


def build_config(build, fields, ctx):
    """A PretrainConfig the way a user would make one: the constructor, from_dict,
    recipe(name, **overrides), or attributes set after construction."""
    ace = ace_module()
    base = json.loads(json.dumps(TINY))
    how = build if isinstance(build, str) else build[0]
    if how == "ctor":
        grid = fields.pop("grid", None) if isinstance(fields.get("grid"), dict) else None
        merged = {**base, **fields}
        if grid is not None:
            merged["grid"] = {**base["grid"], **grid}
        return ace.PretrainConfig(**merged)
    if how == "from_dict":
        merged = {**base, **fields}
        if isinstance(fields.get("grid"), dict):
            merged["grid"] = {**base["grid"], **fields["grid"]}
        return ace.PretrainConfig.from_dict(merged)
    if how == "from_json":
        return ace.PretrainConfig.from_json(fields if isinstance(fields, (str, bytes)) else
                                            json.dumps({**base, **fields}))
    if how == "from_json_text":
        return ace.PretrainConfig.from_json(fields)
    if how == "recipe":
        merged = {**base, **fields}
        if isinstance(fields.get("grid"), dict):
            merged["grid"] = {**base["grid"], **fields["grid"]}
        return ace.PretrainConfig.recipe(build[1], **merged)
    if how == "setattr":
        cfg = ace.PretrainConfig(**base)
        for key, value in fields.items():
            target = cfg
            parts = key.split(".")
            for p in parts[:-1]:
                target = getattr(target, p)
            setattr(target, parts[-1], value)
        return cfg
    if how == "raw":                # not a PretrainConfig at all
        return fields
    raise ValueError(how)


def op_trainer(case, ctx):
    """A config (from fuzzed fields) to ace.Trainer, then steps and other calls. A refused
    step must leave the trainer exactly as it was; a successful one must leave finite
    weights and statistics."""
    ace = ace_module()
    with preparing("inputs"):
        fields = resolve(case.get("fields", {}), ctx)
        trainer_kwargs = resolve(case.get("trainer_kwargs", {}), ctx)
    cfg = build_config(case.get("build", "ctor"), fields, ctx)
    t = ace.Trainer(cfg, **trainer_kwargs)
    ctx.update(S=t.config.grid.image_size, B=t.config.batch_size)
    for call in case.get("calls", ()):
        name, args = call[0], call[1] if len(call) > 1 else []
        if name in ("student", "teacher"):
            run_encoder_calls(getattr(t, name), args, ctx, label=f"trainer.{name}")
            continue
        with preparing("inputs"):
            args = resolve(args, ctx)
        before = trainer_state(t) if name == "step" else None
        try:
            if name == "step":
                stats = t.step(*args)
            elif name == "save":
                t.save(*args)
            elif name == "load":
                t2 = ace.Trainer.load(*args)
                check_finite_model(t2.student, "Trainer.load: student")
            elif name == "save_load":
                path = os.path.join(ctx.folder, "roundtrip.safetensors")
                t.save(path)
                t2 = ace.Trainer.load(path)
                if t2.steps_done != t.steps_done:
                    raise Finding(failed("roundtrip", f"steps_done {t.steps_done} saved, {t2.steps_done} loaded",
                                         "steps_done changes in a save/load round trip"))
            elif name == "grid_crops":
                ace.grid_crops(t.config, **args[0]) if args else ace.grid_crops(t.config)
            elif name == "steps_done":
                t.steps_done
            elif name == "precision":
                t.precision
        except Finding:
            raise
        except Exception as exc:  # noqa: BLE001
            verdict = classify_exception(exc)
            if verdict["verdict"] != "pass":
                raise Finding(verdict) from None
            if name == "step" and not same_trainer_state(before, trainer_state(t)):
                raise Finding(failed("poisoned", f"Trainer.step raised ({str(exc)[:200]}) but changed the "
                                     f"trainer (weights or step counter)", "a refused Trainer.step changed the trainer"))
            continue
        if name == "step":
            bad = [k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise Finding(failed("nonfinite", f"Trainer.step returned non-finite {bad}: "
                                     f"{ {k: stats[k] for k in bad} }", f"Trainer.step returned non-finite {bad}"))
            check_finite_model(t.student, "Trainer.step succeeded: student")
            check_finite_model(t.teacher, "Trainer.step succeeded: teacher")
    return passed()


def op_grid_crops(case, ctx):
    ace = ace_module()
    config = case.get("config", "default")
    with preparing("inputs"):
        fields = resolve(config[2], ctx) if isinstance(config, tuple) and config[0] == "config" else None
        raw_config = resolve(config, ctx) if fields is None else None
        kwargs = resolve(case.get("kwargs", {}), ctx)
    if config == "default":
        cfg = None
    elif fields is not None:
        cfg = build_config(config[1], fields, ctx)
    else:
        cfg = raw_config
    out = ace.grid_crops(cfg, **kwargs) if cfg is not None or case.get("pass_none") else ace.grid_crops(**kwargs)
    for d in out:
        for k in ("t_comp", "t_decomp"):
            if not np.isfinite(d[k]).all():
                raise Finding(failed("nonfinite-output", f"grid_crops returned non-finite {k}", f"grid_crops {k}"))
    return passed()


def op_threads(case, ctx):
    ace = ace_module()
    before = ace.get_num_threads()
    with preparing("inputs"):
        values = resolve(case["values"], ctx)
    try:
        for value in values:
            try:
                ace.set_num_threads(value)
            except Exception as exc:  # noqa: BLE001
                verdict = classify_exception(exc)
                if verdict["verdict"] != "pass":
                    return verdict
            n = ace.get_num_threads()
            if not isinstance(n, int) or n < 1:
                return failed("threads", f"get_num_threads() returned {n!r} after set_num_threads({value!r})",
                              "get_num_threads out of range")
            if case.get("forward"):
                enc = ace.Encoder("vit_nano", **ENCODER_KW)
                out = enc.forward_features(np.zeros((2, 1, 32, 32), np.float32))
                if not np.isfinite(out).all():
                    return failed("nonfinite-output", f"forward with {n} threads gave non-finite features",
                                  "forward after set_num_threads")
    finally:
        ace.set_num_threads(before)
    return passed()


PROBE_HEADLINES = {"compositionality": "mean", "decompositionality": "accuracy", "retrieval": "accuracy",
                   "landmark_correspondence": "mean_error", "landmark_embeddings": "accuracy",
                   "symmetry": "accuracy", "linear_probe_classification": "auc", "segmentation": None,
                   "dice": None}


def op_probe(case, ctx):
    ace = ace_module()
    from ace import probes
    enc = ace.Encoder("vit_nano", **ENCODER_KW)
    fn = getattr(probes, case["name"])
    ctx.update(track_images=True, N=2, H=32, W=32)
    with preparing("inputs"):
        args = resolve(case.get("args", []), ctx)
        kwargs = resolve(case.get("kwargs", {}), ctx)
    result = fn(*args, **kwargs) if case["name"] == "dice" else fn(enc, *args, **kwargs)
    key = PROBE_HEADLINES.get(case["name"])
    if key and isinstance(result, dict):
        value = result.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise Finding(noted("nan-result", f"probes.{case['name']} returned {key}={value}",
                                f"probes.{case['name']} {key} not finite"))
    return passed()


# ----------------------------------------------------------------------------- images

def base_image(fmt, mode, size=(13, 9)):
    """Bytes of a small valid image: PNG/JPEG/TIFF/BMP/GIF/WEBP through Pillow, DICOM
    through pydicom."""
    import io

    from PIL import Image
    w, h = size
    ramp = (np.arange(w * h).reshape(h, w) * 7 % 251).astype(np.float64)
    if fmt == "dcm":
        return dicom_bytes({})
    if mode == "I;16":
        im = Image.fromarray((ramp * 200).astype(np.uint16))
    elif mode == "F":
        im = Image.fromarray((ramp / 300).astype(np.float32), mode="F")
    elif mode == "I":
        im = Image.fromarray((ramp * 1000).astype(np.int32), mode="I")
    elif mode == "RGB":
        im = Image.fromarray(np.stack([ramp, ramp[::-1], ramp[:, ::-1]], -1).astype(np.uint8))
    elif mode == "RGBA":
        im = Image.fromarray(np.stack([ramp, ramp, ramp, ramp * 0 + 255], -1).astype(np.uint8))
    elif mode == "1":
        im = Image.fromarray(ramp.astype(np.uint8)).convert("1")
    elif mode == "P":
        im = Image.fromarray(ramp.astype(np.uint8)).convert("P")
    elif mode == "LA":
        im = Image.fromarray(ramp.astype(np.uint8)).convert("LA")
    else:
        im = Image.fromarray(ramp.astype(np.uint8))
    save_fmt = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP", "gif": "GIF", "webp": "WEBP"}[fmt]
    buf = io.BytesIO()
    try:
        im.save(buf, save_fmt)
    except (OSError, ValueError, KeyError):
        buf = io.BytesIO()
        im.convert("L").save(buf, save_fmt)
    return buf.getvalue()


def dicom_bytes(edits):
    """A small valid DICOM file (MONOCHROME2, 16 bit) with dataset edits applied."""
    import io

    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["ace-fuzz"])
    meta.TransferSyntaxUID = edits.pop("TransferSyntaxUID", ExplicitVRLittleEndian)
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = 9, 13
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(9 * 13, dtype=np.uint16) * 30).tobytes()
    for key, value in edits.items():
        value = text_of(value)
        try:
            if value == DROP:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        except Exception:  # noqa: BLE001 - pydicom refuses some values outright; keep the rest
            pass
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    except TypeError:                          # pydicom < 3
        ds.save_as(buf, write_like_original=False)
    except Exception:  # noqa: BLE001 - an edit pydicom cannot even write: write the untouched file
        return dicom_bytes({})
    return buf.getvalue()


def image_bytes(spec):
    """("random", n, seed) | ("image", fmt, mode, byte_ops) | ("dicom", edits, byte_ops) |
    ("png_size", w, h) (a PNG whose header declares w x h, with a valid CRC)."""
    kind = spec[0]
    if kind == "random":
        return np.random.default_rng(spec[2]).integers(0, 256, spec[1], dtype=np.uint8).tobytes()
    if kind == "literal":
        return spec[1]
    if kind == "png_size":
        raw = bytearray(base_image("png", "L"))
        raw[16:24] = struct.pack(">II", spec[1] % 2**32, spec[2] % 2**32)
        raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
        return bytes(raw)
    if kind == "image":
        raw = bytearray(base_image(spec[1], spec[2]))
        ops = spec[3]
    else:
        raw = bytearray(dicom_bytes(dict(spec[1])))
        ops = spec[2]
    for op in ops:
        if not raw:
            break
        if op[0] == "flip":
            raw[op[1] % len(raw)] ^= 1 << (op[2] % 8)
        elif op[0] == "bytes":
            i = op[1] % len(raw)
            raw[i:i + len(op[2])] = op[2]
        elif op[0] == "truncate":
            del raw[op[1] % (len(raw) + 1):]
        elif op[0] == "u32":            # a 32-bit field anywhere (sizes, offsets, counts)
            i = op[1] % max(1, len(raw) - 4)
            raw[i:i + 4] = struct.pack("<I" if op[3] else ">I", op[2] % 2**32)
    return bytes(raw)


def op_image(case, ctx):
    """Files with image suffixes read by ace.data: read_image on one, load_images and
    ImageStream on the folder. A decoded image must be 2-D, float32, finite, in [0, 1]."""
    from ace import data
    folder = os.path.join(ctx.folder, "images")
    os.makedirs(folder, exist_ok=True)
    paths = []
    with preparing("image files"):
        for i, (suffix, spec) in enumerate(case["files"]):
            p = os.path.join(folder, f"f{i}{suffix}")
            with open(p, "wb") as f:
                f.write(image_bytes(spec))
            paths.append(p)
    ok_errors = (data.ImageReadError,)
    how = case.get("call", "read_image")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "read_image":
            for p in paths:
                try:
                    image = data.read_image(p)
                except Exception as exc:  # noqa: BLE001
                    verdict = classify_exception(exc, ok_errors)
                    if verdict["verdict"] != "pass":
                        return verdict
                    continue
                if not (isinstance(image, np.ndarray) and image.ndim == 2 and image.dtype == np.float32):
                    return failed("bad-image", f"read_image returned {type(image).__name__} "
                                  f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}", "read_image type")
                if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
                    return failed("bad-image", f"read_image returned values outside [0, 1] or non-finite: "
                                  f"[{np.nanmin(image)}, {np.nanmax(image)}]", "read_image range")
        elif how == "load_images":
            try:
                images, _ = data.load_images(folder, size=case.get("size", 32))
            except Exception as exc:  # noqa: BLE001
                return classify_exception(exc, ok_errors)
            if not np.isfinite(images).all():
                return failed("bad-image", "load_images returned non-finite values", "load_images range")
        elif how == "stream":
            try:
                stream = data.ImageStream(folder, case.get("batch", 2), case.get("size", 32), seed=0,
                                          **case.get("stream_kwargs", {}))
                try:
                    batch = next(iter(stream))
                finally:
                    stream.close()
            except Exception as exc:  # noqa: BLE001
                return classify_exception(exc, ok_errors)
            if not np.isfinite(batch).all():
                return failed("bad-image", "ImageStream yielded non-finite values", "ImageStream range")
    return passed()


# ----------------------------------------------------------------------------- checkpoints

def op_load(case, ctx):
    """A mutated checkpoint loaded as an encoder or a training run. Loading may be refused;
    what loads must hold finite values, embed to finite features, and (a run) take a step
    that either succeeds with finite results or is refused leaving the run untouched, and
    save to a file that loads again."""
    ace = ace_module()
    with preparing("checkpoint mutation"):
        raw = mutate_checkpoint(base_bytes(case["base"]), case.get("data_ops", ()), case.get("json_ops", ()),
                                case.get("fix_crc", False), case.get("byte_ops", ()))
        path = os.path.join(ctx.folder, "mutated.safetensors")
        with open(path, "wb") as f:
            f.write(raw)
    loader = case.get("loader", case["base"])
    if loader == "encoder":
        enc = ace.Encoder.load(path)
        check_finite_model(enc, "a mutated checkpoint loaded as an encoder")
        if case.get("use", True):
            try:
                cls, tokens = enc.embed(np.linspace(0, 1, 2 * 48 * 40, dtype=np.float32).reshape(2, 48, 40))
            except Exception as exc:  # noqa: BLE001
                verdict = classify_exception(exc)
                if verdict["verdict"] != "pass":
                    raise Finding(verdict) from None
            else:
                if not (np.isfinite(cls).all() and np.isfinite(tokens).all()):
                    raise Finding(failed("nonfinite-output", "an encoder loaded from a mutated checkpoint gives "
                                         "non-finite embeddings", "embed after load"))
        return passed()
    t = ace.Trainer.load(path)
    check_finite_model(t.student, "a mutated checkpoint loaded as a run: student")
    check_finite_model(t.teacher, "a mutated checkpoint loaded as a run: teacher")
    if t.steps_done < 0:
        raise Finding(failed("bad-state", f"a loaded run has steps_done = {t.steps_done}", "negative steps_done"))
    if case.get("use", True):
        images = np.random.default_rng(2).random((2, 64, 64), dtype=np.float32)
        before = trainer_state(t)
        try:
            stats = t.step(images)
        except Exception as exc:  # noqa: BLE001
            verdict = classify_exception(exc)
            if verdict["verdict"] != "pass":
                raise Finding(verdict) from None
            if not same_trainer_state(before, trainer_state(t)):
                raise Finding(failed("poisoned", f"a step of a loaded run was refused ({str(exc)[:200]}) but "
                                     f"changed it", "refused step after load changed the run"))
        else:
            bad = [k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise Finding(failed("nonfinite", f"a step of a loaded run returned non-finite {bad}",
                                     f"step after load: non-finite {bad}"))
            check_finite_model(t.student, "a step of a loaded run: student")
            check_finite_model(t.teacher, "a step of a loaded run: teacher")
        if case.get("roundtrip"):
            again = os.path.join(ctx.folder, "again.safetensors")
            t.save(again)
            try:
                ace.Trainer.load(again)
            except Exception as exc:  # noqa: BLE001
                raise Finding(failed("roundtrip", f"a run saved after loading a mutated checkpoint does not "
                                     f"load again: {type(exc).__name__}: {str(exc)[:300]}",
                                     f"saved run does not load: {_sig(str(exc))[:60]}")) from None
    return passed()


# ----------------------------------------------------------------------------- private layer

def op_native(case, ctx):
    """Direct calls of ace._native: any Python exception is fine here (it is the private
    layer), but nothing may crash the process."""
    from ace import _native
    ace = ace_module()
    fn = case["fn"]
    args = resolve(case.get("args", []), ctx)
    if fn == "grid_crops":
        cfg = ace.PretrainConfig(**json.loads(json.dumps(TINY)))
        if case.get("config_json") is not None:
            config_json = case["config_json"]
        else:
            config_json = cfg.to_json()
        g = cfg.grid
        n = case.get("n", 1)
        t = g.fine_cells ** 2
        sizes = {"boxes": (n * 8, np.int32), "o1": (n * t, np.uint8), "o2": (n * t, np.uint8),
                 "t_comp": (n * t * (t // 4), np.float32), "t_decomp": (n * t * 4 * t, np.float32),
                 "image": (g.image_size ** 2, np.float32), "views1": (n * g.input_size ** 2, np.float32),
                 "views2": (n * g.input_size ** 2, np.float32)}
        deltas = case.get("deltas", {})
        bufs = {}
        for k, (size, dtype) in sizes.items():
            d = deltas.get(k, 0)
            if d == "none":
                bufs[k] = None
            elif d == "wrong_dtype":
                bufs[k] = np.zeros(size, np.float64)
            elif d == "readonly":
                a = np.zeros(size, dtype)
                a.setflags(write=False)
                bufs[k] = a
            else:
                bufs[k] = np.zeros(max(0, size + d), dtype)
        if not case.get("with_image"):
            bufs["image"] = None
        _native.grid_crops(config_json, case.get("seed", 0), case.get("count", n), bufs["boxes"], bufs["o1"],
                           bufs["o2"], bufs["t_comp"], bufs["t_decomp"], bufs["image"], bufs["views1"],
                           bufs["views2"])
    elif fn == "encoder_from_json":
        _native.encoder_from_json(*args)
    elif fn == "Trainer":
        _native.Trainer(*args)
    elif fn == "gemm":
        _native.gemm(*args)
    elif fn == "local_match_loss":
        _native.local_match_loss(*args)
    elif fn == "set_num_threads":
        try:
            _native.set_num_threads(*args)
        finally:
            _native.set_num_threads(2)
    elif fn == "tensor":
        enc = ace.Encoder("vit_nano", **ENCODER_KW)
        getattr(enc._native, case["method"])(*args)
    elif fn == "reinit":
        # __init__ called again on an existing handle (possible from Python without ctypes):
        # on a trainer's student/teacher the handle belongs to the trainer.
        t = _tiny_trainer()
        owner = {"student": t.student, "teacher": t.teacher,
                 "encoder": ace.Encoder("vit_nano", **ENCODER_KW)}[case["which"]]
        try:
            owner._native.__init__(*args)
        except Exception:  # noqa: BLE001
            pass
        owner.forward_features(np.zeros((1, 1, 32, 32), np.float32))
        t.step(np.random.default_rng(0).random((2, 64, 64), dtype=np.float32))
        del t, owner
        import gc
        gc.collect()
        _tiny_trainer()
    return passed()


# ----------------------------------------------------------------------------- lifetimes and threads

def _tiny_trainer(**fields):
    ace = ace_module()
    return ace.Trainer(ace.PretrainConfig(**{**json.loads(json.dumps(TINY)), **fields}))


def op_lifetime(case, ctx):
    """An encoder obtained from an object that is then dropped (a trainer's student or
    teacher, a loaded run's, a copy's original), used after a garbage collection and some
    allocation churn: its weights must still be there (no use after free)."""
    import gc
    ace = ace_module()
    source = case["source"]
    if source in ("student", "teacher"):
        owner = _tiny_trainer()
        owner.step(np.random.default_rng(0).random((2, 64, 64), dtype=np.float32))
        enc = getattr(owner, source)
    elif source in ("loaded_student", "loaded_teacher"):
        owner = ace.Trainer.load(base_file("trainer"))
        enc = getattr(owner, source.split("_")[1])
    else:
        owner = ace.Encoder("vit_nano", **ENCODER_KW)
        enc = owner.copy()
    expected = weights(enc)
    del owner
    gc.collect()
    for _ in range(case.get("churn", 0)):
        # Other handles created and freed where the dropped one lived.
        t = _tiny_trainer()
        del t
        gc.collect()
    if not same_state(expected, weights(enc)):
        raise Finding(failed("lifetime", f"the weights of an encoder from a dropped {source} changed after the "
                             f"owner was freed", f"{source} weights change after the owner is freed"))
    return run_encoder_calls(enc, case.get("calls", ()), ctx, label=source)


def op_concurrent(case, ctx):
    """Calls on one encoder or trainer from several Python threads at once (the core
    serializes them). Each call succeeds or is refused; nothing crashes or deadlocks, and a
    model that only ran forwards is unchanged."""
    import threading
    ace = ace_module()
    trainer = _tiny_trainer() if case["target"] == "trainer" else None
    enc = trainer.student if trainer is not None else ace.Encoder("vit_nano", **ENCODER_KW)
    ctx.update(encoder_symbols(enc))
    with preparing("inputs"):
        plans = [[(name, resolve(args, ctx)) for name, args in calls] for calls in case["threads"]]
    errors = []
    start = threading.Barrier(len(plans))

    def work(i, calls):
        try:
            start.wait(timeout=30)
        except threading.BrokenBarrierError:
            return
        for name, args in calls:
            try:
                if name == "step":
                    trainer.step(*args)
                elif name == "trainer_save":
                    trainer.save(os.path.join(ctx.folder, f"t{i}.safetensors"))
                elif name == "save":
                    enc.save(os.path.join(ctx.folder, f"e{i}.safetensors"))
                elif name == "threads":
                    ace.set_num_threads(*args)
                elif name == "precision":
                    enc.precision = args[0]
                elif name == "load_own_state":
                    enc.load_state_dict(enc.state_dict())
                elif name == "backward_match":
                    out = enc.forward_train(np.zeros((1, 1, 32, 32), np.float32))
                    enc.backward(np.ones_like(out))
                else:
                    getattr(enc, name)(*args)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, calls), daemon=True) for i, calls in enumerate(plans)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + case.get("join_timeout", 40)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        # A deadlock: end the case as a hang without waiting for the harness's timeout.
        faulthandler.dump_traceback(all_threads=True)
        return failed("hang", f"{sum(t.is_alive() for t in threads)} of {len(threads)} threads still running after "
                      f"{case.get('join_timeout', 40)} s: a deadlock?", "concurrent calls deadlock")
    for exc in errors:
        verdict = classify_exception(exc)
        if verdict["verdict"] != "pass":
            return verdict
    if trainer is not None:
        check_finite_model(trainer.student, "after concurrent calls: student")
        check_finite_model(trainer.teacher, "after concurrent calls: teacher")
    else:
        check_finite_model(enc, "after concurrent calls")
    return passed()


# ----------------------------------------------------------------------------- command line

ERROR_LINE = re.compile(r"^ace(?: [a-z]+)?: error: \S")


def check_cli(rc, stderr, command, folder=None):
    """The CLI property: exit 0; or a non-zero exit with an `ace CMD: error: ...` line and no
    Python traceback; never a signal; no temporary file left behind."""
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        tail = _crash_line(stderr)
        return failed("cli-crash", f"`ace {command}` died with {name}: {tail}", f"{command} {name} {_sig(tail)[:60]}")
    if "Traceback (most recent call last)" in stderr:
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1]
        return failed("cli-traceback", f"`ace {command}` exit {rc} with a traceback: {last}",
                      f"{command}: {_sig(last)[:80]}")
    if folder:
        left = [os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files
                if ".tmp" in f]
        if left:
            return failed("cli-tempfile", f"`ace {command}` (exit {rc}) left temporary files {left[:3]}",
                          f"{command} leaves a temporary file")
    if rc == 0:
        return passed()
    lines = stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if ERROR_LINE.match(line)]
    if not errors:
        tail = " | ".join(line for line in lines[-3:] if line.strip())
        return failed("cli-unclear", f"`ace {command}` exit {rc} without an `ace {command}: error:` line: {tail}",
                      f"{command} exit {rc}: {_sig(tail)[:60]}")
    if rc not in (1, 2):
        return failed("cli-exit", f"`ace {command}` exit {rc}: {lines[errors[-1]]}", f"{command} exit {rc}")
    rest = [line for line in lines[errors[-1] + 1:] if line.strip()]
    if rest:
        return noted("cli-multiline", f"`ace {command}` error message spans {1 + len(rest)} lines: "
                     f"{lines[errors[-1]][:150]} | {rest[0][:100]}", f"{command}: {_sig(lines[errors[-1]])[:60]}")
    return passed("refused", lines[errors[-1]][:300])


def _crash_line(stderr):
    for line in stderr.splitlines():
        if "Fatal error" in line or "fatal" in line.lower() or "Segmentation" in line:
            return line.strip()[:200]
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def cli_placeholder(token, ctx):
    """Files the command line arguments name; "@NAME" or "@NAME:arg" tokens."""
    folder = ctx.folder
    if not isinstance(token, str) or not token.startswith("@"):
        return token
    name, _, arg = token[1:].partition(":")
    if name == "ENC":
        p = os.path.join(folder, "enc.safetensors")
        shutil.copyfile(base_file("encoder"), p)
        return p
    if name == "RUN":                   # a training run with (or without, or with a damaged) run.json
        run = os.path.join(folder, "run")
        os.makedirs(run, exist_ok=True)
        p = os.path.join(run, "last.safetensors")
        shutil.copyfile(base_file("trainer"), p)
        text = {"ok": json.dumps({"seed": 0, "data": None, "steps": 3}), "missing": None}.get(arg, arg)
        if text is not None:
            with open(os.path.join(run, "run.json"), "w") as f:
                f.write(text)
        return p
    if name == "MUT":                   # a mutated checkpoint: arg indexes CLI_MUTATIONS
        p = os.path.join(folder, "mutated.safetensors")
        base, ops = CLI_MUTATIONS[int(arg) % len(CLI_MUTATIONS)]
        with open(p, "wb") as f:
            f.write(mutate_checkpoint(base_bytes(base), **ops))
        return p
    if name in ("IMAGES", "JUNK", "MIXED"):
        d = os.path.join(folder, name.lower())
        os.makedirs(d, exist_ok=True)
        if name in ("IMAGES", "MIXED"):
            for i, (fmt, mode) in enumerate([("png", "L"), ("png", "I;16"), ("tif", "F")]):
                with open(os.path.join(d, f"ok{i}.{fmt}"), "wb") as f:
                    f.write(base_image(fmt, mode, size=(40 + 3 * i, 36)))
        if name in ("JUNK", "MIXED"):
            for i, suffix in enumerate([".png", ".dcm", ".jpg"]):
                with open(os.path.join(d, f"bad{i}{suffix}"), "wb") as f:
                    f.write(image_bytes(("random", 50 + 40 * i, i)))
        return d
    if name == "EMPTY":
        d = os.path.join(folder, "empty")
        os.makedirs(d, exist_ok=True)
        return d
    if name == "LIST":                  # a .txt list of the given lines
        p = os.path.join(folder, "list.txt")
        with open(p, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(arg.replace("|", "\n"))
        return p
    if name == "CONFIGDEEP":
        name, arg = "CONFIG", "[" * 100_000
    if name == "CONFIG":
        p = os.path.join(folder, "config.json")
        with open(p, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(arg)
        return p
    if name == "JSRT":                  # a JSRT-layout folder with damaged parts
        return make_jsrt(folder, arg)
    if name == "OUT":
        return os.path.join(folder, "out")
    if name == "NPZ":
        return os.path.join(folder, "out.npz")
    if name == "DEEP":
        return os.path.join(folder, "a", "b", "out.npz")
    if name == "DIR":
        return folder
    if name == "MISSING":
        return os.path.join(folder, "missing")
    if name == "FILE":                  # an existing non-checkpoint file
        p = os.path.join(folder, "notes.txt")
        with open(p, "w") as f:
            f.write("not a checkpoint\n")
        return p
    return token


CLI_MUTATIONS = [
    ("encoder", dict(json_ops=[("wrap", 0)])),
    ("encoder", dict(json_ops=[("config", "config", "embed_dim", 96_000_000)])),
    ("encoder", dict(json_ops=[("config", "config", "depth", 10**7)])),
    ("trainer", dict(json_ops=[("config", "config", "head_prototypes", 10**12)])),
    ("trainer", dict(json_ops=[("meta", "step", "-5")])),
    ("encoder", dict(byte_ops=[("truncate", "data", 1000)])),
    ("encoder", dict(byte_ops=[("header_len", 2**63)])),
    ("encoder", dict(data_ops=[("set_float", 0, 0, float("nan"))], fix_crc=True)),
    ("trainer", dict(json_ops=[("alias", 3, 1)])),
    ("encoder", dict(byte_ops=[("flip", "data", 12345, 3)])),
]


def make_jsrt(folder, spec):
    """A JSRT-layout folder; spec names what is wrong with it: "ok" (2 images, masks,
    split), "split:<text>" (split.json content), "csv:<text>" (landmarks_dev.csv content),
    "nomask", "junkimage"."""
    root = os.path.join(folder, "jsrt")
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    from ace.data import datasets
    names = ["JPCLN001", "JPCNN002", "JPCNN003"]
    kind, _, arg = spec.partition(":")
    for i, n in enumerate(names):
        with open(os.path.join(root, "images", f"{n}.png"), "wb") as f:
            f.write(image_bytes(("random", 80, i)) if kind == "junkimage" and i == 0 else
                    base_image("png", "L", size=(32, 32)))
        if kind != "nomask":
            for s in datasets.STRUCTURES:
                os.makedirs(os.path.join(root, "masks", s), exist_ok=True)
                with open(os.path.join(root, "masks", s, f"{n}.png"), "wb") as f:
                    f.write(base_image("png", "1", size=(32, 32)))
    split = arg if kind == "split" else json.dumps({"train": names[:1], "val": names[1:2], "test": names[2:]})
    with open(os.path.join(root, "split.json"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(split)
    if kind == "csv":
        with open(os.path.join(root, "landmarks_dev.csv"), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(arg.replace("|", "\n"))
    return root


def op_cli(case, ctx):
    with preparing("command-line files"):
        args = [cli_placeholder(a, ctx) for a in case["args"]]
    env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    proc = subprocess.Popen([sys.executable, "-m", "ace", *args], cwd=ctx.folder, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=case.get("timeout", CLI_TIMEOUT))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return failed("cli-hang", f"`ace {args[0]}` did not finish in {case.get('timeout', CLI_TIMEOUT)} s",
                      f"{args[0]} timeout")
    stderr = err.decode("utf-8", "replace")
    return check_cli(proc.returncode, stderr, args[0], ctx.folder)


def op_phantom(case, ctx):
    """The procedural phantom (what training and evaluation use without data)."""
    from ace.data import phantom, phantom_set
    with preparing("inputs"):
        args = resolve(case.get("args", ()), ctx)
    fn = case["fn"]
    if fn == "generate":
        p = phantom.generate(*args)
        images = p.image[None]
    elif fn == "batch":
        images, _ = phantom.batch(*args)
    else:
        images = phantom_set(*args).images
    images = np.asarray(images)
    if images.size and (not np.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        return failed("bad-image", f"phantom.{fn} gave values outside [0, 1]", f"phantom.{fn} range")
    return passed()


OPS = {"phantom": op_phantom, "sanity": op_sanity, "encoder": op_encoder, "trainer": op_trainer, "grid_crops": op_grid_crops,
       "threads": op_threads, "probe": op_probe, "image": op_image, "load": op_load, "native": op_native,
       "cli": op_cli, "lifetime": op_lifetime, "concurrent": op_concurrent}


def run_case(case, folder):
    """The verdict of one case (never raises except for a crash of the process itself)."""
    os.makedirs(folder, exist_ok=True)
    ctx = Ctx(folder)
    try:
        verdict = OPS[case["op"]](case, ctx)
    except Finding as f:
        verdict = f.verdict
    except BaseException as exc:  # noqa: BLE001 - everything that escapes is judged
        if isinstance(exc, KeyboardInterrupt):
            raise
        if case["op"] == "native":
            verdict = passed("refused", f"{type(exc).__name__}: {exc}"[:300])
        elif case["op"] == "image":
            from ace.data import ImageReadError
            verdict = classify_exception(exc, (ImageReadError,))
        else:
            verdict = classify_exception(exc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return verdict or passed()


# =============================================================================== protocol

def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    head = _read_exact(fd, 8)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack("<Q", head)[0])
    return None if body is None else pickle.loads(body)


def write_frame(fd, obj):
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = struct.pack("<Q", len(body)) + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


def limit_memory():
    """Cap the address space so a runaway allocation fails here instead of exhausting the
    machine (ACE_FUZZ_MEMORY_GB, default 8; 0 = no cap)."""
    gb = float(os.environ.get("ACE_FUZZ_MEMORY_GB", "8"))
    if gb > 0:
        limit = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(fd_in, fd_out, work):
    global WORK
    WORK = work
    faulthandler.enable(all_threads=True)
    limit_memory()
    ace = ace_module()
    ace.set_num_threads(int(os.environ.get("ACE_FUZZ_THREADS", "2")))
    warm = os.environ.get("ACE_FUZZ_WARM", "1") == "1"
    if warm:
        base_file("encoder")
        base_file("trainer")
    write_frame(fd_out, {"ready": os.getpid()})
    import warnings
    warnings.simplefilter("ignore")
    n = 0
    while True:
        case = read_frame(fd_in)
        if case is None:
            return
        n += 1
        sys.stderr.write(f"--- case {n}: {case_summary(case)}\n")
        sys.stderr.flush()
        t0 = time.perf_counter()
        verdict = run_case(case, os.path.join(work, f"case-{os.getpid()}-{n}"))
        verdict["seconds"] = time.perf_counter() - t0
        verdict["rss_mb"] = rss_mb()
        write_frame(fd_out, verdict)


def rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def case_summary(case):
    text = repr(case)
    return text if len(text) < 400 else text[:400] + "..."


def replay(cases):
    """Run cases in this process, printing each verdict (a crash kills this process)."""
    global WORK
    WORK = tempfile.mkdtemp(prefix="ace-fuzz-replay-")
    faulthandler.enable(all_threads=True)
    for case in cases:
        print(case_summary(case), flush=True)
        print("  ->", run_case(case, os.path.join(WORK, "case")), flush=True)


def main(argv):
    if len(argv) >= 2 and argv[1] == "--replay":
        with open(argv[2], "rb") as f:
            saved = pickle.load(f)
        cases = [item["case"] if isinstance(item, dict) and "case" in item else item for item in saved]
        if len(argv) > 3:
            cases = [cases[int(argv[3])]]
        replay(cases)
        return 0
    if len(argv) >= 2 and argv[1] == "--case-b64":
        replay([pickle.loads(base64.b64decode(argv[2]))])
        return 0
    serve(int(argv[1]), int(argv[2]), argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
