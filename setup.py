"""Declares the native extensions built from ext/ (metadata lives in pyproject.toml)."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# ALLOCCOUNT_SANITIZE=address,undefined builds the engine with sanitizers (CI uses it).
sanitize = os.environ.get("ALLOCCOUNT_SANITIZE", "")
extra_compile = ["-O2", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
extra_link = []
if sanitize:
    extra_compile += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
    extra_link += [f"-fsanitize={sanitize}"]

extensions = [
    Extension(
        "alloccount._core",
        sources=["ext/_core.pyx", "ext/engine.c"],
        include_dirs=["ext"],
        depends=["ext/engine.h"],
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    ),
    # Test-only helpers (memray ships its test utilities the same way): exact allocation
    # loops in each domain, and nogil RAW loops on native threads.
    Extension(
        "alloccount._testing",
        sources=["ext/_testing.pyx"],
        include_dirs=["ext"],
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"binding": False, "boundscheck": False, "wraparound": False},
    )
)
