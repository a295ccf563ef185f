"""Builds the Swift core (release) and the CPython extension that links against it.

`pip install .` runs `swift build -c release --product ace_core`, compiles
csrc/_native.c against include/ace.h, and installs libace_core.so next to the extension
(found through an $ORIGIN rpath), so the installed package needs no Swift toolchain.
"""
import os
import shutil
import subprocess

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
CORE = "libace_core.so"


def replace_file(src, dst):
    """Copies src to dst by renaming a complete copy over it. Writing into the old file would
    kill every running process that has it mapped (SIGBUS), e.g. a pretraining run started
    from an in-place build."""
    tmp = f"{dst}.{os.getpid()}.tmp"
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class BuildWithSwift(build_ext):
    def copy_file(self, src, dst, *args, **kwargs):
        # The in-place copy of the extension (build_ext --inplace) goes through here.
        if os.path.isdir(dst):
            dst = os.path.join(dst, os.path.basename(src))
        replace_file(src, dst)
        return dst, 1

    def run(self):
        swift = ["swift", "build", "-c", "release", "--product", "ace_core", "--package-path", ROOT]
        subprocess.check_call(swift)
        bin_path = subprocess.check_output(swift[:4] + ["--show-bin-path", "--package-path", ROOT],
                                           text=True).strip()
        for ext in self.extensions:
            ext.library_dirs.append(bin_path)
        super().run()
        # The core library goes beside each built extension (and the in-place copy).
        for ext in self.extensions:
            target_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(target_dir, exist_ok=True)
            replace_file(os.path.join(bin_path, CORE), os.path.join(target_dir, CORE))


setup(
    ext_modules=[
        Extension(
            "ace._native",
            sources=["csrc/_native.c"],
            include_dirs=[os.path.join(ROOT, "include"), np.get_include()],
            libraries=["ace_core"],
            runtime_library_dirs=["$ORIGIN"],
            extra_compile_args=["-O2", "-Wall"],
        )
    ],
    cmdclass={"build_ext": BuildWithSwift},
)
