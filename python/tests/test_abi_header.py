"""include/ace.h is hand-written: it must declare exactly the functions the Swift ABI
exports, with the same number of parameters, and the built library must export them."""
import ctypes
import re
from pathlib import Path

import ace._native  # noqa: F401  (loads libace_core.so)

ROOT = Path(__file__).resolve().parents[2]


def swift_exports():
    """{name: parameter count} of every @_cdecl function in Sources/ACEC."""
    out = {}
    for path in (ROOT / "Sources" / "ACEC").glob("*.swift"):
        text = path.read_text()
        for m in re.finditer(r'@_cdecl\("(\w+)"\)\s*public func \w+\((.*?)\)\s*(->|\{)', text, re.S):
            params = m.group(2).strip()
            out[m.group(1)] = 0 if not params else params.count(":")
    return out


def header_declarations(names=("ace.h", "ace_testing.h")):
    """{name: parameter count} of the functions the public header and the tests' header declare."""
    text = "".join(re.sub(r"/\*.*?\*/", "", (ROOT / "include" / name).read_text(), flags=re.S) for name in names)
    out = {}
    for m in re.finditer(r"\b(ace_\w+)\s*\(([^)]*)\)\s*;", text):
        params = m.group(2).strip()
        out[m.group(1)] = 0 if params in ("", "void") else params.count(",") + 1
    return out


def test_header_matches_the_swift_exports():
    exports, declared = swift_exports(), header_declarations()
    assert len(exports) > 20
    assert exports == declared


def test_library_exports_every_declared_symbol():
    lib = ctypes.CDLL(str(Path(ace._native.__file__).with_name("libace_core.so")))
    for name in header_declarations():
        assert hasattr(lib, name), name


def test_test_entry_points_stay_out_of_the_public_header():
    public, testing = header_declarations(("ace.h",)), header_declarations(("ace_testing.h",))
    assert testing.keys() == {"ace_gemm", "ace_local_match_loss"} and not public.keys() & testing.keys()
